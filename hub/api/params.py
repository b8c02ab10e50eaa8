"""Parsing of the query parameters of lists and watches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import BadRequest
from ..core.selectors import FieldSelector, LabelSelector

__all__ = ["WatchParams", "flag", "is_watch"]

_TRUE = ("true", "1")
_FALSE = ("false", "0", "")


def flag(query: Mapping[str, str], key: str) -> bool | None:
    """
    Read a boolean parameter: ``true``/``1`` or ``false``/``0``, in any case.

    Returns ``None`` when the parameter is absent.

    Raises:
        BadRequest: the value is neither.
    """
    value = query.get(key)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise BadRequest(f"{key} must be true or false, not {value!r}")


def is_watch(query: Mapping[str, str]) -> bool:
    """Tell whether a list request asks for a watch (``watch=true`` or ``1``)."""
    return bool(flag(query, "watch"))


@dataclass(frozen=True, slots=True)
class WatchParams:
    """The parameters of one watch."""

    resource_version: str | None
    label_selector: LabelSelector
    field_selector: FieldSelector
    allow_bookmarks: bool
    send_initial_events: bool | None
    timeout: float | None

    @classmethod
    def parse(
        cls,
        query: Mapping[str, str],
        *,
        name: str | None = None,
        last_event_id: str | None = None,
    ) -> WatchParams:
        """
        Parse a watch's query; ``name`` comes from a watch-one path.

        Raises:
            BadRequest: a parameter is malformed.
        """
        fields = FieldSelector.parse(query.get("fieldSelector"))
        if name is not None:
            if fields.name is not None and (fields.negated or fields.name != name):
                raise BadRequest(
                    f"field selector {str(fields)!r} does not select the "
                    f"object {name!r} of the path"
                )
            fields = FieldSelector(name)
        timeout = None
        raw = query.get("timeoutSeconds")
        if raw is not None and raw != "":
            if not raw.isdecimal() or not raw.isascii() or len(raw) > 9:
                raise BadRequest(f"timeoutSeconds must be a whole number, not {raw!r}")
            # 0 asks for the server's own limit, as in Kubernetes.
            timeout = float(raw) or None
        resource_version = query.get("resourceVersion")
        if last_event_id:
            # An EventSource reconnects to the same URL with the id of the last
            # event it got: that, not the URL's version, is where it resumes.
            resource_version = last_event_id
        return cls(
            resource_version=resource_version,
            label_selector=LabelSelector.parse(query.get("labelSelector")),
            field_selector=fields,
            allow_bookmarks=bool(flag(query, "allowWatchBookmarks")),
            send_initial_events=flag(query, "sendInitialEvents"),
            timeout=timeout,
        )
