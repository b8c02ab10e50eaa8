"""Watch events and the committed changes they are made from."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from . import codec

__all__ = ["Change", "Event", "EventType"]


class EventType(enum.StrEnum):
    """The type of a watch event, as it appears on the wire."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Event:
    """
    One watch event: ``{"type": T, "object": O}``.

    For ADDED, MODIFIED and DELETED the object is the resource; for BOOKMARK an
    object that carries only ``metadata.resourceVersion``; for ERROR a ``Status``.
    """

    type: EventType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        """The object's resourceVersion, or "" where it has none (ERROR)."""
        metadata = self.object.get("metadata")
        if isinstance(metadata, dict):
            return str(metadata.get("resourceVersion", ""))
        return ""

    @property
    def name(self) -> str:
        """The object's name, or "" where it has none."""
        metadata = self.object.get("metadata")
        if isinstance(metadata, dict):
            return str(metadata.get("name", ""))
        return ""

    def to_dict(self) -> dict[str, Any]:
        """Return the event as it is sent: ``{"type": ..., "object": ...}``."""
        return {"type": self.type.value, "object": self.object}

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        """
        Parse a decoded event.

        Raises:
            ValueError: ``data`` is not an event of a known type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"event is a {type(data).__name__}, not an object")
        try:
            kind = EventType(data.get("type"))
        except ValueError:
            raise ValueError(f"unknown event type {data.get('type')!r}") from None
        obj = data.get("object")
        if not isinstance(obj, dict):
            raise ValueError("event has no object")
        return cls(kind, obj)

    def __str__(self) -> str:
        rv = self.resource_version
        return f"{self.type.value} {self.name or '-'} rv={rv or '-'}"


@dataclass(slots=True, eq=False)
class Change:
    """
    One committed write, as the store hands it to the event log.

    ``prev_labels`` are the object's labels before the write (``None`` for a
    create), so that a watcher with a label selector can tell an object that
    starts or stops matching. The object's JSON is encoded once, lazily, and
    each wire frame built from it is cached, so that every watcher receiving
    this change is sent the same bytes. ``created_at`` is the monotonic clock
    when the store made the change inside its write, for latency metrics.
    """

    resource_version: int
    collection: str
    name: str
    type: EventType
    object: dict[str, Any]
    prev_labels: dict[str, str] | None = None
    _object_json: bytes | None = field(default=None, repr=False)
    _frames: dict[tuple[EventType, str], bytes] = field(
        default_factory=dict, repr=False
    )
    created_at: float = field(default_factory=time.monotonic, repr=False)

    @property
    def labels(self) -> dict[str, str]:
        """The object's labels after the write."""
        labels = self.object.get("metadata", {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    @property
    def object_json(self) -> bytes:
        """The object, encoded once."""
        if self._object_json is None:
            self._object_json = codec.dumps(self.object)
        return self._object_json

    def frame(self, kind: EventType, framing: str) -> bytes:
        """Return this change as an event of ``kind``, framed for ``framing``."""
        key = (kind, framing)
        data = self._frames.get(key)
        if data is None:
            data = codec.frame(
                kind.value, self.object_json, framing, self.resource_version
            )
            self._frames[key] = data
        return data

    def event(self, kind: EventType | None = None) -> Event:
        """Return this change as an :class:`Event`, of its own type by default."""
        return Event(kind or self.type, self.object)
