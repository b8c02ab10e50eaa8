"""Clients of the watch hub: an async REST and watch client, and stream decoders.

::

    async with Client("http://127.0.0.1:8080") as client:
        await client.create("pods", {"metadata": {"name": "web"}})
        async with await client.watch("pods", resource_version="0") as watcher:
            async for event in watcher:
                print(event.type, event.name, event.resource_version)

The watcher type is the hub's own :class:`~hub.core.watcher.StreamWatcher`, the
same one the embedded hub hands out. Logs go to the ``watchhub.client`` logger.
"""

from __future__ import annotations

from hub.core.events import Event, EventType
from hub.core.watcher import Decoder, StreamWatcher, Watcher

from .client import Client, Transport
from .decoders import (
    MAX_EVENT_SIZE,
    NDJSONDecoder,
    NDJSONParser,
    SSEDecoder,
    SSEParser,
    WebSocketDecoder,
    parse_event,
)
from .errors import (
    ApiError,
    ClientError,
    DecodeError,
    TransportError,
    status_from_response,
)

__all__ = [
    "MAX_EVENT_SIZE",
    "ApiError",
    "Client",
    "ClientError",
    "DecodeError",
    "Decoder",
    "Event",
    "EventType",
    "NDJSONDecoder",
    "NDJSONParser",
    "SSEDecoder",
    "SSEParser",
    "StreamWatcher",
    "Transport",
    "TransportError",
    "WebSocketDecoder",
    "Watcher",
    "parse_event",
    "status_from_response",
]
