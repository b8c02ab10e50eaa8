"""Watches over a real socket: chunked HTTP and WebSocket, from each start."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect

from hub import Hub, HubConfig
from hub.store import MemoryStore

from .conftest import TIMEOUT, RunningHub, eventually, read_lines, start_hub


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


async def write(hub: Hub, method: str, name: str, body: Any = None) -> None:
    pods = hub.collection("pods")
    if method == "create":
        await pods.create(body or pod(name))
    elif method == "patch":
        await pods.patch(name, body)
    else:
        await pods.delete(name)


async def churn(hub: Hub, name: str = "a") -> None:
    """A create, two updates and a delete."""
    await write(hub, "create", name)
    await write(hub, "patch", name, {"spec": {"n": 1}})
    await write(hub, "patch", name, {"spec": {"n": 2}})
    await write(hub, "delete", name)


class Watch:
    """A raw watch over chunked HTTP or WebSocket, reading parsed events."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._ws: Any = None

    async def open(self, served: RunningHub, path: str) -> Watch:
        if self.transport == "chunked":
            self._session = aiohttp.ClientSession()
            self._response = await self._session.get(served.url + path)
            assert self._response.status == 200
        else:
            self._ws = await connect(served.ws_url + path, max_size=2**24)
        return self

    async def events(self, count: int) -> list[dict[str, Any]]:
        if self._response is not None:
            return await read_lines(self._response, count)
        found = []
        async with asyncio.timeout(TIMEOUT):
            while len(found) < count:
                found.append(orjson.loads(await self._ws.recv()))
        return found

    def drop(self) -> None:
        """Cut the connection without a goodbye."""
        if self._response is not None:
            self._response.close()
        else:
            self._ws.transport.abort()

    async def close(self) -> None:
        if self._response is not None:
            self._response.close()
        if self._session is not None:
            await self._session.close()
        if self._ws is not None:
            await self._ws.close()


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    opened: list[Watch] = []
    yield opened
    for watch in opened:
        await watch.close()


TRANSPORTS = ["chunked", "websocket"]
WATCH_ALL = ["/api/v1/watch/pods", "/api/v1/pods?watch=true", "/api/v1/pods?watch=1"]
WATCH_ONE = [
    "/api/v1/watch/pods/a",
    "/api/v1/pods?watch=TRUE&fieldSelector=metadata.name%3Da",
    "/api/v1/pods?watch=True&fieldSelector=metadata.name%3D%3Da",
]


def types_and_versions(events: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    types = [event["type"] for event in events]
    versions = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    return types, versions


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("path", WATCH_ALL + WATCH_ONE)
async def test_watch_sees_the_life_of_an_object(
    served: RunningHub, watches: list[Watch], transport: str, path: str
) -> None:
    """A create, two updates and a delete arrive in order, with rising versions."""
    watch = await Watch(transport).open(served, path)
    watches.append(watch)
    await eventually(lambda: served.hub.watchers == 1)
    await write(served.hub, "create", "other")  # not watched by watch-one
    await churn(served.hub)
    events = await watch.events(4 if path in WATCH_ONE else 5)
    if len(events) == 5:
        assert events[0]["object"]["metadata"]["name"] == "other"
        events = events[1:]
    types, versions = types_and_versions(events)
    assert types == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    assert versions == sorted(set(versions))
    assert all(event["object"]["metadata"]["name"] == "a" for event in events)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_watch_from_zero_sends_current_state_first(
    served: RunningHub, watches: list[Watch], transport: str
) -> None:
    """Unset or "0": a synthetic ADDED per object, then the changes after."""
    for name in ("a", "b"):
        await write(served.hub, "create", name)
    for path in ("/api/v1/watch/pods", "/api/v1/watch/pods?resourceVersion=0"):
        watch = await Watch(transport).open(served, path)
        watches.append(watch)
        initial = await watch.events(2)
        assert {e["object"]["metadata"]["name"] for e in initial} == {"a", "b"}
        assert {e["type"] for e in initial} == {"ADDED"}
    await write(served.hub, "patch", "a", {"spec": {"n": 1}})
    for watch in watches:
        (event,) = await watch.events(1)
        assert event["type"] == "MODIFIED"
        assert event["object"]["metadata"]["resourceVersion"] == "3"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_watch_from_version_sends_only_later_changes(
    served: RunningHub, watches: list[Watch], transport: str
) -> None:
    """A resourceVersion: every change after it, and nothing before."""
    await churn(served.hub, "a")  # versions 1 to 4
    watch = await Watch(transport).open(served, "/api/v1/watch/pods?resourceVersion=2")
    watches.append(watch)
    events = await watch.events(2)
    assert types_and_versions(events) == (["MODIFIED", "DELETED"], [3, 4])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_watch_from_expired_version_is_410(
    served: RunningHub, watches: list[Watch], transport: str
) -> None:
    """A version older than the kept history: one 410 ERROR, then the end."""
    for index in range(120):  # the fixture keeps 50 changes
        await write(served.hub, "create", f"p{index}")
    watch = await Watch(transport).open(served, "/api/v1/watch/pods?resourceVersion=3")
    watches.append(watch)
    (event,) = await watch.events(1)
    assert event["type"] == "ERROR"
    status = event["object"]
    assert status["kind"] == "Status"
    assert status["code"] == 410 and status["reason"] == "Expired"
    await eventually(lambda: served.hub.watchers == 0)
    if transport == "chunked":
        assert await watch._response.content.read() == b""  # type: ignore[union-attr]
    else:
        await asyncio.wait_for(watch._ws.wait_closed(), TIMEOUT)
        assert watch._ws.close_code == 1000


async def test_history_is_judged_per_collection(
    served: RunningHub, watches: list[Watch]
) -> None:
    """A busy collection does not expire the watchers of a quiet one."""
    await served.hub.collection("quiet").create(pod("q"))  # version 1
    for index in range(120):
        await write(served.hub, "create", f"p{index}")
    watch = await Watch("chunked").open(served, "/api/v1/watch/quiet?resourceVersion=1")
    watches.append(watch)
    await served.hub.collection("quiet").patch("q", {"spec": {"n": 1}})
    (event,) = await watch.events(1)
    assert event["type"] == "MODIFIED"


async def test_future_version_times_out_with_504(http) -> None:
    """A version the hub never reaches is answered 504 Timeout after a short wait."""
    running = await start_hub(Hub(config=HubConfig(future_version_wait=0.2)))
    try:
        url = f"{running.url}/api/v1/watch/pods?resourceVersion=100"
        async with http.get(url) as response:
            assert response.status == 504
            body = await response.json()
            assert body["reason"] == "Timeout"
    finally:
        await running.runner.cleanup()


async def test_future_version_is_served_once_reached(
    served: RunningHub, watches: list[Watch]
) -> None:
    """A version a little ahead is waited for, then served from there."""
    await write(served.hub, "create", "a")
    opening = asyncio.ensure_future(
        Watch("chunked").open(served, "/api/v1/watch/pods?resourceVersion=2")
    )
    await write(served.hub, "create", "b")
    await write(served.hub, "create", "c")
    watch = await asyncio.wait_for(opening, TIMEOUT)
    watches.append(watch)
    (event,) = await watch.events(1)
    assert event["object"]["metadata"]["name"] == "c"


async def test_chunked_headers_and_immediate_start(served: RunningHub, http) -> None:
    """The response says 200 at once, chunked, uncompressed, not to be buffered."""
    headers = {"Accept-Encoding": "gzip, deflate"}
    async with http.get(f"{served.url}/api/v1/watch/pods", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json;stream=watch"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in response.headers
        await write(served.hub, "create", "a")
        (event,) = await read_lines(response, 1)
        assert event["type"] == "ADDED"


async def test_http10_client_gets_lines_until_close(served: RunningHub) -> None:
    """An HTTP/1.0 client gets the same lines on a response ended by closing."""
    host, port = served.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /api/v1/watch/pods?timeoutSeconds=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    await eventually(lambda: served.hub.watchers == 1)
    await write(served.hub, "create", "a")
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read()  # to the end: the hub closes on timeout
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"chunked" not in head.lower()
    (line,) = body.splitlines()
    assert orjson.loads(line)["type"] == "ADDED"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeout_seconds_ends_the_watch_cleanly(
    served: RunningHub, transport: str
) -> None:
    """timeoutSeconds ends the response, or closes the socket with 1000."""
    path = f"{served.url}/api/v1/watch/pods?timeoutSeconds=1"
    if transport == "chunked":
        async with aiohttp.ClientSession() as session:
            async with session.get(path) as response:
                async with asyncio.timeout(TIMEOUT):
                    assert await response.read() == b""
    else:
        async with connect("ws" + path[4:]) as ws:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1000
    await eventually(lambda: served.hub.watchers == 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_vanished_client_is_cleaned_up(
    served: RunningHub, transport: str
) -> None:
    """A watcher whose client vanishes mid-stream is freed."""
    before = served.hub.watchers
    host, port = served.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    if transport == "chunked":
        sock.sendall(b"GET /api/v1/watch/pods HTTP/1.1\r\nHost: x\r\n\r\n")
    else:
        sock.sendall(
            b"GET /api/v1/watch/pods HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
    await eventually(lambda: served.hub.watchers == before + 1)
    await write(served.hub, "create", "a")
    sock.close()  # no goodbye: the socket just goes
    await eventually(lambda: served.hub.watchers == before)


async def test_websocket_origin_check(served: RunningHub) -> None:
    """No Origin or the hub's own is accepted; a foreign Origin gets 403."""
    url = f"{served.ws_url}/api/v1/watch/pods"
    async with connect(url):
        pass
    async with connect(url, origin=served.url):  # type: ignore[arg-type]
        pass
    with pytest.raises(Exception) as caught:
        async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert "403" in str(caught.value)


@pytest.fixture
async def roomy() -> AsyncIterator[RunningHub]:
    """A memory hub that keeps enough history for a thousand writes."""
    running = await start_hub(Hub(MemoryStore(), HubConfig(history=5000)))
    yield running
    await running.runner.cleanup()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_after_drop_loses_and_repeats_nothing(
    roomy: RunningHub, transport: str
) -> None:
    """A watcher dropped mid-way through 1,000 writes resumes with each event once."""
    hub = roomy.hub
    total = 1000
    seen: list[int] = []

    async def writer() -> None:
        for index in range(total):
            await hub.collection("pods").create(pod(f"p{index}"))
            if index % 10 == 0:
                await asyncio.sleep(0)  # let the watcher read between bursts

    task = asyncio.create_task(writer())
    watch = await Watch(transport).open(roomy, "/api/v1/watch/pods?resourceVersion=0")
    events = await watch.events(300)
    seen += [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    watch.drop()
    await watch.close()
    await eventually(lambda: hub.watchers == 0)

    last = seen[-1]
    watch = await Watch(transport).open(
        roomy, f"/api/v1/watch/pods?resourceVersion={last}"
    )
    await task
    events = await watch.events(total - len(seen))
    await watch.close()
    seen += [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert seen == list(range(1, total + 1))


async def test_start_while_writes_pour_in_has_no_seam(
    roomy: RunningHub, watches: list[Watch]
) -> None:
    """Watches started during writes: initial state plus changes equal the end state."""
    hub = roomy.hub
    pods = hub.collection("pods")
    rng = random.Random(7)
    exists: set[str] = set()

    async def writer() -> None:
        for step in range(600):
            name = f"p{rng.randrange(20)}"
            if name not in exists:
                await pods.create(pod(name, step=str(step)))
                exists.add(name)
            elif rng.random() < 0.2:
                await pods.delete(name)
                exists.discard(name)
            else:
                await pods.patch(name, {"metadata": {"labels": {"step": str(step)}}})
            if step % 7 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    for _ in range(5):
        await asyncio.sleep(0)
        watches.append(await Watch("chunked").open(roomy, "/api/v1/watch/pods"))
    await task
    final = {item["metadata"]["name"]: item for item in (await pods.list())["items"]}
    await pods.create(pod("marker"))

    for watch in watches:
        state: dict[str, Any] = {}
        while True:
            (event,) = await watch.events(1)
            obj = event["object"]
            name = obj["metadata"]["name"]
            if name == "marker":
                break
            rv = int(obj["metadata"]["resourceVersion"])
            if event["type"] == "ADDED":
                assert name not in state, f"{name} added twice"
            else:
                assert name in state, f"{event['type']} of unknown {name}"
                assert rv > int(state[name]["metadata"]["resourceVersion"])
            if event["type"] == "DELETED":
                del state[name]
            else:
                state[name] = obj
        assert state == final


async def test_websocket_is_never_compressed(served: RunningHub) -> None:
    """A client offering permessage-deflate gets plain frames: no extension."""
    async with connect(f"{served.ws_url}/api/v1/watch/pods") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
