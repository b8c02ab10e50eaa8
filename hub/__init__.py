"""watchhub: keep JSON resources in collections and stream every change.

The hub embeds in a Python program (:class:`Hub`), serves HTTP, WebSocket and
Server-Sent Events watches (``watchhub serve``), and shares its types with the
client package ``clients``.
"""

from __future__ import annotations

from .core.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    HubError,
    InternalError,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
    StoreUnavailable,
    Timeout,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from .core.events import Event, EventType
from .core.selectors import FieldSelector, LabelSelector
from .core.watcher import Decoder, ResourceWatcher, StreamWatcher, Watcher
from .hub import Collection, Hub, HubConfig
from .store import MemoryStore, Store, open_store

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Collection",
    "Conflict",
    "Decoder",
    "Event",
    "EventType",
    "Expired",
    "FieldSelector",
    "Forbidden",
    "Gone",
    "Hub",
    "HubConfig",
    "HubError",
    "InternalError",
    "Invalid",
    "LabelSelector",
    "MemoryStore",
    "NotFound",
    "RequestEntityTooLarge",
    "ResourceWatcher",
    "Store",
    "StoreUnavailable",
    "StreamWatcher",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "Watcher",
    "open_store",
]

__version__ = "0.1.0"
