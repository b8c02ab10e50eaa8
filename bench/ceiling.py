"""The ceiling: the least an aiohttp program can do to fan writes out to watchers.

It keeps no state and parses nothing: each write's body is framed once as an
event line, and the same bytes are written to every open chunked response, one
write per event per watcher. What it reaches is what the stack (Python, the
event loop, aiohttp's HTTP layer) allows at best for that delivery pattern.

It answers the hub's URLs that the harness uses::

    GET  /api/v1/watch/{collection}          every write to the collection
    GET  /api/v1/watch/{collection}/{name}   the writes of one name
    PUT  /api/v1/{collection}/{name}         broadcast, then answer with the body
    POST /api/v1/{collection}                the same, as ADDED

Run it with ``python -m bench.ceiling --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource

from aiohttp import web

__all__ = ["create_app", "main"]

_WATCHERS = web.AppKey("watchers", dict)
_HEADERS = {
    "Content-Type": "application/json;stream=watch",
    "Cache-Control": "no-cache",
}


async def _watch(request: web.Request) -> web.StreamResponse:
    key = (request.match_info["collection"], request.match_info.get("name"))
    response = web.StreamResponse(headers=_HEADERS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    watchers = request.app[_WATCHERS].setdefault(key, set())
    watchers.add(response)
    try:
        # The handler is cancelled when the client goes away.
        await asyncio.get_running_loop().create_future()
    finally:
        watchers.discard(response)
    return response


async def _broadcast(request: web.Request, name: str, kind: bytes) -> web.Response:
    body = await request.read()
    frame = b'{"type":"' + kind + b'","object":' + body + b"}\n"
    collection = request.match_info["collection"]
    registry = request.app[_WATCHERS]
    for key in ((collection, None), (collection, name)):
        for response in tuple(registry.get(key, ())):
            with contextlib.suppress(ConnectionError):
                await response.write(frame)
    return web.Response(body=body, content_type="application/json")


async def _put(request: web.Request) -> web.Response:
    return await _broadcast(request, request.match_info["name"], b"MODIFIED")


async def _post(request: web.Request) -> web.Response:
    return await _broadcast(request, "", b"ADDED")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    """Return the ceiling program's application."""
    app = web.Application()
    app[_WATCHERS] = {}
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/v1/watch/{collection}", _watch)
    app.router.add_get("/api/v1/watch/{collection}/{name}", _watch)
    app.router.add_put("/api/v1/{collection}/{name}", _put)
    app.router.add_post("/api/v1/{collection}", _post)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the ceiling program until killed."""
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # the hub runs without uvloop too; so does its ceiling
        asyncio.run(_serve(args.host, args.port))
    else:
        uvloop.run(_serve(args.host, args.port))


async def _serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
