"""Clients of the watch hub: async and sync clients, an informer, stream decoders.

::

    async with Client("http://127.0.0.1:8080") as client:
        await client.create("pods", {"metadata": {"name": "web"}})
        async with await client.watch("pods", resource_version="0") as watcher:
            async for event in watcher:
                print(event.type, event.name, event.resource_version)

The watcher type is the hub's own :class:`~hub.core.watcher.StreamWatcher`, the
same one the embedded hub hands out. :class:`SyncClient` offers the same
operations to programs without an event loop, and :class:`Informer` keeps a
local cache of a collection right across breaks (see docs/clients.md). Logs go
to the ``watchhub.client`` logger.
"""

from __future__ import annotations

from hub.core.events import Event, EventType
from hub.core.watcher import Decoder, StreamWatcher, Watcher

from .backoff import Backoff
from .client import Client, Transport
from .decoders import (
    MAX_EVENT_SIZE,
    NDJSONDecoder,
    NDJSONParser,
    SSEDecoder,
    SSEParser,
    WebSocketDecoder,
    parse_event,
    websocket_closed_error,
)
from .errors import (
    ApiError,
    ClientError,
    DecodeError,
    TransportError,
    status_from_response,
)
from .informer import Informer, InformerStatistics
from .sync import SyncClient, SyncWatcher

__all__ = [
    "MAX_EVENT_SIZE",
    "ApiError",
    "Backoff",
    "Client",
    "ClientError",
    "DecodeError",
    "Decoder",
    "Event",
    "EventType",
    "Informer",
    "InformerStatistics",
    "NDJSONDecoder",
    "NDJSONParser",
    "SSEDecoder",
    "SSEParser",
    "StreamWatcher",
    "SyncClient",
    "SyncWatcher",
    "Transport",
    "TransportError",
    "WebSocketDecoder",
    "Watcher",
    "parse_event",
    "status_from_response",
    "websocket_closed_error",
]
