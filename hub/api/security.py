"""The API's guard: origins and CORS, authentication, authorization and limits.

One middleware checks every request in this order, and the first check that
fails answers with its ``Status``:

1. ``Origin``: a request from a browser page of another origin than the
   hub's own or an allowed one is refused with 403; a CORS preflight from an
   allowed origin is answered here.
2. Authentication (401), except for ``/healthz``.
3. Authorization of the collection and verb (403).
4. Limits (429): watches in all and per client, writes per second per
   client, objects per collection.

Request and object sizes are checked where the body is read (413).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from ..core import codec
from ..core.errors import BadRequest, Forbidden, Timeout, TooManyRequests
from ..hub import Hub
from .auth import (
    Authenticator,
    Identity,
    JWTVerifier,
    Rules,
    load_token_file,
    request_action,
)
from .limits import RateLimiter, WatcherSlots
from .openapi import openapi_document

if TYPE_CHECKING:
    from .app import ServerConfig

__all__ = [
    "GUARD_KEY",
    "IDENTITY_KEY",
    "Guard",
    "check_config",
    "identity_of",
    "install",
]

#: Paths that answer without credentials: probes carry none, and the live
#: page's shell holds no data (its script calls the API with a token).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
PUBLIC_PREFIXES = ("/static/",)

_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
_CORS_HEADERS = "Authorization, Content-Type, Accept, Last-Event-ID"
_CORS_EXPOSED = "Retry-After, WWW-Authenticate"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Where a request keeps its caller.
IDENTITY_KEY = web.RequestKey("identity", Identity)


class Guard:
    """
    The checks of every request, with the state of the limits.

    Attributes:
        auth: How callers are authenticated.
        rules: The authorization rules; ``None`` lets every caller do everything.
        watchers: The open watches, in all and per client.
        writes: The write rate per client; ``None`` when unlimited.
    """

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        tokens = load_token_file(config.token_file) if config.token_file else {}
        jwt = None
        if config.jwt_key_file:
            jwt = JWTVerifier.from_file(
                config.jwt_key_file, config.jwt_audience, config.jwt_issuer
            )
        self.hub = hub
        self.config = config
        self.auth = Authenticator(tokens, jwt, anonymous=config.anonymous)
        self.rules = Rules.load(config.rules_file) if config.rules_file else None
        self.watchers = WatcherSlots(
            config.max_watchers, config.max_watchers_per_client
        )
        self.writes = (
            RateLimiter(config.write_rate, config.write_burst)
            if config.write_rate > 0
            else None
        )
        self._creating: dict[str, int] = {}

    def describe_rules(self) -> str:
        """Say in a few words how requests are authorized, for the start-up log."""
        if self.rules is None:
            return "none: every caller may do everything"
        return f"{len(self.rules.rules)} rules from {self.config.rules_file}"

    # Origins

    def origin_allowed(self, request: web.BaseRequest, origin: str) -> bool:
        """Tell whether a page of ``origin`` may call the hub."""
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        parts = urlsplit(origin)
        return f"{parts.scheme}://{parts.netloc}" in (
            f"http://{request.host}",
            f"https://{request.host}",
        )

    def _preflight(self, origin: str) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    async def on_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """Add the CORS and ``WWW-Authenticate`` headers before a response starts."""
        if response.status == 401 and self.auth.enabled:
            response.headers["WWW-Authenticate"] = 'Bearer realm="watchhub"'
        origin = request.headers.get("Origin")
        if origin is not None and self.origin_allowed(request, origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
            response.headers.add("Vary", "Origin")

    # The checks

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Check a request's origin, caller, permission and limits, then serve it."""
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(request, origin):
            raise Forbidden(f"origin {origin!r} is not allowed")
        if (
            request.method == "OPTIONS"
            and origin is not None
            and "Access-Control-Request-Method" in request.headers
        ):
            return self._preflight(origin)
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)

        # A malformed watch parameter is reported after authentication, so that
        # a caller without credentials learns nothing but 401.
        malformed: BadRequest | None = None
        try:
            action = request_action(request)
        except BadRequest as error:
            action, malformed = None, error
        watch = action is not None and action[1] == "watch"
        identity = self.auth.authenticate(request, allow_query=watch)
        request[IDENTITY_KEY] = identity
        if malformed is not None:
            raise malformed
        if action is None:
            return await handler(request)

        collection, verb = action
        if self.rules is not None and not self.rules.allows(identity, collection, verb):
            raise Forbidden(
                f'user "{identity.user}" cannot {verb} collection "{collection}"',
                kind=collection,
            )
        client = (
            identity.user if identity.authenticated else f"address:{request.remote}"
        )
        if watch:
            return await self._watch(request, handler, client)
        if verb in ("create", "update", "delete") and self.writes is not None:
            wait = self.writes.take(client)
            if wait:
                return _too_many(
                    f"more than {self.config.write_rate:g} writes per second from "
                    f"this client; retry after {wait:.3f} s",
                    wait,
                )
        if verb in ("create", "update"):
            await self._read_body(request, collection)
        if verb == "create":
            return await self._create(request, handler, collection)
        return await handler(request)

    async def _read_body(self, request: web.Request, collection: str) -> None:
        # A body that trickles in would hold a handler for ever: it is read here,
        # against a deadline, and the handler then finds it read already.
        try:
            async with asyncio.timeout(self.config.body_timeout):
                await request.read()
        except TimeoutError:
            error = Timeout(
                f"request body did not arrive in {self.config.body_timeout:g} s",
                kind=collection,
            )
            error.code = 408
            raise error from None

    async def _watch(
        self, request: web.Request, handler: Handler, client: str
    ) -> web.StreamResponse:
        self.watchers.acquire(client)
        try:
            return await handler(request)
        finally:
            self.watchers.release(client)

    async def _create(
        self, request: web.Request, handler: Handler, collection: str
    ) -> web.StreamResponse:
        # Creates in flight count too, so that concurrent ones cannot pass the
        # limit together; a create that then fails made its refusals early.
        limit = self.config.max_objects_per_collection
        name = self.hub.collection(collection).name  # Invalid for a bad name
        held = len(self.hub.log.collection(name).state)
        in_flight = self._creating.get(collection, 0)
        if held + in_flight >= limit:
            raise TooManyRequests(
                f"collection {collection} holds {held} objects, its limit; "
                "delete some before creating more",
                kind=collection,
            )
        self._creating[collection] = in_flight + 1
        try:
            return await handler(request)
        finally:
            remaining = self._creating[collection] - 1
            if remaining:
                self._creating[collection] = remaining
            else:
                del self._creating[collection]


def _too_many(message: str, wait: float) -> web.Response:
    return web.Response(
        status=429,
        body=codec.dumps(TooManyRequests(message).to_status()),
        content_type="application/json",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=codec.dumps(openapi_document()), content_type="application/json"
    )


GUARD_KEY = web.AppKey("guard", Guard)


def install(app: web.Application, hub: Hub, config: ServerConfig) -> Guard:
    """
    Guard ``app``: add the middleware, the response hook and ``/openapi.json``.

    Call it once the application's own middlewares are in place: the guard
    runs inside them, so that its refusals become ``Status`` bodies.

    Raises:
        OSError: a token, key or rules file cannot be read.
        ValueError: one of those files is malformed.
    """
    guard = Guard(hub, config)
    app[GUARD_KEY] = guard
    app.middlewares.append(guard.middleware)
    app.on_response_prepare.append(guard.on_prepare)
    app.router.add_get("/openapi.json", _openapi)
    return guard


def check_config(config: ServerConfig) -> None:
    """
    Read the token, key and rules files of ``config``, to report errors early.

    Raises:
        OSError: a file cannot be read.
        ValueError: a file is malformed, or a limit is not positive.
    """
    if config.token_file:
        load_token_file(config.token_file)
    if config.jwt_key_file:
        JWTVerifier.from_file(config.jwt_key_file, config.jwt_audience)
    if config.rules_file:
        Rules.load(config.rules_file)
    for name in (
        "max_watchers",
        "max_watchers_per_client",
        "max_objects_per_collection",
        "write_burst",
        "header_timeout",
        "body_timeout",
    ):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name.replace('_', '-')} must be positive")
    if config.write_rate < 0:
        raise ValueError("write-rate must not be negative")


def identity_of(request: web.Request) -> Identity | None:
    """Return the caller of a request the guard has checked."""
    return request.get(IDENTITY_KEY)
