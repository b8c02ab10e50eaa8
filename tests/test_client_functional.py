"""The async client against a real hub: each operation, failure and transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clients import ApiError, Client, DecodeError, EventType, Transport, TransportError
from hub import Hub, HubConfig
from hub.core.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
    Timeout,
)
from hub.store import MemoryStore

from .conftest import RunningHub, free_port, start_hub

TRANSPORTS: list[Transport] = ["chunked", "websocket", "sse"]


@pytest.fixture
async def hub() -> AsyncIterator[RunningHub]:
    """A memory hub with a small history, object limit and future-version wait."""
    config = HubConfig(history=20, max_object_size=4096, future_version_wait=0.2)
    running = await start_hub(Hub(MemoryStore(history=20), config))
    yield running
    await running.runner.cleanup()


@pytest.fixture
async def client(hub: RunningHub) -> AsyncIterator[Client]:
    """An async client of the hub."""
    async with Client(hub.url) as client:
        yield client


async def test_client_operations_against_a_hub(client: Client) -> None:
    """create, get, list, replace, patch and delete do what they say."""
    created = await client.create(
        "pods", {"metadata": {"name": "a", "labels": {"x": "1"}}}
    )
    await client.create("pods", {"metadata": {"name": "b"}})
    assert await client.get("pods", "a") == created
    listed = await client.list("pods")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert listed["metadata"]["resourceVersion"] == "2"
    selected = await client.list("pods", label_selector="x=1")
    assert [i["metadata"]["name"] for i in selected["items"]] == ["a"]
    named = await client.list("pods", field_selector="metadata.name!=a")
    assert [i["metadata"]["name"] for i in named["items"]] == ["b"]

    replaced = await client.replace("pods", {**created, "spec": {"port": 80}})
    assert replaced["metadata"]["resourceVersion"] == "3"
    patched = await client.patch("pods", "a", {"spec": {"host": "h"}})
    assert patched["spec"] == {"port": 80, "host": "h"}
    gone = await client.delete("pods", "a", resource_version="4")
    assert gone["spec"] == {"port": 80, "host": "h"}
    assert [i["metadata"]["name"] for i in (await client.list("pods"))["items"]] == [
        "b"
    ]


async def test_client_failures_against_a_hub(client: Client) -> None:
    """Each failure code of the hub raises its ApiError, also the hub's class."""
    stored = await client.create("pods", {"metadata": {"name": "a"}})
    await client.patch("pods", "a", {"spec": {"n": 1}})
    cases = [
        (client.get("pods", "zz"), NotFound, 404),
        (client.patch("pods", "zz", {"spec": {}}), NotFound, 404),
        (client.delete("pods", "zz"), NotFound, 404),
        (client.create("pods", {"metadata": {"name": "a"}}), AlreadyExists, 409),
        (client.replace("pods", stored), Conflict, 409),
        (client.delete("pods", "a", resource_version="1"), Conflict, 409),
        (client.create("pods", {"metadata": {"name": "A!"}}), Invalid, 422),
        (client.list("pods", label_selector="a in ("), BadRequest, 400),
        (
            client.create("pods", {"metadata": {"name": "big"}, "x": "y" * 8000}),
            RequestEntityTooLarge,
            413,
        ),
    ]
    for call, kind, code in cases:
        with pytest.raises(kind) as failed:
            await call
        assert isinstance(failed.value, ApiError)
        assert failed.value.code == code and failed.value.status["kind"] == "Status"


async def test_client_unreachable_hub_raises_transport_error() -> None:
    """A hub that is not listening gives TransportError for REST and watches."""
    async with Client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(TransportError):
            await client.list("pods")
        for transport in TRANSPORTS:
            with pytest.raises(TransportError):
                await client.watch("pods", transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_watch_on_each_transport(
    client: Client, transport: Transport
) -> None:
    """A watch gets initial events, changes, resumes after a version, and times out."""
    await client.create("pods", {"metadata": {"name": "a"}})
    async with await client.watch(
        "pods", resource_version="0", transport=transport
    ) as w:
        first = await anext(w)
        await client.patch("pods", "a", {"spec": {"n": 1}})
        await client.delete("pods", "a")
        second, third = await anext(w), await anext(w)
    kinds = [e.type for e in (first, second, third)]
    assert kinds == [EventType.ADDED, EventType.MODIFIED, EventType.DELETED]

    resumed = await client.watch(
        "pods",
        resource_version=second.resource_version,
        allow_bookmarks=True,
        timeout_seconds=1,
        transport=transport,
    )
    async with resumed:
        events = [event async for event in resumed]
    assert [e.type for e in events] == [EventType.DELETED, EventType.BOOKMARK]
    assert events[-1].resource_version == third.resource_version


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_watch_failures_on_each_transport(
    client: Client, transport: Transport
) -> None:
    """Refusals raise ApiError; an expired version is a 410 ERROR event."""
    with pytest.raises(BadRequest):
        await client.watch("pods", label_selector="a in (", transport=transport)
    with pytest.raises(Timeout) as future:
        await client.watch("pods", resource_version="999", transport=transport)
    assert future.value.code == 504

    await client.create("pods", {"metadata": {"name": "a"}})
    for n in range(25):
        await client.patch("pods", "a", {"spec": {"n": n}})
    async with await client.watch(
        "pods", resource_version="1", transport=transport
    ) as w:
        events = [event async for event in w]
    assert len(events) == 1 and events[0].type is EventType.ERROR
    assert events[0].object["code"] == 410


async def test_client_watch_broken_by_the_hub_raises_decode_error(
    hub: RunningHub, client: Client
) -> None:
    """A hub that goes away under a chunked watch gives DecodeError, not a clean end."""
    await client.create("pods", {"metadata": {"name": "a"}})
    watcher = await client.watch("pods", resource_version="0")
    async with watcher:
        assert (await anext(watcher)).name == "a"
        # Abort the server's side of every connection: a broken network.
        for protocol in list(hub.runner.server.connections):  # type: ignore[union-attr]
            protocol.transport.abort()  # type: ignore[union-attr]
        with pytest.raises(DecodeError):
            await anext(watcher)
