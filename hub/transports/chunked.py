"""Watch events as NDJSON lines over chunked HTTP."""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11

from ..core.codec import NDJSON
from ..watch.stream import Item, WatchStream, encode
from .pump import hang_up, pump

__all__ = ["STREAM_HEADERS", "serve"]

#: Headers of every streamed response: no proxy may buffer or cache it.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def serve(
    request: web.Request, stream: WatchStream, *, write_timeout: float
) -> web.StreamResponse:
    """
    Send a watch as one JSON event per line, each line flushed as it happens.

    An HTTP/1.0 client, which cannot take chunks, gets the same lines on a
    response that ends by closing the connection.
    """
    response = web.StreamResponse(
        headers={"Content-Type": "application/json;stream=watch", **STREAM_HEADERS}
    )
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()
    await response.prepare(request)

    async def send(batch: list[Item]) -> None:
        await response.write(b"".join(encode(batch, NDJSON)))

    if await pump(stream, send, write_timeout=write_timeout):
        await response.write_eof()
    else:
        hang_up(request.transport, write_timeout)
    return response
