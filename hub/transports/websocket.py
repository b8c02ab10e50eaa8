"""Watch events over WebSocket: one event per text frame.

The hub pings its peers and drops one that stops answering. A watch that ends
normally (timeout, or the ERROR event of a 410) closes with 1000; a hub that
shuts down closes with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from ..core.codec import WS
from ..core.errors import Forbidden
from ..watch.stream import Item, WatchStream, encode
from .pump import hang_up, pump

__all__ = ["check_origin", "is_websocket", "serve"]

logger = logging.getLogger("watchhub.http")


def is_websocket(request: web.Request) -> bool:
    """
    Tell whether the request asks for a WebSocket upgrade.

    Only the headers are looked at; the handshake itself is checked when the
    socket is prepared, and a bad one is answered 400.
    """
    upgrade = request.headers.get("Upgrade", "").lower()
    connection = request.headers.get("Connection", "").lower()
    return upgrade == "websocket" and "upgrade" in connection


def check_origin(request: web.Request, allowed: Iterable[str]) -> None:
    """
    Refuse a cross-site WebSocket handshake.

    A handshake without ``Origin`` comes from a program, not a browser, and is
    accepted. One with an ``Origin`` is accepted from the hub's own origin or
    from one in ``allowed`` (``*`` allows every origin).

    Raises:
        Forbidden: the origin is not allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = set(allowed)
    if "*" in allowed or origin in allowed:
        return
    parts = urlsplit(origin)
    own = {f"http://{request.host}", f"https://{request.host}"}
    if f"{parts.scheme}://{parts.netloc}" in own:
        return
    raise Forbidden(f"websocket origin {origin!r} is not allowed")


async def serve(
    request: web.Request,
    stream: WatchStream,
    *,
    heartbeat: float,
    max_msg_size: int,
    sockets: set[web.WebSocketResponse],
    write_timeout: float,
) -> web.WebSocketResponse:
    """Send a watch over a WebSocket, one event per text frame."""
    # No permessage-deflate: compressing would cost a compressor per peer and
    # a compression per event per watcher, where every watcher now gets the
    # same bytes, encoded once.
    ws = web.WebSocketResponse(
        heartbeat=heartbeat, max_msg_size=max_msg_size, compress=False
    )
    await ws.prepare(request)
    sockets.add(ws)
    reader = asyncio.create_task(_read(ws, stream))

    async def send(batch: list[Item]) -> None:
        for frame in encode(batch, WS):
            await ws.send_frame(frame, WSMsgType.TEXT)

    try:
        if not await pump(stream, send, write_timeout=write_timeout):
            hang_up(request.transport, write_timeout)
        elif not ws.closed:
            await ws.close(code=WSCloseCode.OK)
    except ConnectionError:
        logger.debug("websocket peer went away", extra={"watch_id": stream.id})
    finally:
        sockets.discard(ws)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def _read(ws: web.WebSocketResponse, stream: WatchStream) -> None:
    # Reading is what answers pings and notices a close or a dead peer; what a
    # client sends is otherwise ignored.
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            break
    stream.stop()
