"""The requests of the hub's API and the meaning of its answers, without I/O.

The async :class:`~clients.client.Client` and the
:class:`~clients.sync.SyncClient` differ only in how they send a request and
read its answer. What each operation sends (method, URL, query parameters,
headers and body), which arguments are refused before anything is sent, and
what a status code plus a body mean (a result, an
:class:`~clients.errors.ApiError` or a :class:`~clients.errors.DecodeError`)
is decided here, once for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from websockets.http11 import Response as HandshakeResponse
from yarl import URL

from hub.core import codec

from .errors import ApiError, DecodeError

__all__ = [
    "EVENT_STREAM",
    "JSON",
    "MAX_ERROR_BODY",
    "MERGE_PATCH",
    "TRANSPORTS",
    "Request",
    "Requests",
    "Transport",
    "handshake_error",
    "parse_base_url",
    "read_object",
    "websocket_url",
]

Transport = Literal["chunked", "websocket", "sse"]
TRANSPORTS: tuple[Transport, ...] = ("chunked", "websocket", "sse")

# An error body is read for its message only: a longer one is cut here.
MAX_ERROR_BODY = 64 * 1024

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class Request:
    """
    One request to the hub, ready to send.

    Attributes:
        method: The HTTP method.
        url: The URL without its query.
        params: The query parameters, only those that have a value.
        headers: Every header to send.
        body: The encoded body, or None.
    """

    method: str
    url: URL
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes | None = None

    @property
    def target(self) -> URL:
        """The URL with its query."""
        return self.url.with_query(self.params) if self.params else self.url


class Requests:
    """
    Build the requests of one hub's API from the clients' arguments.

    Each method takes the arguments of the client method of the same name and
    raises ``ValueError`` for those that no request can carry.
    """

    def __init__(self, base_url: URL, token: str | None) -> None:
        self.base_url = base_url
        self._token = token

    # REST.

    def list(
        self, collection: str, *, label_selector: str | None, field_selector: str | None
    ) -> Request:
        """Return the request that lists ``collection``."""
        params = _params(labelSelector=label_selector, fieldSelector=field_selector)
        return self._rest("GET", self._url(collection), params=params)

    def get(self, collection: str, name: str) -> Request:
        """Return the request that reads one object."""
        return self._rest("GET", self._url(collection, name))

    def create(self, collection: str, obj: Mapping[str, Any]) -> Request:
        """Return the request that creates ``obj``."""
        return self._rest("POST", self._url(collection), body=obj)

    def replace(self, collection: str, obj: Mapping[str, Any]) -> Request:
        """Return the request that replaces the object named by ``obj``."""
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError("object has no metadata.name to replace")
        return self._rest("PUT", self._url(collection, name), body=obj)

    def patch(self, collection: str, name: str, patch: Mapping[str, Any]) -> Request:
        """Return the request that merge-patches one object."""
        url = self._url(collection, name)
        return self._rest("PATCH", url, body=patch, content_type=MERGE_PATCH)

    def delete(
        self, collection: str, name: str, *, resource_version: str | None
    ) -> Request:
        """Return the request that deletes one object."""
        params = _params(resourceVersion=resource_version)
        return self._rest("DELETE", self._url(collection, name), params=params)

    # Watch.

    def watch(
        self,
        collection: str,
        name: str | None,
        *,
        resource_version: str | None,
        label_selector: str | None,
        field_selector: str | None,
        allow_bookmarks: bool,
        timeout_seconds: int | None,
        send_initial_events: bool | None,
        transport: Transport,
    ) -> Request:
        """Return the request that opens a watch over ``transport``."""
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
        if transport == "websocket":
            return Request("GET", url, params, self._headers())
        headers = self._headers(EVENT_STREAM if transport == "sse" else JSON)
        # A compressed body arrives in bursts, not event by event.
        headers["Accept-Encoding"] = "identity"
        return Request("GET", url, params, headers)

    # Private.

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

    def _rest(
        self,
        method: str,
        url: URL,
        *,
        params: dict[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> Request:
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = codec.dumps(body if isinstance(body, dict) else dict(body))
        return Request(method, url, params or {}, headers, data)


def parse_base_url(base_url: str | URL) -> URL:
    """
    Return a client's base URL.

    Raises:
        ValueError: it is not an http(s) URL with a host.
    """
    url = URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base url {str(base_url)!r} is not an http(s) url")
    return url


def read_object(
    method: str, url: URL, status: int, body: bytes, content_type: str
) -> dict[str, Any]:
    """
    Return the object of a REST answer; ``method`` and ``url`` name it in errors.

    Raises:
        ApiError: the answer is a failure (its body is read up to
            ``MAX_ERROR_BODY``).
        DecodeError: a success whose body is not a JSON object.
    """
    if status >= 300:
        raise ApiError.from_response(status, body[:MAX_ERROR_BODY], content_type)
    try:
        decoded = codec.loads(body)
    except ValueError as exc:
        raise DecodeError(f"{method} {url} answered malformed json: {exc}") from exc
    if not isinstance(decoded, dict):
        kind = type(decoded).__name__
        raise DecodeError(f"{method} {url} answered a json {kind}, not an object")
    return decoded


def websocket_url(url: URL) -> URL:
    """Return the ws(s) URL of an http(s) watch URL."""
    return url.with_scheme("wss" if url.scheme == "https" else "ws")


def handshake_error(answer: HandshakeResponse) -> ApiError:
    """Return the error of a WebSocket handshake that the hub refused."""
    content_type = answer.headers.get("Content-Type", JSON)
    body = bytes(answer.body[:MAX_ERROR_BODY])
    return ApiError.from_response(answer.status_code, body, content_type)


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
