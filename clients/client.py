"""The async client of the hub: REST operations and watches over three transports."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import websockets.asyncio.client
from websockets.exceptions import InvalidStatus, WebSocketException
from yarl import URL

from hub.core import codec
from hub.core.watcher import Decoder, StreamWatcher

from .decoders import MAX_EVENT_SIZE, NDJSONDecoder, SSEDecoder, WebSocketDecoder
from .errors import ApiError, DecodeError, TransportError

__all__ = ["Client", "Transport"]

logger = logging.getLogger("watchhub.client")

Transport = Literal["chunked", "websocket", "sse"]
TRANSPORTS: tuple[Transport, ...] = ("chunked", "websocket", "sse")

# An error body is read for its message only: a longer one is cut here.
MAX_ERROR_BODY = 64 * 1024

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
EVENT_STREAM = "text/event-stream"


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
        self.base_url = URL(base_url)
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError(f"base url {str(base_url)!r} is not an http(s) url")
        self.max_event_size = max_event_size
        self._session = session
        self._owns_session = session is None
        self._token = token
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
        params = _params(labelSelector=label_selector, fieldSelector=field_selector)
        return await self._request("GET", self._url(collection), params=params)

    async def get(self, collection: str, name: str) -> dict[str, Any]:
        """
        Return the object ``name`` of ``collection``.

        Raises:
            ApiError: ``NotFound`` if there is no such object.
        """
        return await self._request("GET", self._url(collection, name))

    async def create(self, collection: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """
        Create ``obj`` in ``collection`` and return it as stored.

        Raises:
            ApiError: ``AlreadyExists``, ``Invalid`` or ``RequestEntityTooLarge``.
        """
        return await self._request("POST", self._url(collection), body=obj)

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
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError("object has no metadata.name to replace")
        return await self._request("PUT", self._url(collection, name), body=obj)

    async def patch(
        self, collection: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """
        Apply a JSON merge patch (RFC 7386) to an object and return the result.

        Raises:
            ApiError: ``NotFound``, ``Conflict`` or ``Invalid``.
        """
        url = self._url(collection, name)
        return await self._request("PATCH", url, body=patch, content_type=MERGE_PATCH)

    async def delete(
        self, collection: str, name: str, *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """
        Delete an object and return its last state.

        With ``resource_version``, delete only if the object is at that version.

        Raises:
            ApiError: ``NotFound``, or ``Conflict`` on a stale resource_version.
        """
        params = _params(resourceVersion=resource_version)
        return await self._request("DELETE", self._url(collection, name), params=params)

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
        if transport not in TRANSPORTS:
            raise ValueError(
                f"unknown transport {transport!r}, expected chunked, websocket or sse"
            )
        url = self._url("watch", collection, *([name] if name is not None else []))
        params = _params(
            resourceVersion=resource_version,
            labelSelector=label_selector,
            fieldSelector=field_selector,
            allowWatchBookmarks="true" if allow_bookmarks else None,
            timeoutSeconds=_optional(timeout_seconds),
            sendInitialEvents=_optional(send_initial_events),
        )
        decoder: Decoder
        if transport == "websocket":
            decoder = await self._open_websocket(url.with_query(params))
        else:
            decoder = await self._open_stream(url, params, transport)
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

    def _url(self, *segments: str) -> URL:
        for segment in segments:
            if not segment:
                raise ValueError(f"empty path segment in {'/'.join(segments)!r}")
        # Quote each segment whole, so that a "/" in a name cannot reach
        # another route: the hub answers it as the bad name it is.
        quoted = [quote(segment, safe="") for segment in segments]
        return self.base_url.joinpath("api", "v1", *quoted, encoded=True)

    def _headers(self, accept: str = JSON) -> dict[str, str]:
        headers = {"Accept": accept}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send one REST request; return the decoded body of a 2xx answer."""
        session = self._get_session()
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = codec.dumps(body if isinstance(body, dict) else dict(body))
        logger.debug("request", extra={"method": method, "url": str(url)})
        try:
            async with session.request(
                method, url, params=params, data=data, headers=headers
            ) as response:
                if response.status >= 300:
                    raise await _api_error(response)
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{method} {url} failed: {exc!r}") from exc
        try:
            decoded = codec.loads(payload)
        except ValueError as exc:
            raise DecodeError(f"{method} {url} answered malformed json: {exc}") from exc
        if not isinstance(decoded, dict):
            kind = type(decoded).__name__
            raise DecodeError(f"{method} {url} answered a json {kind}, not an object")
        return decoded

    async def _open_stream(
        self, url: URL, params: Mapping[str, str], transport: Transport
    ) -> Decoder:
        """Start a chunked or SSE watch; return its decoder once it streams."""
        session = self._get_session()
        accept = EVENT_STREAM if transport == "sse" else JSON
        headers = self._headers(accept)
        # A compressed body arrives in bursts, not event by event.
        headers["Accept-Encoding"] = "identity"
        # A watch lasts as long as the hub keeps it: no total or read timeout.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=session.timeout.connect,
            sock_connect=session.timeout.sock_connect,
            sock_read=None,
        )
        try:
            response = await session.get(
                url, params=params, headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"watch {url} failed: {exc!r}") from exc
        if response.status >= 300:
            try:
                raise await _api_error(response)
            finally:
                response.close()
        if transport == "sse":
            if response.content_type != EVENT_STREAM:
                response.close()
                raise DecodeError(
                    f"watch {url} answered {response.content_type!r}, "
                    f"not {EVENT_STREAM}"
                )
            return SSEDecoder(response, self.max_event_size)
        return NDJSONDecoder(response, self.max_event_size)

    async def _open_websocket(self, url: URL) -> WebSocketDecoder:
        """Start a WebSocket watch; return its decoder once the handshake is done."""
        ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        headers = self._headers()
        trust_env = self._get_session().trust_env
        try:
            connection = await websockets.asyncio.client.connect(
                str(ws_url),
                additional_headers=headers,
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
            answer = exc.response
            content_type = answer.headers.get("Content-Type", JSON)
            body = bytes(answer.body[:MAX_ERROR_BODY])
            raise ApiError.from_response(
                answer.status_code, body, content_type
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(f"watch {ws_url} failed: {exc!r}") from exc
        return WebSocketDecoder(connection)


def _params(**values: str | None) -> dict[str, str]:
    """Return the query parameters that have a value."""
    return {key: value for key, value in values.items() if value is not None}


def _optional(value: int | bool | None) -> str | None:
    """Return a query parameter's text: "true", "false", a number, or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def _api_error(response: aiohttp.ClientResponse) -> ApiError:
    """Return the error that a failed answer describes, reading its body."""
    try:
        body = await response.content.read(MAX_ERROR_BODY)
    except aiohttp.ClientError:
        body = b""
    return ApiError.from_response(response.status, body, response.content_type)
