"""The async client of the hub: REST operations and watches over three transports."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
import websockets.asyncio.client
from websockets.exceptions import InvalidStatus, WebSocketException
from yarl import URL

from hub.core.watcher import Decoder, StreamWatcher

from . import _requests
from ._requests import EVENT_STREAM, MAX_ERROR_BODY, Request, Transport
from .decoders import MAX_EVENT_SIZE, NDJSONDecoder, SSEDecoder, WebSocketDecoder
from .errors import ApiError, DecodeError, TransportError

__all__ = ["Client", "Transport"]

logger = logging.getLogger("watchhub.client")


class Client:
    """
    An async client of one hub, over HTTP.

    Every REST method returns the decoded JSON body of the hub's answer. A
    failure that the hub answers raises :class:`~clients.errors.ApiError`,
    which is also the matching :mod:`hub.core.errors` class (``NotFound``,
    ``Conflict``, ...); a hub that cannot be reached raises
    :class:`~clients.errors.TransportError`.

    Args:
        base_url: The hub's URL; a path prefix is kept.
        session: An aiohttp session to send requests with. The caller keeps
            ownership of it; without one, the client makes its own, when first
            needed, and closes it in :meth:`close`.
        token: A bearer token sent with every request, watches included.
        max_event_size: The largest watch event accepted, in bytes.

    Use it as an async context manager, or call :meth:`close` when done: that
    also stops every watch the client opened.
    """

    def __init__(
        self,
        base_url: str | URL = "http://127.0.0.1:8080",
        *,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
    ) -> None:
        self.base_url = _requests.parse_base_url(base_url)
        self.max_event_size = max_event_size
        self._session = session
        self._owns_session = session is None
        self._requests = _requests.Requests(self.base_url, token)
        self._watchers: weakref.WeakSet[StreamWatcher] = weakref.WeakSet()
        self._closed = False

    # Public API: REST.

    async def list(
        self,
        collection: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """
        List a collection: a ``List`` with ``metadata.resourceVersion`` and ``items``.

        Raises:
            ApiError: the hub refused the request, say for a bad selector.
        """
        return await self._request(
            self._requests.list(
                collection, label_selector=label_selector, field_selector=field_selector
            )
        )

    async def get(self, collection: str, name: str) -> dict[str, Any]:
        """
        Return the object ``name`` of ``collection``.

        Raises:
            ApiError: ``NotFound`` if there is no such object.
        """
        return await self._request(self._requests.get(collection, name))

    async def create(self, collection: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """
        Create ``obj`` in ``collection`` and return it as stored.

        Raises:
            ApiError: ``AlreadyExists``, ``Invalid`` or ``RequestEntityTooLarge``.
        """
        return await self._request(self._requests.create(collection, obj))

    async def replace(self, collection: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """
        Replace the object named by ``obj``'s ``metadata.name`` and return it.

        With ``metadata.resourceVersion`` set, the write succeeds only if the
        object is still at that version.

        Raises:
            ValueError: ``obj`` has no ``metadata.name``.
            ApiError: ``NotFound``, ``Conflict`` (a stale resourceVersion) or
                ``Invalid``.
        """
        return await self._request(self._requests.replace(collection, obj))

    async def patch(
        self, collection: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """
        Apply a JSON merge patch (RFC 7386) to an object and return the result.

        Raises:
            ApiError: ``NotFound``, ``Conflict`` or ``Invalid``.
        """
        return await self._request(self._requests.patch(collection, name, patch))

    async def delete(
        self, collection: str, name: str, *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """
        Delete an object and return its last state.

        With ``resource_version``, delete only if the object is at that version.

        Raises:
            ApiError: ``NotFound``, or ``Conflict`` on a stale resource_version.
        """
        return await self._request(
            self._requests.delete(collection, name, resource_version=resource_version)
        )

    # Public API: watch.

    async def watch(
        self,
        collection: str,
        name: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = False,
        timeout_seconds: int | None = None,
        send_initial_events: bool | None = None,
        transport: Transport = "chunked",
    ) -> StreamWatcher:
        """
        Watch a collection, or the one object ``name`` (which need not exist).

        Returns once the hub has accepted the watch; the events then come from
        the returned watcher, which the caller must stop (or use as an async
        context manager). An ERROR event, such as a 410 Expired, is an event
        of the stream, not an exception: relist and watch again on it.

        Args:
            resource_version: Where to start: unset, "" or "0" for a synthetic
                ADDED per object that matches now, then every change after that;
                a resourceVersion for every change after it.
            label_selector: Kubernetes label selector syntax.
            field_selector: ``metadata.name`` with ``=``, ``==`` or ``!=``.
            allow_bookmarks: Ask for BOOKMARK events.
            timeout_seconds: End the watch cleanly after that many seconds.
            send_initial_events: Ask for, or against, the initial ADDED events.
            transport: ``"chunked"`` (NDJSON over chunked HTTP), ``"websocket"``
                or ``"sse"`` (Server-Sent Events).

        Raises:
            ValueError: ``transport`` is none of the three.
            ApiError: the hub refused the watch (say 400 for a bad selector, or
                504 for a resourceVersion that it never reached).
            TransportError: the hub could not be reached.
            DecodeError: an SSE watch was answered with another content type.
        """
        request = self._requests.watch(
            collection,
            name,
            resource_version=resource_version,
            label_selector=label_selector,
            field_selector=field_selector,
            allow_bookmarks=allow_bookmarks,
            timeout_seconds=timeout_seconds,
            send_initial_events=send_initial_events,
            transport=transport,
        )
        decoder: Decoder
        if transport == "websocket":
            decoder = await self._open_websocket(request)
        else:
            decoder = await self._open_stream(request, transport)
        watcher = StreamWatcher(decoder)
        self._watchers.add(watcher)
        logger.info(
            "watch opened",
            extra={
                "collection": collection,
                "object_name": name,
                "resource_version": resource_version,
                "transport": transport,
            },
        )
        return watcher

    # Public API: lifecycle.

    async def close(self) -> None:
        """Stop every watch opened by this client, and close its own session."""
        self._closed = True
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.stop()
        for watcher in watchers:
            await watcher.wait_closed()
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Private: requests.

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(self, request: Request) -> dict[str, Any]:
        """Send one REST request; return the decoded body of a 2xx answer."""
        session = self._get_session()
        method, url = request.method, request.url
        logger.debug("request", extra={"method": method, "url": str(url)})
        try:
            async with session.request(
                method,
                url,
                params=request.params,
                data=request.body,
                headers=request.headers,
            ) as response:
                if response.status >= 300:
                    body = await _error_body(response)
                else:
                    body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{method} {url} failed: {exc!r}") from exc
        return _requests.read_object(
            method, url, response.status, body, response.content_type
        )

    async def _open_stream(self, request: Request, transport: Transport) -> Decoder:
        """Start a chunked or SSE watch; return its decoder once it streams."""
        session = self._get_session()
        url = request.url
        # A watch lasts as long as the hub keeps it: no total or read timeout.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=session.timeout.connect,
            sock_connect=session.timeout.sock_connect,
            sock_read=None,
        )
        try:
            response = await session.get(
                url, params=request.params, headers=request.headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"watch {url} failed: {exc!r}") from exc
        if response.status >= 300:
            try:
                body = await _error_body(response)
            finally:
                response.close()
            raise ApiError.from_response(response.status, body, response.content_type)
        if transport == "sse":
            if response.content_type != EVENT_STREAM:
                response.close()
                raise DecodeError(
                    f"watch {url} answered {response.content_type!r}, "
                    f"not {EVENT_STREAM}"
                )
            return SSEDecoder(response, self.max_event_size)
        return NDJSONDecoder(response, self.max_event_size)

    async def _open_websocket(self, request: Request) -> WebSocketDecoder:
        """Start a WebSocket watch; return its decoder once the handshake is done."""
        ws_url = _requests.websocket_url(request.target)
        trust_env = self._get_session().trust_env
        try:
            connection = await websockets.asyncio.client.connect(
                str(ws_url),
                additional_headers=request.headers,
                max_size=self.max_event_size,
                # Queue no more than a frame or two: a slow consumer then slows
                # the stream, as it does over HTTP, instead of holding up to 16
                # events of max_size each (the library's default).
                max_queue=1,
                # Follow the aiohttp session: proxies from the environment
                # only when it trusts the environment.
                proxy=True if trust_env else None,
            )
        except InvalidStatus as exc:
            raise _requests.handshake_error(exc.response) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(f"watch {ws_url} failed: {exc!r}") from exc
        return WebSocketDecoder(connection)


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    """Return the start of a failed answer's body, read for its message."""
    try:
        return await response.content.read(MAX_ERROR_BODY)
    except aiohttp.ClientError:
        return b""
