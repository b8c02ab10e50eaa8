"""The aiohttp application: REST and watch routes, Status errors, limits.

The API holds no state of its own: it calls the :class:`~hub.hub.Hub` and
hands each watch to one of the transports.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from ..core import codec
from ..core.errors import (
    BadRequest,
    HubError,
    InternalError,
    Invalid,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from ..core.events import Change
from ..hub import Collection, Hub
from ..transports import chunked, sse, websocket
from . import monitoring, page, security
from .params import WatchParams, is_watch

__all__ = ["HUB_KEY", "ServerConfig", "create_app", "status_response"]

logger = logging.getLogger("watchhub.http")

MiB = 1024 * 1024

HUB_KEY = web.AppKey("hub", Hub)
_CONFIG = web.AppKey("config", "ServerConfig")
_SOCKETS = web.AppKey("websockets", weakref.WeakSet)

MERGE_PATCH = "application/merge-patch+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServerConfig:
    """
    The HTTP side's tunables.

    Attributes:
        max_body_size: The largest request body, in bytes.
        ws_heartbeat: Seconds between the hub's WebSocket pings; a peer that
            does not answer is dropped after about one and a half times that.
        ws_max_message: The largest WebSocket message the hub reads.
        sse_keepalive: Seconds of silence after which an SSE stream gets a comment.
        allowed_origins: Origins, besides the hub's own, that may open WebSockets.
        write_timeout: Seconds one write to a watcher may take; a watcher whose
            connection takes nothing for that long is ended as too slow.
        token_file: Bearer tokens, ``token,user,uid,"group1,group2"`` per line.
        jwt_key_file: A JWT key: an HS256 secret, or an RS256 PEM public key.
        jwt_audience: The audience a JWT must name.
        jwt_issuer: The issuer a JWT must name, if set.
        anonymous: Serve requests without credentials when tokens or JWTs are
            configured (with neither, every request is served).
        rules_file: Authorization rules (JSON); without it, every caller may
            do everything.
        max_watchers: Watches open at once, in all.
        max_watchers_per_client: Watches open at once per user (or per peer
            address, for anonymous callers).
        max_objects_per_collection: Objects one collection may hold.
        write_rate: Writes per second per client (0: unlimited).
        write_burst: Writes a client may make at once before ``write_rate`` holds.
        header_timeout: Seconds a connection may take to send a complete
            request head, from its start or from the end of its last request.
        body_timeout: Seconds a request body may take to arrive.
        See docs/security.md.
    """

    max_body_size: int = 4 * MiB
    ws_heartbeat: float = 20.0
    ws_max_message: int = 1 * MiB
    sse_keepalive: float = 15.0
    allowed_origins: list[str] = field(default_factory=list)
    write_timeout: float = 10.0
    token_file: str | None = None
    jwt_key_file: str | None = None
    jwt_audience: str = "watchhub"
    jwt_issuer: str | None = None
    anonymous: bool = False
    rules_file: str | None = None
    max_watchers: int = 10_000
    max_watchers_per_client: int = 1_000
    max_objects_per_collection: int = 100_000
    write_rate: float = 1_000.0
    write_burst: int = 2_000
    header_timeout: float = 15.0
    body_timeout: float = 30.0


def create_app(hub: Hub, config: ServerConfig | None = None) -> web.Application:
    """
    Make the aiohttp application that serves ``hub``.

    The application starts the hub on start-up, ends every watch on shutdown
    (WebSockets close with 1001) and closes the hub on cleanup.
    """
    config = config or ServerConfig()
    # aiohttp's own limit is set above ours, so that ours answers with a Status.
    app = web.Application(
        middlewares=[_status_errors], client_max_size=config.max_body_size + 1
    )
    app[HUB_KEY] = hub
    app[_CONFIG] = config
    app[_SOCKETS] = weakref.WeakSet()
    security.install(app, hub, config)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/v1/watch/{collection}", _watch_collection)
    app.router.add_get("/api/v1/watch/{collection}/{name}", _watch_object)
    app.router.add_get("/api/v1/{collection}", _list)
    app.router.add_post("/api/v1/{collection}", _create)
    app.router.add_get("/api/v1/{collection}/{name}", _get)
    app.router.add_put("/api/v1/{collection}/{name}", _replace)
    app.router.add_patch("/api/v1/{collection}/{name}", _patch)
    app.router.add_delete("/api/v1/{collection}/{name}", _delete)
    page.setup(app, hub)
    monitoring.setup(app, hub)
    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


# Lifecycle


async def _start(app: web.Application) -> None:
    await app[HUB_KEY].start()


async def _shutdown(app: web.Application) -> None:
    hub = app[HUB_KEY]
    logger.info("ending open watches", extra={"watchers": hub.watchers})
    hub.stop_watches()
    for ws in list(app[_SOCKETS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"hub shutting down")


async def _cleanup(app: web.Application) -> None:
    await app[HUB_KEY].close()


# Errors


def status_response(error: HubError) -> web.Response:
    """Return the ``Status`` response for ``error``."""
    return web.Response(
        status=error.code,
        body=codec.dumps(error.to_status()),
        content_type="application/json",
    )


_HTTP_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
}


@web.middleware
async def _status_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubError as error:
        return status_response(error)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_CONFIG].max_body_size
        return status_response(
            RequestEntityTooLarge(f"request body is above the limit of {limit} bytes")
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason.lower()
        if exc.status == 404:
            message = "the server could not find the requested resource"
        error = HubError(message)
        error.code = exc.status
        error.reason = _HTTP_REASONS.get(exc.status, "BadRequest")
        response = status_response(error)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception(
            "request failed", extra={"method": request.method, "path": request.path}
        )
        return status_response(InternalError("an internal error occurred"))


# Helpers


def _collection(request: web.Request) -> Collection:
    return request.app[HUB_KEY].collection(request.match_info["collection"])


def _object_response(change: Change, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=change.object_json, content_type="application/json"
    )


async def _body(request: web.Request, collection: str) -> Any:
    limit = request.app[_CONFIG].max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(
            f"request body of {request.content_length} bytes is above the limit "
            f"of {limit}",
            kind=collection,
        )
    data = await request.read()
    if not data.strip():
        raise Invalid(
            "request body is empty; a JSON object is required", kind=collection
        )
    try:
        return codec.loads(data)
    except ValueError as error:
        raise Invalid(
            f"request body is not valid JSON: {error}", kind=collection
        ) from None


# Routes


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _list(request: web.Request) -> web.StreamResponse:
    if is_watch(request.query):
        return await _watch(request, None)
    collection = _collection(request)
    # A list is served at a version at least as new as the one asked for.
    await collection.hub.wait_for_version(
        request.query.get("resourceVersion"), collection.name
    )
    changes, rv = collection.list_changes(
        request.query.get("labelSelector"), request.query.get("fieldSelector")
    )
    head = b'{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"%d"},' % rv
    body = head + b'"items":[' + b",".join(c.object_json for c in changes) + b"]}"
    return web.Response(body=body, content_type="application/json")


async def _get(request: web.Request) -> web.Response:
    if is_watch(request.query):
        raise BadRequest("watch an object at /api/v1/watch/{collection}/{name}")
    change = _collection(request).get_change(request.match_info["name"])
    return _object_response(change)


async def _create(request: web.Request) -> web.Response:
    collection = _collection(request)
    body = await _body(request, collection.name)
    return _object_response(await collection.create_change(body), 201)


async def _replace(request: web.Request) -> web.Response:
    collection = _collection(request)
    name = request.match_info["name"]
    collection.get_change(name)  # 404 before a body is judged, as Kubernetes does
    body = await _body(request, collection.name)
    return _object_response(await collection.replace_change(name, body))


async def _patch(request: web.Request) -> web.Response:
    collection = _collection(request)
    name = request.match_info["name"]
    if request.content_type != MERGE_PATCH:
        raise UnsupportedMediaType(
            f"patch content type {request.content_type!r} is not supported; "
            f"use {MERGE_PATCH}",
            name=name,
            kind=collection.name,
        )
    collection.get_change(name)
    body = await _body(request, collection.name)
    return _object_response(await collection.patch_change(name, body))


async def _delete(request: web.Request) -> web.Response:
    collection = _collection(request)
    change = await collection.delete_change(
        request.match_info["name"], request.query.get("resourceVersion")
    )
    return _object_response(change)


async def _watch_collection(request: web.Request) -> web.StreamResponse:
    return await _watch(request, None)


async def _watch_object(request: web.Request) -> web.StreamResponse:
    return await _watch(request, request.match_info["name"])


async def _watch(request: web.Request, name: str | None) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    config = request.app[_CONFIG]
    collection = _collection(request).name
    upgrade = websocket.is_websocket(request)
    event_stream = not upgrade and sse.wants_sse(request)
    if upgrade:
        websocket.check_origin(request, config.allowed_origins)
    params = WatchParams.parse(
        request.query,
        name=name,
        last_event_id=request.headers.get("Last-Event-ID") if event_stream else None,
    )
    stream = await hub.open_stream(
        collection,
        resource_version=params.resource_version,
        label_selector=params.label_selector,
        field_selector=params.field_selector,
        allow_bookmarks=params.allow_bookmarks,
        send_initial_events=params.send_initial_events,
        timeout=params.timeout,
    )
    stream.transport = "websocket" if upgrade else "sse" if event_stream else "chunked"
    try:
        if upgrade:
            return await websocket.serve(
                request,
                stream,
                heartbeat=config.ws_heartbeat,
                max_msg_size=config.ws_max_message,
                sockets=request.app[_SOCKETS],
                write_timeout=config.write_timeout,
            )
        if event_stream:
            return await sse.serve(
                request,
                stream,
                write_timeout=config.write_timeout,
                keepalive=config.sse_keepalive,
            )
        return await chunked.serve(request, stream, write_timeout=config.write_timeout)
    except ConnectionError:
        # The client went away mid-stream; nothing is left to answer.
        logger.debug("watch client went away", extra={"watch_id": stream.id})
        raise
    finally:
        hub.close_stream(stream)
