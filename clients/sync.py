"""A synchronous client of the hub, for scripts and programs without an event loop.

::

    with SyncClient("http://127.0.0.1:8080") as client:
        client.create("pods", {"metadata": {"name": "web"}})
        with client.watch("pods", resource_version="0", timeout_seconds=30) as w:
            for event in w:
                print(event.type, event.name, event.resource_version)

It offers the operations of the async :class:`~clients.client.Client`, with the
same errors: :class:`~clients.errors.ApiError` (also the matching
:mod:`hub.core.errors` class) for a failure the hub answers,
:class:`~clients.errors.TransportError` when the hub cannot be reached, and
:class:`~clients.errors.DecodeError` for a broken watch stream.

REST calls and chunked or SSE watches go over urllib3, which blocks the calling
thread and keeps connections alive in a small pool; no thread is started for
them. WebSocket watches use the websockets library's sync client, which reads
each connection in a thread of its own. The watch streams are parsed by the
same sans-I/O parsers as the async client's (:mod:`clients.decoders`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

import urllib3
import websockets.sync.client
from urllib3.exceptions import HTTPError
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    WebSocketException,
)
from yarl import URL

from hub.core.events import Event

from . import _requests
from ._requests import EVENT_STREAM, JSON, MAX_ERROR_BODY, Request, Transport
from .decoders import (
    MAX_EVENT_SIZE,
    NDJSONParser,
    SSEParser,
    parse_event,
    websocket_closed_error,
)
from .errors import ApiError, DecodeError, TransportError

__all__ = ["SyncClient", "SyncWatcher"]

logger = logging.getLogger("watchhub.client")

# How much of a watch stream one read asks for: a read returns what has
# arrived, up to this, so it bounds a read and never waits for it to fill.
READ_SIZE = 64 * 1024


class _Source(Protocol):
    def decode(self) -> Event | None: ...

    def close(self) -> None: ...


class SyncWatcher:
    """
    A blocking watch: an iterator of events with an idempotent ``stop()``.

    Iteration ends at the clean end of the stream (the hub's timeout, say) or
    after :meth:`stop`, which any thread may call: it wakes a thread blocked
    waiting for the next event. A broken or malformed stream raises
    :class:`~clients.errors.DecodeError`, after every event before the fault;
    the iteration ends after it. Like the async watcher, it is unbuffered: it
    reads the stream only when asked for the next event.
    """

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """True once the watch is stopped or its stream has ended."""
        return self._stopped

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._stopped:
            raise StopIteration
        try:
            event = self._source.decode()
        except Exception:
            stopped = self._stopped
            self.stop()
            if stopped:  # the stream broke because the watch was stopped
                raise StopIteration from None
            raise
        if event is None:
            self.stop()
            raise StopIteration
        return event

    def stop(self) -> None:
        """Stop the watch and close its connection; idempotent, from any thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._source.close()
        except Exception:  # the stream is gone either way
            logger.debug("closing a watch failed", exc_info=True)

    def __enter__(self) -> SyncWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SyncClient:
    """
    A blocking client of one hub, over HTTP.

    Every REST method returns the decoded JSON body of the hub's answer.

    Args:
        base_url: The hub's URL; a path prefix is kept.
        token: A bearer token sent with every request, watches included.
        timeout: Seconds to connect, and to wait for each REST answer. A watch
            waits for events as long as the hub keeps it open.
        max_event_size: The largest watch event accepted, in bytes.
        pool: A urllib3 pool manager to send requests with; the caller keeps
            ownership of it. Without one, the client makes its own and
            clears it in :meth:`close`.

    One client may be shared by threads: urllib3's pool is thread-safe.
    """

    def __init__(
        self,
        base_url: str | URL = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_event_size: int = MAX_EVENT_SIZE,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.base_url = _requests.parse_base_url(base_url)
        self.timeout = timeout
        self.max_event_size = max_event_size
        self._requests = _requests.Requests(self.base_url, token)
        self._owns_pool = pool is None
        # A few connections per host: a watch holds one for its lifetime, and
        # REST calls from other threads should not each open a new one.
        self._pool = pool or urllib3.PoolManager(maxsize=4)
        self._closed = False

    # Public API: REST.

    def list(
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
        return self._request(
            self._requests.list(
                collection, label_selector=label_selector, field_selector=field_selector
            )
        )

    def get(self, collection: str, name: str) -> dict[str, Any]:
        """
        Return the object ``name`` of ``collection``.

        Raises:
            ApiError: ``NotFound`` if there is no such object.
        """
        return self._request(self._requests.get(collection, name))

    def create(self, collection: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """
        Create ``obj`` in ``collection`` and return it as stored.

        Raises:
            ApiError: ``AlreadyExists``, ``Invalid`` or ``RequestEntityTooLarge``.
        """
        return self._request(self._requests.create(collection, obj))

    def replace(self, collection: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """
        Replace the object named by ``obj``'s ``metadata.name`` and return it.

        With ``metadata.resourceVersion`` set, the write succeeds only if the
        object is still at that version.

        Raises:
            ValueError: ``obj`` has no ``metadata.name``.
            ApiError: ``NotFound``, ``Conflict`` (a stale resourceVersion) or
                ``Invalid``.
        """
        return self._request(self._requests.replace(collection, obj))

    def patch(
        self, collection: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """
        Apply a JSON merge patch (RFC 7386) to an object and return the result.

        Raises:
            ApiError: ``NotFound``, ``Conflict`` or ``Invalid``.
        """
        return self._request(self._requests.patch(collection, name, patch))

    def delete(
        self, collection: str, name: str, *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """
        Delete an object and return its last state.

        With ``resource_version``, delete only if the object is at that version.

        Raises:
            ApiError: ``NotFound``, or ``Conflict`` on a stale resource_version.
        """
        return self._request(
            self._requests.delete(collection, name, resource_version=resource_version)
        )

    # Public API: watch.

    def watch(
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
    ) -> SyncWatcher:
        """
        Watch a collection, or the one object ``name`` (which need not exist).

        Returns once the hub has accepted the watch; the caller then iterates
        the returned watcher and stops it (or uses it as a context manager).
        The arguments are those of :meth:`clients.client.Client.watch`. An
        ERROR event, such as a 410 Expired, is an event of the stream.

        Raises:
            ValueError: ``transport`` is none of the three.
            ApiError: the hub refused the watch.
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
        source: _Source
        if transport == "websocket":
            source = self._open_websocket(request)
        else:
            source = self._open_stream(request, transport)
        logger.info(
            "watch opened",
            extra={
                "collection": collection,
                "object_name": name,
                "resource_version": resource_version,
                "transport": transport,
            },
        )
        return SyncWatcher(source)

    # Public API: lifecycle.

    def close(self) -> None:
        """Close the client's idle connections; watches it opened stay open."""
        self._closed = True
        if self._owns_pool:
            self._pool.clear()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Private: requests.

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")

    def _request(self, request: Request) -> dict[str, Any]:
        """Send one REST request; return the decoded body of a 2xx answer."""
        self._check_open()
        method, url = request.method, request.target
        logger.debug("request", extra={"method": method, "url": str(url)})
        try:
            # No retries: a write that may have reached the hub is not sent
            # twice behind the caller's back.
            response = self._pool.request(
                method,
                str(url),
                body=request.body,
                headers=request.headers,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                retries=False,
                redirect=False,
            )
        except (HTTPError, OSError) as exc:
            raise TransportError(f"{method} {url} failed: {exc!r}") from exc
        content_type = response.headers.get("Content-Type", JSON)
        return _requests.read_object(
            method, url, response.status, response.data, content_type
        )

    def _open_stream(self, request: Request, transport: Transport) -> _HTTPSource:
        """Start a chunked or SSE watch; return its source once it streams."""
        self._check_open()
        url = request.target
        try:
            response = self._pool.request(
                "GET",
                str(url),
                headers=request.headers,
                # A watch lasts as long as the hub keeps it: no read timeout.
                timeout=urllib3.Timeout(connect=self.timeout, read=None),
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except (HTTPError, OSError) as exc:
            raise TransportError(f"watch {url} failed: {exc!r}") from exc
        content_type = response.headers.get("Content-Type", "")
        if response.status >= 300:
            try:
                body = response.read(MAX_ERROR_BODY)
            except (HTTPError, OSError):
                body = b""
            _discard(response)
            raise ApiError.from_response(response.status, body, content_type or JSON)
        if transport == "sse":
            if content_type.split(";")[0].strip() != EVENT_STREAM:
                _discard(response)
                raise DecodeError(
                    f"watch {url} answered {content_type!r}, not {EVENT_STREAM}"
                )
            return _HTTPSource(response, SSEParser(self.max_event_size))
        return _HTTPSource(response, NDJSONParser(self.max_event_size))

    def _open_websocket(self, request: Request) -> _WebSocketSource:
        """Start a WebSocket watch; return its source once the handshake is done."""
        self._check_open()
        ws_url = _requests.websocket_url(request.target)
        # The connection's context is entered here and exited when the watch
        # stops: websockets 17.1 and later expect connect() as a context.
        stack = contextlib.ExitStack()
        try:
            connection = stack.enter_context(
                websockets.sync.client.connect(
                    str(ws_url),
                    additional_headers=request.headers,
                    max_size=self.max_event_size,
                    # As in the async client: hold a frame or two for a slow
                    # consumer, not 16 events of max_size each.
                    max_queue=1,
                    open_timeout=self.timeout,
                    # Like the REST calls, ignore proxies from the environment.
                    proxy=None,
                )
            )
        except InvalidStatus as exc:
            raise _requests.handshake_error(exc.response) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(f"watch {ws_url} failed: {exc!r}") from exc
        return _WebSocketSource(connection, stack)


class _HTTPSource:
    """The events of a chunked or SSE watch body, read as they arrive."""

    def __init__(
        self, response: urllib3.BaseHTTPResponse, parser: NDJSONParser | SSEParser
    ) -> None:
        self._response = response
        self._parser = parser
        self._eof = False
        self._closed = False

    def decode(self) -> Event | None:
        event: Event | None
        while (event := self._parser.next_event()) is None:
            if self._eof or self._closed:
                return None
            try:
                data = self._response.read1(READ_SIZE)
            except (HTTPError, OSError, ValueError) as exc:
                if self._closed:  # closed by us: the end of the stream
                    return None
                raise DecodeError(f"stream broken: {exc!r}") from exc
            if self._closed:
                return None
            if data:
                self._parser.receive(data)
            else:
                self._eof = True
                self._parser.end()
        return event

    def close(self) -> None:
        self._closed = True
        # A thread blocked reading this socket wakes only when it is shut
        # down; closing the file descriptor alone would leave it waiting.
        connection = getattr(self._response, "connection", None)
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        _discard(self._response)


class _WebSocketSource:
    """The events of a WebSocket watch: one per text frame."""

    def __init__(
        self,
        connection: websockets.sync.client.ClientConnection,
        context: contextlib.ExitStack,
    ) -> None:
        self._connection = connection
        self._context = context
        self._frame = 0
        self._closed = False

    def decode(self) -> Event | None:
        try:
            message: Any = self._connection.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            if self._closed:
                return None
            raise websocket_closed_error(exc, self._frame) from exc
        self._frame += 1
        where = f"frame {self._frame}"
        if not isinstance(message, str):
            raise DecodeError(f"{where} is a binary frame; events come in text frames")
        return parse_event(message, where)

    def close(self) -> None:
        self._closed = True
        self._context.close()


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response whose connection cannot be reused, and free its slot."""
    with contextlib.suppress(HTTPError, OSError):
        response.close()
    with contextlib.suppress(HTTPError, OSError):
        response.release_conn()
