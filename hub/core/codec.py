"""JSON encoding and the three wire framings of a watch event.

- ``ndjson``: one event per line, for chunked HTTP.
- ``ws``: one event per WebSocket text frame (the same JSON, no newline).
- ``sse``: one Server-Sent Events record: ``id:``, ``event:`` and ``data:``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = [
    "FRAMINGS",
    "NDJSON",
    "SSE",
    "WS",
    "dumps",
    "frame",
    "frame_event",
    "loads",
]

NDJSON = "ndjson"
WS = "ws"
SSE = "sse"
FRAMINGS = (NDJSON, WS, SSE)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """
    Decode JSON.

    Raises:
        ValueError: ``data`` is not valid JSON, or holds an integer beyond 64 bits.
    """
    if isinstance(data, str):
        data = data.encode()
    value = orjson.loads(data)
    if _LONG_DIGITS.search(data):
        # orjson reads an integer beyond 64 bits as a float, silently losing
        # digits; the standard parser tells such a literal apart.
        json.loads(data, parse_int=_int64)
    return value


_LONG_DIGITS = re.compile(rb"\d{19}")
_INT64 = range(-(2**63), 2**64)


def _int64(literal: str) -> int:
    number = int(literal)
    if number not in _INT64:
        raise ValueError(f"integer {literal[:40]} is beyond 64 bits")
    return number


def frame(kind: str, object_json: bytes, framing: str, rv: int | str = "") -> bytes:
    """Frame an event of type ``kind`` whose object is already encoded."""
    body = b'{"type":"' + kind.encode() + b'","object":' + object_json + b"}"
    if framing == NDJSON:
        return body + b"\n"
    if framing == WS:
        return body
    if framing == SSE:
        head = b"id: " + str(rv).encode() + b"\n" if rv else b""
        return head + b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"
    raise ValueError(f"unknown framing {framing!r}")


def frame_event(
    kind: str, obj: dict[str, Any], framing: str, rv: int | str = ""
) -> bytes:
    """Frame an event whose object is not encoded yet (bookmarks, errors)."""
    return frame(kind, dumps(obj), framing, rv)
