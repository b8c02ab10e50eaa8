"""The async client against a fake hub: URLs, parameters, headers and errors."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

import clients
from clients import (
    ApiError,
    Client,
    ClientError,
    DecodeError,
    Event,
    EventType,
    StreamWatcher,
    TransportError,
)
from hub.core import codec
from hub.core.errors import AlreadyExists, Conflict, HubError, NotFound, Timeout

# One unit of waiting, stretched on slow machines with WATCHHUB_TEST_TIMEOUT_FACTOR.
TIMEOUT = 10.0 * float(os.environ.get("WATCHHUB_TEST_TIMEOUT_FACTOR", "1"))

WEB = {"metadata": {"name": "web", "resourceVersion": "5"}, "spec": {"port": 80}}
EVENTS = [
    Event(EventType.ADDED, WEB),
    Event(EventType.BOOKMARK, {"metadata": {"resourceVersion": "6"}}),
]


def status(code: int, reason: str, message: str, name: str = "") -> dict[str, Any]:
    """Return a Status body as the hub sends it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": "pods"} if name else {},
        "code": code,
    }


@dataclass
class Seen:
    """One request that the fake hub received."""

    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeHub:
    """A stand-in for the hub that records requests and answers from a script."""

    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    hold_watch: bool = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request; every path lands here."""
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.raw_path.split("?")[0],
                dict(request.query),
                dict(request.headers),
                body,
            )
        )
        parts = request.path.removeprefix("/prefix").strip("/").split("/")
        if parts[:3] == ["api", "v1", "watch"]:
            return await self.watch(request)
        name = parts[3] if len(parts) > 3 else None
        return self.rest(request.method, parts[2], name, body, request)

    def rest(
        self,
        method: str,
        collection: str,
        name: str | None,
        body: bytes,
        request: web.Request,
    ) -> web.StreamResponse:
        """Answer a REST request."""
        if collection == "broken":
            return web.Response(status=502, text="<html>bad gateway</html>")
        if collection == "garbage":
            return web.Response(status=200, text="{not json")
        if name is not None and name != "web":
            return web.json_response(
                status(404, "NotFound", f'pods "{name}" not found', name), status=404
            )
        if method == "GET" and name is None:
            items = {
                "kind": "List",
                "metadata": {"resourceVersion": "5"},
                "items": [WEB],
            }
            return web.json_response(items)
        if method == "POST":
            return web.json_response(
                status(409, "AlreadyExists", 'pods "web" already exists', "web"),
                status=409,
            )
        if method == "DELETE" and request.query.get("resourceVersion") == "1":
            return web.json_response(
                status(409, "Conflict", "resourceVersion 1 is stale", "web"), status=409
            )
        return web.json_response(WEB)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """Answer a watch over the transport that the request asks for."""
        if request.query.get("resourceVersion") == "999":
            return web.json_response(
                status(504, "Timeout", "resourceVersion 999 never came"), status=504
            )
        ws = web.WebSocketResponse()
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            for event in EVENTS:
                await ws.send_str(
                    codec.frame_event(event.type.value, event.object, "ws").decode()
                )
            await ws.close()
            return ws
        sse = "text/event-stream" in request.headers.get("Accept", "")
        framing = codec.SSE if sse else codec.NDJSON
        content_type = "text/event-stream" if sse else "application/json;stream=watch"
        if request.query.get("labelSelector") == "wrong-type":
            content_type = "application/json"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            if self.hold_watch:
                await asyncio.wait_for(self.gate.wait(), TIMEOUT)
            for event in EVENTS:
                data = codec.frame_event(
                    event.type.value, event.object, framing, event.resource_version
                )
                await response.write(data)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away first
        return response


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeHub, URL]]:
    """A fake hub served on a free port; yields it and its URL."""
    hub = FakeHub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hub.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(shutdown_timeout=TIMEOUT)
    yield hub, server.make_url("/")
    hub.gate.set()
    await server.close()


@pytest.fixture
async def client(fake: tuple[FakeHub, URL]) -> AsyncIterator[Client]:
    """A client of the fake hub, with a token."""
    async with Client(fake[1], token="s3cret") as client:
        yield client


async def collect(watcher: StreamWatcher) -> list[Event]:
    """Return every event of ``watcher``, failing the test after the deadline."""

    async def read() -> list[Event]:
        return [event async for event in watcher]

    return await asyncio.wait_for(read(), TIMEOUT)


# REST


async def test_client_rest_methods_send_the_right_requests(
    fake: tuple[FakeHub, URL], client: Client
) -> None:
    """Each REST method uses its method, path, query, body and content type."""
    hub, _ = fake
    listed = await client.list(
        "pods", label_selector="app in (web)", field_selector="x"
    )
    assert listed["items"] == [WEB]
    assert await client.get("pods", "web") == WEB
    assert await client.replace("pods", WEB) == WEB
    assert await client.patch("pods", "web", {"spec": {"port": None}}) == WEB
    assert await client.delete("pods", "web", resource_version="5") == WEB

    requests = [(seen.method, seen.raw_path, seen.query) for seen in hub.seen]
    assert requests == [
        (
            "GET",
            "/api/v1/pods",
            {"labelSelector": "app in (web)", "fieldSelector": "x"},
        ),
        ("GET", "/api/v1/pods/web", {}),
        ("PUT", "/api/v1/pods/web", {}),
        ("PATCH", "/api/v1/pods/web", {}),
        ("DELETE", "/api/v1/pods/web", {"resourceVersion": "5"}),
    ]
    put, patch = hub.seen[2], hub.seen[3]
    assert codec.loads(put.body) == WEB
    assert put.headers["Content-Type"] == "application/json"
    assert codec.loads(patch.body) == {"spec": {"port": None}}
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert all(seen.headers["Authorization"] == "Bearer s3cret" for seen in hub.seen)


async def test_client_failure_raises_api_error_carrying_the_status(
    client: Client,
) -> None:
    """A 404 raises an ApiError that is also a NotFound, with the Status body."""
    with pytest.raises(ApiError) as caught:
        await client.get("pods", "db")
    error = caught.value
    assert isinstance(error, NotFound)
    assert isinstance(error, LookupError)
    assert (error.code, error.reason, error.name) == (404, "NotFound", "db")
    assert error.message == 'pods "db" not found'
    assert error.status == status(404, "NotFound", 'pods "db" not found', "db")


async def test_client_conflicts_raise_the_matching_hub_errors(client: Client) -> None:
    """A create of an existing name and a stale delete raise their hub errors."""
    with pytest.raises(AlreadyExists):
        await client.create("pods", WEB)
    with pytest.raises(Conflict) as caught:
        await client.delete("pods", "web", resource_version="1")
    assert isinstance(caught.value, ApiError)
    assert caught.value.reason == "Conflict"


async def test_client_failure_without_status_builds_one(client: Client) -> None:
    """A failure answered with HTML raises an ApiError with a built Status."""
    with pytest.raises(ApiError) as caught:
        await client.get("broken", "web")
    error = caught.value
    assert isinstance(error, HubError)
    assert error.code == 502
    assert error.status["kind"] == "Status"
    assert "bad gateway" in error.message


async def test_client_malformed_success_body_raises_decode_error(
    client: Client,
) -> None:
    """A 200 answer that is not JSON raises DecodeError."""
    with pytest.raises(DecodeError, match="malformed json"):
        await client.get("garbage", "web")


async def test_client_unreachable_hub_raises_transport_error() -> None:
    """A hub that refuses connections raises TransportError, an OSError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections fail
        async with Client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(TransportError) as caught:
                await client.get("pods", "web")
            for transport in ("chunked", "websocket", "sse"):
                with pytest.raises(TransportError):
                    await client.watch("pods", transport=transport)
    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value, ClientError)


async def test_client_quotes_a_name_into_one_path_segment(
    fake: tuple[FakeHub, URL], client: Client
) -> None:
    """A name with a slash stays one segment rather than reaching another route."""
    with pytest.raises(NotFound):
        await client.get("pods", "a/b")
    assert fake[0].seen[-1].raw_path == "/api/v1/pods/a%2Fb"


async def test_client_keeps_the_base_url_path(fake: tuple[FakeHub, URL]) -> None:
    """A base URL with a path prefix keeps it before /api/v1."""
    async with Client(fake[1] / "prefix/") as client:
        assert await client.get("pods", "web") == WEB
    assert fake[0].seen[-1].raw_path == "/prefix/api/v1/pods/web"


async def test_client_refuses_bad_arguments(client: Client) -> None:
    """Nameless objects, empty names, unknown transports and bad URLs are refused."""
    with pytest.raises(ValueError, match="no metadata.name"):
        await client.replace("pods", {"metadata": {}})
    with pytest.raises(ValueError, match="empty path segment"):
        await client.get("pods", "")
    with pytest.raises(ValueError, match="unknown transport 'grpc'"):
        await client.watch("pods", transport="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an http"):
        Client("ftp://example.com")


# Watch


@pytest.mark.parametrize("transport", ["chunked", "websocket", "sse"])
async def test_client_watch_sends_parameters_and_yields_events(
    fake: tuple[FakeHub, URL], client: Client, transport: clients.Transport
) -> None:
    """A watch over each transport sends every parameter and yields the events."""
    watcher = await client.watch(
        "pods",
        resource_version="5",
        label_selector="app=web",
        field_selector="metadata.name!=db",
        allow_bookmarks=True,
        timeout_seconds=30,
        send_initial_events=False,
        transport=transport,
    )
    async with watcher:
        assert await collect(watcher) == EVENTS
    seen = fake[0].seen[-1]
    assert seen.raw_path == "/api/v1/watch/pods"
    assert seen.query == {
        "resourceVersion": "5",
        "labelSelector": "app=web",
        "fieldSelector": "metadata.name!=db",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "30",
        "sendInitialEvents": "false",
    }
    assert seen.headers["Authorization"] == "Bearer s3cret"
    if transport == "sse":
        assert seen.headers["Accept"] == "text/event-stream"
    if transport == "websocket":
        assert seen.headers["Upgrade"].lower() == "websocket"
        assert "Origin" not in seen.headers


async def test_client_watch_of_one_object_uses_its_url(
    fake: tuple[FakeHub, URL], client: Client
) -> None:
    """Watching one name uses /api/v1/watch/{collection}/{name}, no parameters."""
    async with await client.watch("pods", "web") as watcher:
        await collect(watcher)
    seen = fake[0].seen[-1]
    assert (seen.raw_path, seen.query) == ("/api/v1/watch/pods/web", {})
    assert seen.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("transport", ["chunked", "websocket", "sse"])
async def test_client_watch_refused_raises_api_error(
    client: Client, transport: clients.Transport
) -> None:
    """A watch answered with a Status before streaming raises its ApiError."""
    with pytest.raises(Timeout) as caught:
        await client.watch("pods", resource_version="999", transport=transport)
    assert isinstance(caught.value, ApiError)
    assert caught.value.code == 504
    assert caught.value.message == "resourceVersion 999 never came"


async def test_client_sse_watch_answered_without_event_stream_raises(
    client: Client,
) -> None:
    """An SSE watch answered with another content type raises DecodeError."""
    with pytest.raises(DecodeError, match="not text/event-stream"):
        await client.watch("pods", label_selector="wrong-type", transport="sse")


async def test_client_close_stops_its_open_watches(fake: tuple[FakeHub, URL]) -> None:
    """Closing the client stops every watch it opened and wakes their readers."""
    fake[0].hold_watch = True
    client = Client(fake[1])
    watcher = await client.watch("pods")
    reader = asyncio.create_task(collect(watcher))
    await asyncio.wait_for(client.close(), TIMEOUT)
    assert watcher.stopped
    assert await asyncio.wait_for(reader, TIMEOUT) == []
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("pods", "web")


async def test_client_leaves_a_given_session_open(fake: tuple[FakeHub, URL]) -> None:
    """A session passed in belongs to the caller: close() leaves it open."""
    async with aiohttp.ClientSession() as session:
        async with Client(fake[1], session=session) as client:
            assert await client.get("pods", "web") == WEB
        assert not session.closed
        assert fake[0].seen[-1].headers.get("Authorization") is None


# Exports


def test_clients_exports_are_complete() -> None:
    """Every public name of the clients' modules is exported from the package."""
    from clients import backoff, client, decoders, errors, informer, sync

    exported = set(clients.__all__)
    for module in (backoff, client, decoders, errors, informer, sync):
        assert set(module.__all__) <= exported
    for name in clients.__all__:
        assert getattr(clients, name) is not None
