"""Log records with context: the request id, text or JSON output for ``serve``.

The hub's code logs to the subsystem loggers (``watchhub.http``,
``watchhub.watch``, ``watchhub.store``) with context passed as ``extra``
fields, and never configures handlers. :func:`configure` is what
``watchhub serve`` calls to print those records, either as readable text with
the extra fields as ``key=value`` pairs, or as one JSON object per line.

The HTTP API sets :data:`request_id` for the duration of each request;
:class:`RequestIdFilter` copies it onto every record logged meanwhile.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "FORMATS",
    "RequestIdFilter",
    "TextFormatter",
    "configure",
    "extra_fields",
    "request_id",
]

#: The id of the HTTP request being handled, or ``None`` outside of one.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "watchhub_request_id", default=None
)

#: The names ``--log-format`` takes.
FORMATS = ("text", "json")

# Attributes that every record has; anything else on a record came as ``extra``.
_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields a record was given as ``extra``, in the order given."""
    return {
        key: value for key, value in record.__dict__.items() if key not in _STANDARD
    }


class RequestIdFilter(logging.Filter):
    """Put the current request's id on each record, as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class TextFormatter(logging.Formatter):
    """
    One readable line per record: time, level, logger, message, then extras.

    Example: ``2025-01-02 10:00:00,123 INFO watchhub.http: listening
    address=127.0.0.1:8080``.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = extra_fields(record)
        if not extras:
            return text
        pairs = " ".join(f"{key}={value}" for key, value in extras.items())
        head, newline, rest = text.partition("\n")
        # The pairs stay on the first line, before any traceback.
        return f"{head} {pairs}{newline}{rest}"


def json_formatter() -> logging.Formatter:
    """
    Return the formatter of ``--log-format json``.

    Each record is one JSON object: ``time`` (RFC 3339, UTC), ``level``,
    ``logger``, ``message``, every ``extra`` field, and ``exc_info`` with the
    traceback where there is one.
    """
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        json_ensure_ascii=False,
    )


def configure(
    level: str = "info", fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """
    Send the ``watchhub`` and ``aiohttp`` loggers' records to ``stream``.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``text`` or ``json`` (see :data:`FORMATS`).
        stream: Where to write; standard error by default.

    Returns:
        The handler installed on the root logger.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
