"""Watch semantics beyond the basics: selectors, bookmarks, timeouts, SSE,
initial events, slow and dead watchers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect

from hub import Hub, HubConfig
from hub.api import ServerConfig
from hub.store import MemoryStore

from .conftest import TIMEOUT, RunningHub, eventually, read_lines, start_hub


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def rv_of(event: dict[str, Any]) -> int:
    return int(event["object"]["metadata"]["resourceVersion"])


@pytest.fixture
async def quick() -> AsyncIterator[RunningHub]:
    """A hub with short bookmark, keep-alive and ping intervals."""
    running = await start_hub(
        Hub(MemoryStore(), HubConfig(bookmark_interval=0.2, min_watch_timeout=0.3)),
        ServerConfig(sse_keepalive=0.2, ws_heartbeat=0.2, write_timeout=1.0),
    )
    yield running
    await running.runner.cleanup()


# Selectors


@pytest.mark.parametrize(
    "query",
    ["labelSelector=a%20in%20(b", "labelSelector=%3Dx", "fieldSelector=spec.x%3D1"],
)
async def test_malformed_selector_is_400_before_streaming(
    served: RunningHub, http: aiohttp.ClientSession, query: str
) -> None:
    """A malformed selector answers 400 BadRequest on every transport."""
    url = f"{served.url}/api/v1/watch/pods?{query}"
    async with http.get(url) as response:
        assert response.status == 400
        body = await response.json()
        assert body["reason"] == "BadRequest"
    async with http.get(url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 400
    with pytest.raises(Exception) as caught:
        async with connect(served.ws_url + url[len(served.url) :]):
            pass
    assert "400" in str(caught.value)
    assert served.hub.watchers == 0


async def test_label_selector_transitions_over_http(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Into, within and out of a selector: ADDED, MODIFIED, DELETED; outside nothing."""
    pods = served.hub.collection("pods")
    await pods.create(pod("a", app="db"))
    url = f"{served.url}/api/v1/watch/pods?resourceVersion=1&labelSelector=app%3Dweb"
    async with http.get(url) as response:
        await pods.patch("a", {"spec": {"n": 1}})
        await pods.patch("a", {"metadata": {"labels": {"app": "web"}}})
        await pods.patch("a", {"spec": {"n": 2}})
        await pods.patch("a", {"metadata": {"labels": {"app": "db"}}})
        await pods.patch("a", {"spec": {"n": 3}})
        await pods.create(pod("z", app="web"))
        events = await read_lines(response, 4)
    assert [(e["type"], rv_of(e)) for e in events] == [
        ("ADDED", 3),
        ("MODIFIED", 4),
        ("DELETED", 5),
        ("ADDED", 7),
    ]
    assert events[2]["object"]["metadata"]["labels"] == {"app": "db"}


async def test_list_with_selectors(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A list filters by label and field selectors."""
    pods = served.hub.collection("pods")
    await pods.create(pod("a", app="web"))
    await pods.create(pod("b", app="db"))
    await pods.create(pod("c"))
    for query, names in [
        ("labelSelector=app", ["a", "b"]),
        ("labelSelector=!app", ["c"]),
        ("labelSelector=app%20notin%20(web)", ["b", "c"]),
        ("fieldSelector=metadata.name!%3Da", ["b", "c"]),
        ("fieldSelector=metadata.name%3Da&labelSelector=app%3Ddb", []),
    ]:
        async with http.get(f"{served.url}/api/v1/pods?{query}") as response:
            body = await response.json()
        assert sorted(i["metadata"]["name"] for i in body["items"]) == names, query


# Bookmarks and timeouts


async def test_bookmarks_arrive_on_the_interval(
    quick: RunningHub, http: aiohttp.ClientSession
) -> None:
    """allowWatchBookmarks gives BOOKMARKs at the hub's version; others get none."""
    pods = quick.hub.collection("pods")
    await pods.create(pod("a"))
    url = f"{quick.url}/api/v1/watch/pods?resourceVersion=1&timeoutSeconds=1"
    async with http.get(url + "&allowWatchBookmarks=true") as with_marks:
        async with http.get(url) as without:
            await pods.create(pod("b"))
            events = await read_lines(with_marks, 3)
            assert events[0]["type"] == "ADDED"
            marks = events[1:]
            assert [e["type"] for e in marks] == ["BOOKMARK", "BOOKMARK"]
            assert all(rv_of(e) == 2 for e in marks)
            assert marks[0]["object"] == {"metadata": {"resourceVersion": "2"}}
            async with asyncio.timeout(TIMEOUT):
                rest = await without.read()
            assert [orjson.loads(line)["type"] for line in rest.splitlines()] == [
                "ADDED"
            ]


async def test_bookmark_before_timeout_end(http: aiohttp.ClientSession) -> None:
    """A watch ending on its timeout sends a last BOOKMARK first."""
    running = await start_hub(Hub(config=HubConfig(bookmark_interval=60)))
    try:
        await running.hub.collection("pods").create(pod("a"))
        url = (
            f"{running.url}/api/v1/watch/pods?resourceVersion=1"
            "&allowWatchBookmarks=true&timeoutSeconds=1"
        )
        async with http.get(url) as response:
            async with asyncio.timeout(TIMEOUT):
                body = await response.read()
        events = [orjson.loads(line) for line in body.splitlines()]
        assert [e["type"] for e in events] == ["BOOKMARK"]
        assert rv_of(events[0]) == 1
    finally:
        await running.runner.cleanup()


async def test_resume_from_bookmark_loses_nothing(
    quick: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A filtered watcher resumes from a bookmark and gets every later match."""
    pods = quick.hub.collection("pods")
    base = (
        f"{quick.url}/api/v1/watch/pods?labelSelector=app%3Dweb&allowWatchBookmarks=1"
    )
    async with http.get(base + "&resourceVersion=0") as response:
        for index in range(5):
            await pods.create(pod(f"other{index}", app="db"))
        (mark,) = await read_lines(response, 1)
    assert mark["type"] == "BOOKMARK" and rv_of(mark) == 5
    await pods.create(pod("w1", app="web"))
    await pods.create(pod("o9", app="db"))
    await pods.create(pod("w2", app="web"))
    async with http.get(base + f"&resourceVersion={rv_of(mark)}") as response:
        events = [e for e in await read_lines(response, 3) if e["type"] != "BOOKMARK"]
        while len(events) < 2:
            events += [
                e for e in await read_lines(response, 1) if e["type"] != "BOOKMARK"
            ]
    assert [(e["object"]["metadata"]["name"], rv_of(e)) for e in events] == [
        ("w1", 6),
        ("w2", 8),
    ]


async def test_server_timeout_is_drawn_between_min_and_twice(
    quick: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Without timeoutSeconds a watch ends after the server's own random limit."""
    started = time.monotonic()
    async with http.get(f"{quick.url}/api/v1/watch/pods") as response:
        async with asyncio.timeout(TIMEOUT):
            assert await response.read() == b""
    assert time.monotonic() - started >= 0.3


# Initial events


@pytest.mark.parametrize("start", ["", "&resourceVersion=2"])
async def test_send_initial_events_ends_with_a_bookmark(
    served: RunningHub, http: aiohttp.ClientSession, start: str
) -> None:
    """sendInitialEvents: ADDED for the state, a marked BOOKMARK, then changes."""
    pods = served.hub.collection("pods")
    await pods.create(pod("a"))
    await pods.create(pod("b"))
    url = f"{served.url}/api/v1/watch/pods?sendInitialEvents=true{start}"
    async with http.get(url) as response:
        initial = await read_lines(response, 3)
        await pods.create(pod("c"))
        (after,) = await read_lines(response, 1)
    assert [e["type"] for e in initial] == ["ADDED", "ADDED", "BOOKMARK"]
    mark = initial[2]["object"]["metadata"]
    assert mark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert mark["resourceVersion"] == "2"
    assert (after["type"], rv_of(after)) == ("ADDED", 3)


# Server-Sent Events


async def sse_records(reader: asyncio.StreamReader, count: int) -> list[dict[str, str]]:
    """Read ``count`` SSE records (comments kept as ``comment``) from a raw stream."""
    records: list[dict[str, str]] = []
    record: dict[str, str] = {}
    async with asyncio.timeout(TIMEOUT):
        while len(records) < count:
            line = (await reader.readline()).decode()
            if not line:
                break
            line = line.rstrip("\n")
            if line == "":
                if record:
                    records.append(record)
                record = {}
                continue
            if line.startswith(":"):
                records.append({"comment": line[1:].strip()})
                continue
            field, _, value = line.partition(": ")
            record[field] = value
    return records


async def open_sse(
    running: RunningHub, path: str, headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    host, port = running.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {path} HTTP/1.0\r\nHost: x\r\n"
        f"Accept: text/event-stream\r\n{headers}\r\n".encode()
    )
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def test_sse_events_have_ids_and_types(quick: RunningHub) -> None:
    """Each SSE record has the resourceVersion as id, the type as event, JSON data."""
    pods = quick.hub.collection("pods")
    reader, writer, head = await open_sse(
        quick, "/api/v1/watch/pods?resourceVersion=0&timeoutSeconds=5"
    )
    try:
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"content-type: text/event-stream" in head.lower()
        await pods.create(pod("a"))
        await pods.patch("a", {"spec": {"n": 1}})
        records = [r for r in await sse_records(reader, 4) if "data" in r][:2]
        assert [(r["id"], r["event"]) for r in records] == [
            ("1", "ADDED"),
            ("2", "MODIFIED"),
        ]
        data = orjson.loads(records[1]["data"])
        assert data["type"] == "MODIFIED" and rv_of(data) == 2
        # an idle stream gets keep-alive comments
        records = await sse_records(reader, 1)
        assert "comment" in records[0]
    finally:
        writer.close()


async def test_sse_last_event_id_resumes(quick: RunningHub) -> None:
    """Last-Event-ID resumes like resourceVersion does."""
    pods = quick.hub.collection("pods")
    for name in ("a", "b", "c"):
        await pods.create(pod(name))
    reader, writer, _ = await open_sse(
        quick, "/api/v1/watch/pods", "Last-Event-ID: 1\r\n"
    )
    try:
        records = [r for r in await sse_records(reader, 3) if "data" in r]
        assert [r["id"] for r in records][:2] == ["2", "3"]
    finally:
        writer.close()


async def test_sse_expired_is_an_error_record(http: aiohttp.ClientSession) -> None:
    """Resuming SSE from a version older than the history gives a 410 ERROR record."""
    running = await start_hub(Hub(MemoryStore(history=5), HubConfig(history=5)))
    try:
        pods = running.hub.collection("pods")
        for index in range(20):
            await pods.create(pod(f"p{index}"))
        reader, writer, _ = await open_sse(
            running, "/api/v1/watch/pods", "Last-Event-ID: 2\r\n"
        )
        records = [r for r in await sse_records(reader, 2) if "data" in r]
        writer.close()
        assert records[0]["event"] == "ERROR"
        status = orjson.loads(records[0]["data"])["object"]
        assert (status["code"], status["reason"]) == (410, "Expired")
    finally:
        await running.runner.cleanup()


# Slow and dead watchers


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_slow_watcher_is_ended_and_costs_no_memory(
    http: aiohttp.ClientSession,
) -> None:
    """A watcher that stops reading while 100,000 events are written is ended
    with a 410, memory stays bounded, and a fast watcher gets every event."""
    total = 100_000
    running = await start_hub(
        Hub(MemoryStore(history=1000), HubConfig(history=1000)),
        ServerConfig(write_timeout=1.0),
    )
    hub = running.hub
    pods = hub.collection("pods")
    payload = "x" * 1000
    for index in range(100):
        await pods.create({"metadata": {"name": f"p{index}"}, "data": payload})
    start = hub.resource_version

    host, port = running.url.removeprefix("http://").split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(
        f"GET /api/v1/watch/pods?resourceVersion={start} HTTP/1.1\r\n"
        "Host: x\r\n\r\n".encode()
    )
    fast = await http.get(f"{running.url}/api/v1/watch/pods?resourceVersion={start}")
    await eventually(lambda: hub.watchers == 2)

    received: list[int] = []
    errors: list[Any] = []

    async def read_fast() -> None:
        while len(received) < total:
            line = await fast.content.readline()
            event = orjson.loads(line)
            if event["type"] == "ERROR":
                errors.append(event)
                return
            received.append(rv_of(event))

    reader = asyncio.create_task(read_fast())
    measured: dict[int, int] = {}
    try:
        for step in range(total):
            await pods.patch(f"p{step % 100}", {"step": step})
            if step % 200 == 0:
                # Flow control for the fast watcher only: it is never more
                # than a few hundred events behind the writes.
                await eventually(
                    lambda behind=step - 400: len(received) >= behind or bool(errors)
                )
            if step in (20_000, total - 1):
                measured[step] = rss_bytes()
        await asyncio.wait_for(reader, TIMEOUT)
    finally:
        reader.cancel()
        fast.close()
        slow.close()
        await running.runner.cleanup()

    assert errors == []
    assert received == list(range(start + 1, start + total + 1))
    assert hub.slow_watchers == 1
    growth = measured[total - 1] - measured[20_000]
    # 80,000 events of 1 KB buffered for the slow watcher would be 80 MB.
    assert growth < 25 * 1024 * 1024, f"memory grew by {growth / 2**20:.1f} MiB"


async def test_websocket_peer_that_stops_answering_pings_is_dropped(
    quick: RunningHub,
) -> None:
    """A WebSocket peer that never answers pings is dropped and its watcher freed."""
    before = quick.hub.watchers
    host, port = quick.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(
            b"GET /api/v1/watch/pods HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await eventually(lambda: quick.hub.watchers == before + 1)
        # The peer stays connected but silent: no pong ever comes back.
        await eventually(lambda: quick.hub.watchers == before)
    finally:
        sock.close()


async def test_websocket_client_that_answers_pings_stays(quick: RunningHub) -> None:
    """A live WebSocket client outlasts many ping intervals."""
    url = f"{quick.ws_url}/api/v1/watch/pods?timeoutSeconds=2"
    async with connect(url) as ws:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1000  # ended by its timeout, not dropped


# Where history starts, and what Kubernetes clients send


async def test_list_then_watch_of_a_quiet_collection_is_not_expired(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A watch from a list's version of an empty collection survives other writes."""
    async with http.get(f"{served.url}/api/v1/fresh") as response:
        listed = await response.json()
    await served.hub.collection("other").create(pod("o"))
    rv = listed["metadata"]["resourceVersion"]
    async with http.get(f"{served.url}/api/v1/watch/fresh?resourceVersion={rv}") as w:
        await served.hub.collection("fresh").create(pod("f"))
        (event,) = await read_lines(w, 1)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "f")


async def test_collection_first_written_late_resumes_from_the_start(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A collection whose first write came late is watched from version 1."""
    for index in range(5):
        await served.hub.collection("other").create(pod(f"o{index}"))
    await served.hub.collection("late").create(pod("a"))
    async with http.get(f"{served.url}/api/v1/watch/late?resourceVersion=1") as w:
        (event,) = await read_lines(w, 1)
    assert (event["type"], rv_of(event)) == ("ADDED", 6)


async def test_sse_last_event_id_wins_over_the_url_version(quick: RunningHub) -> None:
    """An EventSource reconnecting to its first URL resumes after its last id."""
    pods = quick.hub.collection("pods")
    for name in ("a", "b", "c"):
        await pods.create(pod(name))
    reader, writer, _ = await open_sse(
        quick, "/api/v1/watch/pods?resourceVersion=1", "Last-Event-ID: 2\r\n"
    )
    try:
        records = [r for r in await sse_records(reader, 2) if "data" in r]
        assert [r["id"] for r in records][:1] == ["3"]
    finally:
        writer.close()


async def test_timeout_seconds_zero_means_the_server_limit(
    quick: RunningHub, http: aiohttp.ClientSession
) -> None:
    """timeoutSeconds=0 takes the server's own limit instead of ending at once."""
    started = time.monotonic()
    url = f"{quick.url}/api/v1/watch/pods?timeoutSeconds=0"
    async with http.get(url) as response:
        async with asyncio.timeout(TIMEOUT):
            assert await response.read() == b""
    assert time.monotonic() - started >= 0.3


async def test_list_at_a_version(http: aiohttp.ClientSession) -> None:
    """A list's resourceVersion is checked: 400 malformed, 504 never reached."""
    running = await start_hub(Hub(config=HubConfig(future_version_wait=0.2)))
    try:
        await running.hub.collection("pods").create(pod("a"))
        url = f"{running.url}/api/v1/pods?resourceVersion="
        async with http.get(url + "1") as response:
            assert response.status == 200
        async with http.get(url + "abc") as response:
            assert response.status == 400
        async with http.get(url + "99") as response:
            assert response.status == 504
            assert (await response.json())["reason"] == "Timeout"
    finally:
        await running.runner.cleanup()
