"""The store contract, held by every backend, and the SQLite store's durability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hub.core.errors import (
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    StoreUnavailable,
)
from hub.core.events import Change, EventType
from hub.store import DEFAULT_HISTORY, MemoryStore, Store
from hub.store.sqlite import TRIM_BATCH, SQLiteStore

from .conftest import TIMEOUT, eventually

ROOT = Path(__file__).resolve().parents[1]

StoreFactory = Callable[..., Awaitable[Store]]


# Fixtures and helpers


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(kind: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[Store] = []

    async def make(history: int = DEFAULT_HISTORY) -> Store:
        store: Store
        if kind == "memory":
            store = MemoryStore(history=history)
        else:
            store = SQLiteStore(str(tmp_path / "hub.db"), history=history)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()


def body(
    name: str, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata, "spec": spec}


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def fields(change: Change) -> tuple[Any, ...]:
    return (
        change.resource_version,
        change.collection,
        change.name,
        change.type,
        change.object,
        change.prev_labels,
    )


def history_fields(history: dict[str, list[Change]]) -> dict[str, list[Any]]:
    return {name: [fields(c) for c in changes] for name, changes in history.items()}


async def fill(store: Store, collection: str, count: int) -> list[Change]:
    return [await store.create(collection, body(f"o{i}")) for i in range(count)]


# The contract, for every backend


async def test_open_and_close_are_idempotent(make_store: StoreFactory) -> None:
    """Opening or closing twice is the same as once."""
    store = await make_store()
    await store.open()
    await store.create("pods", body("a"))
    await store.close()
    await store.close()


async def test_create_then_get_and_list(store: Store) -> None:
    """A created object is stored with server metadata and can be read back."""
    change = await store.create("pods", body("a", {"app": "web"}, replicas=1))

    assert change.resource_version == 1
    assert change.type is EventType.ADDED
    assert (change.collection, change.name) == ("pods", "a")
    assert change.prev_labels is None
    metadata = change.object["metadata"]
    assert metadata["resourceVersion"] == "1"
    assert metadata["generation"] == 1
    assert metadata["uid"] and metadata["creationTimestamp"]
    assert await store.get("pods", "a") == change.object
    assert await store.list("pods") == ([change.object], 1)
    assert await store.list("services") == ([], 1)


async def test_get_missing_raises_not_found(store: Store) -> None:
    """Reading an object that does not exist raises NotFound."""
    await store.create("pods", body("a"))
    with pytest.raises(NotFound):
        await store.get("pods", "b")
    with pytest.raises(NotFound):
        await store.get("services", "a")


async def test_create_existing_raises_already_exists(store: Store) -> None:
    """Creating a name twice raises AlreadyExists and keeps the first object."""
    first = await store.create("pods", body("a", replicas=1))
    with pytest.raises(AlreadyExists):
        await store.create("pods", body("a", replicas=2))

    assert await store.get("pods", "a") == first.object
    assert store.resource_version == 1


async def test_update_without_precondition_replaces(store: Store) -> None:
    """An update without a precondition replaces the object at a new version."""
    await store.create("pods", body("a", {"v": "1"}, replicas=1))
    change = await store.update("pods", "a", body("a", {"v": "2"}, replicas=2))

    assert change.resource_version == 2
    assert change.type is EventType.MODIFIED
    assert change.prev_labels == {"v": "1"}
    assert change.object["spec"] == {"replicas": 2}
    assert await store.get("pods", "a") == change.object


async def test_update_with_current_precondition_succeeds(store: Store) -> None:
    """An update whose precondition is the current version goes through."""
    created = await store.create("pods", body("a", replicas=1))
    change = await store.update(
        "pods", "a", body("a", replicas=2), precondition=created.resource_version
    )
    assert rv_of(await store.get("pods", "a")) == change.resource_version == 2


async def test_update_with_stale_precondition_raises_conflict(store: Store) -> None:
    """A stale precondition raises Conflict and changes nothing."""
    await store.create("pods", body("a", replicas=1))
    current = await store.update("pods", "a", body("a", replicas=2))
    seen: list[Change] = []
    store.subscribe(seen.append)

    with pytest.raises(Conflict) as caught:
        await store.update("pods", "a", body("a", replicas=3), precondition=1)

    assert not isinstance(caught.value, AlreadyExists)
    assert await store.get("pods", "a") == current.object
    assert store.resource_version == 2
    assert seen == []


async def test_update_missing_raises_not_found(store: Store) -> None:
    """Updating an object that does not exist raises NotFound."""
    with pytest.raises(NotFound):
        await store.update("pods", "a", body("a"))
    assert store.resource_version == 0


async def test_delete_missing_raises_not_found(store: Store) -> None:
    """Deleting an object that does not exist raises NotFound."""
    await store.create("pods", body("a"))
    with pytest.raises(NotFound):
        await store.delete("pods", "b")
    assert store.resource_version == 1


async def test_delete_returns_last_state_at_new_rv(store: Store) -> None:
    """A delete returns the object's last state at a new resourceVersion."""
    created = await store.create("pods", body("a", {"app": "web"}, replicas=1))
    change = await store.delete("pods", "a")

    assert change.type is EventType.DELETED
    assert change.resource_version == 2
    assert change.prev_labels == {"app": "web"}
    assert change.object["spec"] == created.object["spec"]
    expected = dict(created.object["metadata"], resourceVersion="2")
    assert change.object["metadata"] == expected
    with pytest.raises(NotFound):
        await store.get("pods", "a")
    assert await store.list("pods") == ([], 2)


async def test_delete_with_stale_precondition_raises_conflict(store: Store) -> None:
    """A delete with a stale precondition raises Conflict and keeps the object."""
    await store.create("pods", body("a"))
    current = await store.update("pods", "a", body("a", replicas=2))
    with pytest.raises(Conflict):
        await store.delete("pods", "a", precondition=1)
    assert await store.get("pods", "a") == current.object

    change = await store.delete("pods", "a", precondition=2)
    assert change.resource_version == 3


async def test_resource_versions_increase_by_one_from_one(store: Store) -> None:
    """Every write, in any collection, takes the next hub-wide resourceVersion."""
    assert store.resource_version == 0
    changes = [
        await store.create("pods", body("a")),
        await store.create("services", body("a")),
        await store.update("pods", "a", body("a", replicas=2)),
        await store.delete("services", "a"),
        await store.create("services", body("a")),
    ]
    assert [change.resource_version for change in changes] == [1, 2, 3, 4, 5]
    assert store.resource_version == 5
    assert rv_of(await store.get("services", "a")) == 5


async def test_generation_moves_only_when_content_changes(store: Store) -> None:
    """The generation moves on when content outside metadata changes, only then."""
    await store.create("pods", body("a", replicas=1))
    relabelled = await store.update("pods", "a", body("a", {"x": "y"}, replicas=1))
    assert relabelled.object["metadata"]["generation"] == 1

    scaled = await store.update("pods", "a", body("a", {"x": "y"}, replicas=2))
    assert scaled.object["metadata"]["generation"] == 2

    same = await store.update("pods", "a", body("a", replicas=2))
    assert same.object["metadata"]["generation"] == 2


async def test_update_keeps_uid_and_creation_timestamp(store: Store) -> None:
    """An update keeps the server's uid and creation time, whatever the body says."""
    created = await store.create("pods", body("a"))
    forged = body("a", replicas=2)
    forged["metadata"].update(
        uid="forged",
        creationTimestamp="1970-01-01T00:00:00Z",
        resourceVersion="99",
        generation=7,
    )
    change = await store.update("pods", "a", forged)

    metadata, original = change.object["metadata"], created.object["metadata"]
    assert metadata["uid"] == original["uid"]
    assert metadata["creationTimestamp"] == original["creationTimestamp"]
    assert metadata["resourceVersion"] == "2"
    assert metadata["generation"] == 2


async def test_listeners_get_every_change_once_in_order(store: Store) -> None:
    """Each listener gets every committed change once, in order, and no refusals."""
    first: list[Change] = []
    second: list[Change] = []
    store.subscribe(first.append)
    store.subscribe(second.append)

    returned = [await store.create("pods", body(f"p{i}")) for i in range(3)]
    with pytest.raises(AlreadyExists):
        await store.create("pods", body("p0"))
    returned.append(await store.update("pods", "p1", body("p1", replicas=2)))
    store.unsubscribe(second.append)
    returned.append(await store.delete("pods", "p2"))
    returned.append(await store.create("services", body("s")))

    assert [change.resource_version for change in first] == [1, 2, 3, 4, 5, 6]
    assert all(got is sent for got, sent in zip(first, returned, strict=True))
    assert second == first[:4]


async def test_listener_failure_does_not_fail_the_write(store: Store) -> None:
    """A listener that raises is logged; the write and other listeners go on."""
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    store.subscribe(seen.append)
    change = await store.create("pods", body("a"))
    assert seen == [change]


async def test_refused_write_changes_nothing(store: Store) -> None:
    """When build raises, the error propagates and nothing is stored or published."""
    seen: list[Change] = []
    store.subscribe(seen.append)

    def build(old: dict[str, Any] | None, rv: int) -> Change:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await store._commit("pods", "a", build)

    assert store.resource_version == 0
    assert seen == []
    assert await store.list("pods") == ([], 0)
    assert await store.events_since("pods", 0) == []
    assert (await store.create("pods", body("a"))).resource_version == 1


async def test_events_since_returns_later_changes(store: Store) -> None:
    """events_since returns a collection's changes after a version, intact."""
    sent: list[Change] = []
    store.subscribe(sent.append)
    await store.create("pods", body("a", {"app": "web"}))
    await store.create("services", body("s"))
    await store.update("pods", "a", body("a", replicas=3))
    await store.create("pods", body("b"))
    await store.delete("pods", "a")
    pods = [change for change in sent if change.collection == "pods"]

    since_zero = await store.events_since("pods", 0)
    assert [fields(change) for change in since_zero] == [fields(c) for c in pods]
    assert [c.object_json for c in since_zero] == [c.object_json for c in pods]
    assert [c.prev_labels for c in since_zero] == [None, {"app": "web"}, None, {}]

    since_three = await store.events_since("pods", 3)
    assert [change.resource_version for change in since_three] == [4, 5]
    assert await store.events_since("pods", 5) == []
    assert await store.events_since("nodes", 0) == []


async def test_events_since_expires_before_the_horizon(
    make_store: StoreFactory,
) -> None:
    """With history 5, a version before the last dropped one raises Expired."""
    store = await make_store(history=5)
    await fill(store, "pods", 8)

    kept = await store.events_since("pods", 3)
    assert [change.resource_version for change in kept] == [4, 5, 6, 7, 8]
    for too_old in (0, 1, 2):
        with pytest.raises(Expired):
            await store.events_since("pods", too_old)
    assert (await store.snapshot()).horizons == {"pods": 3}


async def test_history_is_judged_per_collection(make_store: StoreFactory) -> None:
    """A busy collection's compaction does not expire a quiet collection's watch."""
    store = await make_store(history=5)
    quiet = await store.create("quiet", body("q"))
    await fill(store, "busy", 20)

    assert [fields(c) for c in await store.events_since("quiet", 0)] == [fields(quiet)]
    with pytest.raises(Expired):
        await store.events_since("busy", 15)
    assert len(await store.events_since("busy", 16)) == 5
    assert (await store.snapshot()).horizons == {"busy": 16}


async def test_snapshot_holds_objects_history_and_horizons(
    make_store: StoreFactory,
) -> None:
    """A snapshot holds the version, live objects, kept history and horizons."""
    store = await make_store(history=3)
    sent: list[Change] = []
    store.subscribe(sent.append)
    await fill(store, "pods", 4)
    await store.update("pods", "o1", body("o1", replicas=2))
    await store.create("services", body("s"))
    await store.delete("services", "s")

    snapshot = await store.snapshot()

    assert snapshot.resource_version == 7
    pods = sorted(snapshot.objects["pods"], key=lambda obj: obj["metadata"]["name"])
    assert pods == [await store.get("pods", f"o{i}") for i in range(4)]
    assert snapshot.objects.get("services", []) == []
    assert history_fields(snapshot.history) == {
        "pods": [fields(c) for c in sent[2:5]],
        "services": [fields(c) for c in sent[5:]],
    }
    assert snapshot.horizons == {"pods": 2}


# The SQLite store


async def test_sqlite_location_is_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's location is its file's absolute path."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("hub.db")
    assert store.kind == "sqlite"
    assert store.location == str(tmp_path / "hub.db")


async def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    """Objects, the counter, history and horizons persist across close and open."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path, history=3)
    await store.open()
    await fill(store, "pods", 5)
    await store.update("pods", "o4", body("o4", {"a": "b"}, replicas=2))
    await store.delete("pods", "o0")
    await store.create("services", body("s"))
    before = await store.snapshot()
    await store.close()

    again = SQLiteStore(path, history=3)
    await again.open()
    try:
        after = await again.snapshot()
        assert again.resource_version == after.resource_version == 8
        assert after.objects == before.objects
        assert after.horizons == before.horizons == {"pods": 4}
        assert history_fields(after.history) == history_fields(before.history)
        with pytest.raises(Expired):
            await again.events_since("pods", 3)
        assert (await again.create("pods", body("new"))).resource_version == 9
    finally:
        await again.close()


async def test_sqlite_counter_survives_an_empty_history(tmp_path: Path) -> None:
    """The counter carries on from where it was even with no events left."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path)
    await store.open()
    await fill(store, "pods", 3)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events")
    conn.close()

    await store.open()
    try:
        assert store.resource_version == 3
        assert (await store.create("pods", body("next"))).resource_version == 4
    finally:
        await store.close()


async def test_sqlite_smaller_history_trims_on_open(tmp_path: Path) -> None:
    """Opening with a smaller history trims each collection and moves its horizon."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path, history=10)
    await store.open()
    await fill(store, "pods", 8)
    await store.close()

    store = SQLiteStore(path, history=3)
    await store.open()
    try:
        assert (await store.snapshot()).horizons == {"pods": 5}
        assert len(await store.events_since("pods", 5)) == 3
        with pytest.raises(Expired):
            await store.events_since("pods", 4)
        await store.create("pods", body("next"))
        assert (await store.snapshot()).horizons == {"pods": 6}
    finally:
        await store.close()


async def failing_store(tmp_path: Path, when: str) -> SQLiteStore:
    """Open a SQLite store holding pods/a whose event inserts fail ``when``."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path)
    await store.open()
    await store.create("pods", body("a"))
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TRIGGER fail BEFORE INSERT ON events {when}"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    conn.close()
    await store.open()
    return store


async def test_sqlite_driver_error_becomes_store_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing write raises StoreUnavailable, is logged, and leaves no trace."""
    store = await failing_store(tmp_path, "")
    try:
        seen: list[Change] = []
        store.subscribe(seen.append)
        with caplog.at_level(logging.ERROR, logger="watchhub.store"):
            with pytest.raises(StoreUnavailable) as caught:
                await store.create("pods", body("b"))

        assert isinstance(caught.value.__cause__, sqlite3.Error)
        assert "disk on fire" in caught.value.message
        assert (caught.value.kind, caught.value.name) == ("pods", "b")
        assert any(r.name == "watchhub.store" for r in caplog.records)
        assert store.resource_version == 1
        assert seen == []
        with pytest.raises(NotFound):
            await store.get("pods", "b")
    finally:
        await store.close()

    await store.open()
    try:
        assert store.resource_version == 1
        objects, _ = await store.list("pods")
        assert [obj["metadata"]["name"] for obj in objects] == ["a"]
    finally:
        await store.close()


async def test_sqlite_closed_store_is_unavailable(tmp_path: Path) -> None:
    """Calls on a store that is not open raise StoreUnavailable."""
    store = SQLiteStore(str(tmp_path / "hub.db"))
    with pytest.raises(StoreUnavailable):
        await store.get("pods", "a")
    with pytest.raises(StoreUnavailable):
        await store.create("pods", body("a"))
    with pytest.raises(StoreUnavailable):
        await store.events_since("pods", 0)


async def test_sqlite_open_in_missing_directory_is_unavailable(tmp_path: Path) -> None:
    """A file whose directory does not exist cannot be opened."""
    store = SQLiteStore(str(tmp_path / "missing" / "hub.db"))
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_sqlite_second_store_on_one_file_is_refused(tmp_path: Path) -> None:
    """While one store has the file open, another cannot open it nor disturb it."""
    path = str(tmp_path / "hub.db")
    first = SQLiteStore(path)
    await first.open()
    try:
        await first.create("pods", body("a"))
        with pytest.raises(StoreUnavailable) as caught:
            await SQLiteStore(path).open()
        assert "in use by another hub" in caught.value.message
        assert path + ".lock" in caught.value.message

        assert (await first.create("pods", body("b"))).resource_version == 2
        assert [rv_of(obj) for obj in (await first.list("pods"))[0]] == [1, 2]
    finally:
        await first.close()

    second = SQLiteStore(path)
    await second.open()
    try:
        assert second.resource_version == 2
    finally:
        await second.close()


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without the metadata that differs between two stores."""
    metadata = {
        key: value
        for key, value in obj["metadata"].items()
        if key not in ("uid", "creationTimestamp")
    }
    return dict(obj, metadata=metadata)


def outcome(result: Change | BaseException) -> tuple[Any, ...]:
    if isinstance(result, BaseException):
        return (type(result).__name__,)
    change = fields(result)
    return (*change[:4], comparable(result.object), result.prev_labels)


async def apply(
    store: Store, op: str, collection: str, name: str, n: int
) -> Change | BaseException:
    try:
        if op == "create":
            return await store.create(collection, body(name, {"n": str(n % 3)}, n=n))
        if op == "update":
            return await store.update(collection, name, body(name, n=n % 2))
        return await store.delete(collection, name)
    except (NotFound, Conflict) as exc:
        return exc


async def state(store: Store) -> tuple[Any, ...]:
    """Everything a reader can see of a store, without uids and timestamps."""
    snapshot = await store.snapshot()
    objects = {
        collection: sorted(map(comparable, objs), key=lambda o: o["metadata"]["name"])
        for collection, objs in snapshot.objects.items()
        if objs
    }
    history = {
        collection: [outcome(change) for change in changes]
        for collection, changes in snapshot.history.items()
    }
    since = {}
    for collection, horizon in snapshot.horizons.items():
        changes = await store.events_since(collection, horizon)
        since[collection] = [outcome(change) for change in changes]
        with pytest.raises(Expired):
            await store.events_since(collection, horizon - 1)
    return snapshot.resource_version, objects, history, snapshot.horizons, since


async def test_sqlite_behaves_as_memory_across_reopens(tmp_path: Path) -> None:
    """A random workload gives the same results and state as the memory store."""
    memory = MemoryStore(history=5)
    sqlite = SQLiteStore(str(tmp_path / "hub.db"), history=5)
    await sqlite.open()
    rng = random.Random(7)
    try:
        for n in range(600):
            collection = rng.choice(["quiet", "busy", "busy", "busy", "busy"])
            name = f"o{rng.randrange(8)}"
            op = rng.choice(["create", "create", "update", "update", "delete"])
            expected = outcome(await apply(memory, op, collection, name, n))
            assert outcome(await apply(sqlite, op, collection, name, n)) == expected
            if n % 97 == 0:
                await sqlite.close()
                await sqlite.open()
                assert await state(sqlite) == await state(memory)
        assert await state(sqlite) == await state(memory)
        assert (await sqlite.snapshot()).horizons["busy"] > TRIM_BATCH
    finally:
        await sqlite.close()


async def test_sqlite_deletes_dropped_changes_in_batches(tmp_path: Path) -> None:
    """Dropped changes leave the file in batches; reads never return them."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path, history=5)
    await store.open()
    for n in range(5 + TRIM_BATCH + 7):
        change = await store.create("pods", body(f"o{n}"))
        horizon = max(0, change.resource_version - 5)
        expected = {"pods": horizon} if horizon else {}
        assert (await store.snapshot()).horizons == expected
        assert len(await store.events_since("pods", horizon)) == min(5, n + 1)
    await store.close()

    with sqlite3.connect(path) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        (stored,) = conn.execute("SELECT rv FROM horizons").fetchone()
    conn.close()
    assert rows == 5 + 7
    assert stored == TRIM_BATCH


# The SQLite store's group commit and checkpoints


async def test_sqlite_concurrent_writes_commit_together_in_call_order(
    tmp_path: Path,
) -> None:
    """Concurrent writes take gap-free versions in call order; refusals leave none."""
    store = SQLiteStore(str(tmp_path / "hub.db"), history=50)
    await store.open()
    try:
        await store.create("pods", body("a", replicas=1))
        await store.create("pods", body("b"))
        await store.create("pods", body("gone"))
        seen: list[Change] = []
        counters: list[int] = []
        store.subscribe(seen.append)
        store.subscribe(lambda change: counters.append(store.resource_version))

        results = await asyncio.gather(
            store.create("pods", body("new", replicas=1)),
            store.create("pods", body("new", replicas=2)),
            store.create("pods", body("a")),
            store.update("pods", "a", body("a", replicas=2), precondition=1),
            store.update("pods", "a", body("a", replicas=3), precondition=1),
            store.update("pods", "a", body("a", replicas=4), precondition=5),
            store.delete("pods", "gone"),
            store.update("pods", "gone", body("gone")),
            store.delete("pods", "missing"),
            store.create("pods", body("gone", replicas=9)),
            store.delete("pods", "b", precondition=1),
            store.create("services", body("s")),
            return_exceptions=True,
        )

        # Each write sees the ones called before it, refused or not.
        got = [
            r.resource_version if isinstance(r, Change) else type(r) for r in results
        ]
        assert got == [
            *(4, AlreadyExists, AlreadyExists, 5, Conflict, 6),
            *(7, NotFound, NotFound, 8, Conflict, 9),
        ]
        committed = [r for r in results if isinstance(r, Change)]
        assert len(seen) == len(committed)
        assert all(got is sent for got, sent in zip(seen, committed, strict=True))
        # One transaction: every change was published after all of them committed.
        assert counters == [9] * 6
        assert store.resource_version == 9

        assert (await store.get("pods", "new"))["spec"] == {"replicas": 1}
        assert (await store.get("pods", "a"))["spec"] == {"replicas": 4}
        assert rv_of(await store.get("pods", "b")) == 2
        assert rv_of(await store.get("pods", "gone")) == 8
        since = await store.events_since("pods", 3)
        assert [change.resource_version for change in since] == [4, 5, 6, 7, 8]
        before = await state(store)
    finally:
        await store.close()

    await store.open()
    try:
        assert store.resource_version == 9
        assert await state(store) == before
    finally:
        await store.close()


async def write(
    store: Store, op: str, collection: str, name: str, n: int, precondition: int | None
) -> Change | BaseException:
    try:
        if op == "create":
            return await store.create(collection, body(name, {"n": str(n % 3)}, n=n))
        if op == "update":
            return await store.update(
                collection, name, body(name, n=n % 2), precondition=precondition
            )
        return await store.delete(collection, name, precondition=precondition)
    except (NotFound, Conflict) as exc:
        return exc


async def test_sqlite_concurrent_batches_behave_as_one_by_one(tmp_path: Path) -> None:
    """Random concurrent batches give what the memory store gives one by one."""
    memory = MemoryStore(history=5)
    sqlite = SQLiteStore(str(tmp_path / "hub.db"), history=5)
    await sqlite.open()
    sent: list[Change] = []
    sqlite.subscribe(sent.append)
    rng = random.Random(11)
    try:
        for n in range(30):
            ops = []
            for i in range(rng.randrange(1, 48)):
                collection = rng.choice(["quiet", "busy", "busy", "busy", "busy"])
                name = f"o{rng.randrange(8)}"
                op = rng.choice(["create", "create", "update", "update", "delete"])
                # The version before the batch: a second write that names it in
                # the same batch conflicts with the first.
                try:
                    current: int | None = rv_of(await memory.get(collection, name))
                except NotFound:
                    current = rng.randrange(1, 5)
                precondition = rng.choice([None, current])
                ops.append((op, collection, name, n * 100 + i, precondition))

            expected = [outcome(await write(memory, *op)) for op in ops]
            results = await asyncio.gather(*(write(sqlite, *op) for op in ops))
            assert [outcome(result) for result in results] == expected

        assert [c.resource_version for c in sent] == list(range(1, len(sent) + 1))
        assert sqlite.resource_version == memory.resource_version == len(sent)
        assert (await sqlite.snapshot()).horizons["busy"] > TRIM_BATCH
        assert await state(sqlite) == await state(memory)
        await sqlite.close()
        await sqlite.open()
        assert await state(sqlite) == await state(memory)
    finally:
        await sqlite.close()


async def test_sqlite_driver_error_in_a_batch_fails_only_its_write(
    tmp_path: Path,
) -> None:
    """A write whose statements fail mid-batch is rolled back alone, with no version."""
    # The object's row is written before the event's, which then fails.
    store = await failing_store(tmp_path, "WHEN NEW.name = 'bad'")
    try:
        seen: list[Change] = []
        store.subscribe(seen.append)
        results = await asyncio.gather(
            store.create("pods", body("b")),
            store.create("pods", body("bad")),
            store.update("pods", "a", body("a", replicas=2)),
            store.create("pods", body("c")),
            return_exceptions=True,
        )

        b, bad, a, c = results
        assert isinstance(bad, StoreUnavailable)
        assert "disk on fire" in bad.message
        assert (bad.kind, bad.name) == ("pods", "bad")
        assert isinstance(bad.__cause__, sqlite3.Error)
        changes = [x for x in (b, a, c) if isinstance(x, Change)]
        assert [change.resource_version for change in changes] == [2, 3, 4]
        assert seen == changes
        with pytest.raises(NotFound):
            await store.get("pods", "bad")
        assert (await store.create("pods", body("d"))).resource_version == 5
    finally:
        await store.close()

    await store.open()
    try:
        objects, at = await store.list("pods")
        assert at == 5
        assert [obj["metadata"]["name"] for obj in objects] == ["a", "b", "c", "d"]
        assert [c.name for c in await store.events_since("pods", 1)] == list("bacd")
    finally:
        await store.close()


async def test_sqlite_write_cancelled_before_its_commit_is_dropped(
    tmp_path: Path,
) -> None:
    """A write whose caller is cancelled while it waits for its batch never commits."""
    store = SQLiteStore(str(tmp_path / "hub.db"))
    await store.open()
    try:
        seen: list[Change] = []
        store.subscribe(seen.append)
        dropped = asyncio.create_task(store.create("pods", body("dropped")))
        kept = asyncio.create_task(store.create("pods", body("kept")))
        # Both tasks queue their write before this one resumes; the flush
        # that commits the batch runs after it.
        await asyncio.sleep(0)
        dropped.cancel()

        assert (await kept).resource_version == 1
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert [change.name for change in seen] == ["kept"]
        with pytest.raises(NotFound):
            await store.get("pods", "dropped")
        assert (await store.create("pods", body("next"))).resource_version == 2
    finally:
        await store.close()


async def test_sqlite_close_commits_queued_writes(tmp_path: Path) -> None:
    """Writes queued when the store closes are committed and acknowledged."""
    path = str(tmp_path / "hub.db")
    store = SQLiteStore(path)
    await store.open()
    tasks = [asyncio.create_task(store.create("pods", body(f"p{i}"))) for i in range(3)]
    # The writes are queued, their flush not yet run.
    await asyncio.sleep(0)
    await store.close()

    changes = await asyncio.gather(*tasks)
    assert [change.resource_version for change in changes] == [1, 2, 3]
    with pytest.raises(StoreUnavailable):
        await store.create("pods", body("late"))
    await store.open()
    try:
        assert store.resource_version == 3
        assert len((await store.list("pods"))[0]) == 3
    finally:
        await store.close()


def main_file_objects(path: str, scratch: Path, collection: str) -> int | None:
    """Count a collection's objects in the database file alone, without its log."""
    copy = scratch / "main-only.db"
    for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    try:
        with contextlib.closing(sqlite3.connect(copy)) as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM objects WHERE collection = ?", (collection,)
            ).fetchone()
    except sqlite3.Error:
        # Copied halfway through a checkpoint, or before the first one.
        return None
    return int(count)


async def test_sqlite_log_is_checkpointed_while_open_and_on_close(
    tmp_path: Path,
) -> None:
    """The log reaches the main file while the store is open, and wholly on close."""
    path = str(tmp_path / "hub.db")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = SQLiteStore(path)
    await store.open()
    try:
        await asyncio.gather(*(store.create("pods", body(f"p{i}")) for i in range(50)))
        await eventually(lambda: main_file_objects(path, scratch, "pods") == 50)
        await fill(store, "services", 20)
    finally:
        await store.close()

    assert not Path(f"{path}-wal").exists()
    assert main_file_objects(path, scratch, "pods") == 50
    assert main_file_objects(path, scratch, "services") == 20


# Eight concurrent writers that print each acknowledged write as "<rv> <name>",
# until the process is killed.
WRITER = """
import asyncio, sys
from hub.store.sqlite import SQLiteStore

async def write(store, w):
    i = 0
    while True:
        name = f"p{w}-{i}"
        change = await store.create("pods", {"metadata": {"name": name}, "spec": {}})
        sys.stdout.write(f"{change.resource_version} {name}\\n")
        sys.stdout.flush()
        i += 1

async def main(path):
    store = SQLiteStore(path, history=50)
    await store.open()
    await asyncio.gather(*(write(store, w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""


async def read_acks(
    process: asyncio.subprocess.Process, count: int, deadline: float
) -> dict[str, int]:
    assert process.stdout is not None and process.stderr is not None
    loop = asyncio.get_running_loop()
    acked: dict[str, int] = {}
    while len(acked) < count:
        line = await asyncio.wait_for(process.stdout.readline(), deadline - loop.time())
        if not line:
            error = await process.stderr.read()
            pytest.fail(f"writer ended after {len(acked)} writes: {error.decode()}")
        rv, name = line.decode().split()
        acked[name] = int(rv)
    return acked


async def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """Every write acknowledged before a kill -9 is there when the file reopens."""
    path = str(tmp_path / "hub.db")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        path,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    try:
        acked = await read_acks(process, 200, deadline)
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL

    store = SQLiteStore(path, history=50)
    await store.open()
    try:
        for name, rv in acked.items():
            assert rv_of(await store.get("pods", name)) == rv
        counter = store.resource_version
        assert counter >= max(acked.values())
        # Creates only, so every committed write left exactly one object.
        objects, at = await store.list("pods")
        assert at == counter
        assert sorted(rv_of(obj) for obj in objects) == list(range(1, counter + 1))
        assert len(await store.events_since("pods", counter - 50)) == 50
        after = await store.create("pods", body("after"))
        assert after.resource_version == counter + 1
    finally:
        await store.close()
