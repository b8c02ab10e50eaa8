"""Watch events as Server-Sent Events.

Each event is one record: ``id:`` the resourceVersion, ``event:`` the type and
``data:`` the same JSON event as a chunked line. A client that reconnects with
``Last-Event-ID`` resumes like one that passes ``resourceVersion``. A comment
line is sent on an idle stream so that proxies and browsers keep it open.
"""

from __future__ import annotations

from aiohttp import web

from ..core.codec import SSE
from ..watch.stream import Item, WatchStream, encode
from .chunked import STREAM_HEADERS
from .pump import hang_up, pump

__all__ = ["KEEPALIVE", "serve", "wants_sse"]

#: The comment line sent on an idle stream.
KEEPALIVE = b": keep-alive\n\n"


def wants_sse(request: web.Request) -> bool:
    """Tell whether the request asks for Server-Sent Events."""
    return "text/event-stream" in request.headers.get("Accept", "")


async def serve(
    request: web.Request,
    stream: WatchStream,
    *,
    write_timeout: float,
    keepalive: float = 15.0,
) -> web.StreamResponse:
    """Send a watch as Server-Sent Events, with a comment on idle streams."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", **STREAM_HEADERS}
    )
    await response.prepare(request)
    # Ask the browser to wait a second before it reconnects on its own.
    await response.write(b"retry: 1000\n\n")

    async def send(batch: list[Item]) -> None:
        await response.write(b"".join(encode(batch, SSE)))

    async def keep_alive() -> None:
        await response.write(KEEPALIVE)

    if await pump(
        stream, send, write_timeout=write_timeout, idle=keepalive, on_idle=keep_alive
    ):
        await response.write_eof()
    else:
        hang_up(request.transport, write_timeout)
    return response
