"""The synchronous client against a real ``watchhub serve`` process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import ApiError, DecodeError, EventType, Transport, TransportError
from clients.sync import SyncClient, SyncWatcher
from hub.core.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
)

from .conftest import TIMEOUT, HubProcess, free_port, spawn_hub

TRANSPORTS: list[Transport] = ["chunked", "websocket", "sse"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub process for the module, with a small history and object limit."""
    tmp: Path = tmp_path_factory.mktemp("sync")
    proc = spawn_hub(
        tmp, "--store", "memory", "--history", "20", "--max-object-size", "4096"
    )
    yield proc
    proc.process.terminate()
    proc.process.wait(TIMEOUT)


@pytest.fixture
def client(hub: HubProcess) -> Iterator[SyncClient]:
    """A sync client of the module's hub."""
    with SyncClient(hub.url, timeout=TIMEOUT) as client:
        yield client


def events(watcher: SyncWatcher, count: int) -> list[tuple[str, str]]:
    """Read ``count`` events as (type, name) pairs."""
    found = []
    for _ in range(count):
        event = next(watcher)
        found.append((event.type.value, event.name))
    return found


def test_sync_client_rest_operations(client: SyncClient) -> None:
    """create, get, list, replace, patch and delete return what the hub stored."""
    created = client.create("rest", {"metadata": {"name": "a", "labels": {"x": "1"}}})
    assert created["metadata"]["resourceVersion"]
    client.create("rest", {"metadata": {"name": "b"}})
    assert client.get("rest", "a") == created
    listed = client.list("rest")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["a", "b"]
    assert listed["metadata"]["resourceVersion"]
    selected = client.list("rest", label_selector="x=1")
    assert [item["metadata"]["name"] for item in selected["items"]] == ["a"]
    by_name = client.list("rest", field_selector="metadata.name=b")
    assert [item["metadata"]["name"] for item in by_name["items"]] == ["b"]

    replaced = client.replace("rest", {**created, "spec": {"port": 80}})
    assert replaced["spec"] == {"port": 80}
    patched = client.patch("rest", "a", {"spec": {"host": "h"}})
    assert patched["spec"] == {"port": 80, "host": "h"}
    version = patched["metadata"]["resourceVersion"]
    deleted = client.delete("rest", "a", resource_version=version)
    assert deleted["metadata"]["name"] == "a"
    assert [i["metadata"]["name"] for i in client.list("rest")["items"]] == ["b"]


def test_sync_client_failures_raise_the_matching_errors(client: SyncClient) -> None:
    """Each failure the hub answers is an ApiError and the matching hub error."""
    stored = client.create("fail", {"metadata": {"name": "a"}})
    with pytest.raises(NotFound) as missing:
        client.get("fail", "nothing")
    assert isinstance(missing.value, ApiError) and missing.value.code == 404
    assert missing.value.name == "nothing"
    with pytest.raises(AlreadyExists):
        client.create("fail", {"metadata": {"name": "a"}})
    client.patch("fail", "a", {"spec": {"n": 1}})
    with pytest.raises(Conflict) as stale:
        client.replace("fail", stored)
    assert stale.value.code == 409 and stale.value.reason == "Conflict"
    with pytest.raises(Conflict):
        client.delete(
            "fail", "a", resource_version=stored["metadata"]["resourceVersion"]
        )
    with pytest.raises(Invalid) as invalid:
        client.create("fail", {"metadata": {"name": "Not A Name"}})
    assert invalid.value.code == 422
    with pytest.raises(BadRequest):
        client.list("fail", label_selector="a in (")
    with pytest.raises(RequestEntityTooLarge):
        client.create("fail", {"metadata": {"name": "big"}, "data": "x" * 10_000})
    with pytest.raises(NotFound):
        client.delete("fail", "nothing")
    with pytest.raises(ValueError):
        client.replace("fail", {"spec": {}})


def test_sync_client_unreachable_hub_raises_transport_error() -> None:
    """A hub that is not there gives TransportError, for REST and for watches."""
    url = f"http://127.0.0.1:{free_port()}"
    with SyncClient(url, timeout=TIMEOUT) as client:
        with pytest.raises(TransportError):
            client.get("pods", "a")
        for transport in TRANSPORTS:
            with pytest.raises(TransportError):
                client.watch("pods", transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_client_watches_and_resumes(
    client: SyncClient, transport: Transport
) -> None:
    """A watch gives initial events then changes, and resumes after a version."""
    collection = f"watch-{transport}"
    client.create(collection, {"metadata": {"name": "a"}})
    with client.watch(collection, resource_version="0", transport=transport) as w:
        assert events(w, 1) == [("ADDED", "a")]
        client.create(collection, {"metadata": {"name": "b"}})
        client.patch(collection, "a", {"spec": {"n": 1}})
        client.delete(collection, "b")
        changes = [next(w) for _ in range(3)]
    assert [(e.type.value, e.name) for e in changes] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert w.stopped

    after = changes[0].resource_version
    with client.watch(collection, resource_version=after, transport=transport) as w:
        assert events(w, 2) == [("MODIFIED", "a"), ("DELETED", "b")]

    with client.watch(collection, "a", resource_version="0", transport=transport) as w:
        assert events(w, 1) == [("ADDED", "a")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_client_watch_ends_on_timeout(
    client: SyncClient, transport: Transport
) -> None:
    """A watch with timeout_seconds ends cleanly after a bookmark."""
    collection = f"timeout-{transport}"
    client.create(collection, {"metadata": {"name": "a"}})
    with client.watch(
        collection,
        resource_version="0",
        timeout_seconds=1,
        allow_bookmarks=True,
        transport=transport,
    ) as watcher:
        seen = list(watcher)
    assert [e.type for e in seen] == [EventType.ADDED, EventType.BOOKMARK]
    assert watcher.stopped


def test_sync_client_watch_of_expired_version_gets_410(client: SyncClient) -> None:
    """A watch from a version older than the history gets one ERROR 410, then ends."""
    first = client.create("expire", {"metadata": {"name": "a"}})
    for n in range(25):
        client.patch("expire", "a", {"spec": {"n": n}})
    since = first["metadata"]["resourceVersion"]
    with client.watch("expire", resource_version=since) as watcher:
        seen = list(watcher)
    assert len(seen) == 1 and seen[0].type is EventType.ERROR
    assert seen[0].object["code"] == 410 and seen[0].object["reason"] == "Expired"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_client_watch_refused_raises_api_error(
    client: SyncClient, transport: Transport
) -> None:
    """A watch with a bad selector is refused with a BadRequest ApiError."""
    with pytest.raises(BadRequest) as refused:
        client.watch("pods", label_selector="a in (", transport=transport)
    assert isinstance(refused.value, ApiError) and refused.value.code == 400
    with pytest.raises(ValueError):
        client.watch("pods", transport="pigeon")  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_watcher_stop_wakes_a_blocked_thread(
    client: SyncClient, transport: Transport
) -> None:
    """stop() from another thread ends an iteration blocked waiting for an event."""
    collection = f"stop-{transport}"
    client.create(collection, {"metadata": {"name": "a"}})
    watcher = client.watch(collection, resource_version="0", transport=transport)
    first = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for event in watcher:
                seen.append(event.name)
                first.set()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    assert first.wait(TIMEOUT)
    watcher.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert seen == ["a"] and errors == []
    watcher.stop()  # idempotent


def test_sync_watcher_broken_stream_raises_decode_error(tmp_path: Path) -> None:
    """A hub that dies under a watch gives DecodeError, not a clean end."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    try:
        with SyncClient(proc.url, timeout=TIMEOUT) as client:
            client.create("pods", {"metadata": {"name": "a"}})
            watcher = client.watch("pods", resource_version="0")
            assert events(watcher, 1) == [("ADDED", "a")]
            proc.process.kill()
            proc.process.wait(TIMEOUT)
            with pytest.raises(DecodeError):
                next(watcher)
            assert watcher.stopped
    finally:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()
