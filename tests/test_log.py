"""The event log and its cursors, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from hub.core.errors import Expired
from hub.core.events import Change, EventType
from hub.core.selectors import FieldSelector, LabelSelector
from hub.watch.cursor import Cursor
from hub.watch.log import EventLog

from .conftest import TIMEOUT


def change(
    rv: int,
    name: str,
    kind: EventType = EventType.ADDED,
    labels: dict[str, str] | None = None,
    prev: dict[str, str] | None = None,
    collection: str = "pods",
) -> Change:
    obj = {
        "metadata": {"name": name, "resourceVersion": str(rv), "labels": labels or {}}
    }
    return Change(rv, collection, name, kind, obj, prev)


def test_position_after_finds_the_next_change() -> None:
    """A cursor from version R starts at the first change after R."""
    log = EventLog(100)
    for rv in range(1, 6):
        log.append(change(rv, f"p{rv}"))
    pods = log.collection("pods")
    cursor = Cursor(pods, pods.position_after(3))  # type: ignore[arg-type]
    assert [c.resource_version for c, _ in cursor.take(10)] == [4, 5]


def test_horizon_moves_as_history_is_trimmed() -> None:
    """Old changes are dropped past the capacity, and the horizon says so."""
    log = EventLog(10)
    for rv in range(1, 31):
        log.append(change(rv, f"p{rv}"))
    pods = log.collection("pods")
    # between the capacity and a quarter more are kept
    assert 10 <= 30 - pods.horizon <= 12
    assert pods.position_after(5) is None
    assert pods.position_after(pods.horizon) is not None


def test_cursor_that_falls_behind_expires() -> None:
    """A cursor whose next change is trimmed away raises Expired."""
    log = EventLog(10)
    log.append(change(1, "a"))
    pods = log.collection("pods")
    slow = Cursor(pods, pods.position_after(0))  # type: ignore[arg-type]
    for rv in range(2, 40):
        log.append(change(rv, f"p{rv}"))
    with pytest.raises(Expired) as caught:
        slow.take(5)
    assert "fell behind" in caught.value.message


def test_history_is_per_collection() -> None:
    """A busy collection does not move the horizon of a quiet one."""
    log = EventLog(10)
    log.append(change(1, "q", collection="quiet"))
    for rv in range(2, 100):
        log.append(change(rv, f"p{rv}"))
    assert log.collection("quiet").position_after(1) is not None
    assert log.collection("pods").position_after(1) is None


TRANSITIONS = [
    # kind, labels before, labels after, expected event for selector app=web
    (EventType.ADDED, None, {"app": "web"}, EventType.ADDED),
    (EventType.ADDED, None, {"app": "db"}, None),
    (EventType.MODIFIED, {"app": "db"}, {"app": "web"}, EventType.ADDED),
    (EventType.MODIFIED, {"app": "web"}, {"app": "web"}, EventType.MODIFIED),
    (EventType.MODIFIED, {"app": "web"}, {"app": "db"}, EventType.DELETED),
    (EventType.MODIFIED, {"app": "db"}, {"app": "cache"}, None),
    (EventType.DELETED, {"app": "web"}, {"app": "web"}, EventType.DELETED),
    (EventType.DELETED, {"app": "db"}, {"app": "db"}, None),
]


@pytest.mark.parametrize(("kind", "before", "after", "expected"), TRANSITIONS)
def test_selector_transitions(
    kind: EventType,
    before: dict[str, str] | None,
    after: dict[str, str],
    expected: EventType | None,
) -> None:
    """Entering a selector is ADDED, leaving it DELETED, staying outside nothing."""
    log = EventLog(10)
    cursor = Cursor(log.collection("pods"), 0, labels=LabelSelector.parse("app=web"))
    assert cursor.classify(change(1, "a", kind, after, before)) is expected


def test_field_selector_filters_by_name() -> None:
    """A cursor on one name sees only that object's changes."""
    log = EventLog(10)
    pods = log.collection("pods")
    cursor = Cursor(pods, 0, fields=FieldSelector("b"))
    for rv, name in enumerate(["a", "b", "c", "b"], start=1):
        log.append(change(rv, name))
    assert [c.resource_version for c, _ in cursor.take(10)] == [2, 4]


async def test_single_name_cursor_is_woken_only_by_its_name() -> None:
    """A watcher of one name waits through changes of other names."""
    log = EventLog(100)
    pods = log.collection("pods")
    cursor = Cursor(pods, pods.end, fields=FieldSelector("b"))
    waiting = asyncio.ensure_future(cursor.next(10, TIMEOUT))
    await asyncio.sleep(0)
    log.append(change(1, "a"))
    await asyncio.sleep(0)
    assert not waiting.done()
    log.append(change(2, "b"))
    found = await asyncio.wait_for(waiting, TIMEOUT)
    assert [c.resource_version for c, _ in found] == [2]
    cursor.close()
    assert not pods._single  # released once its last watcher ends


async def test_closing_a_cursor_wakes_its_waiter() -> None:
    """close() ends a wait in next() at once, with nothing found."""
    log = EventLog(10)
    pods = log.collection("pods")
    cursor = Cursor(pods, pods.end)
    waiting = asyncio.ensure_future(cursor.next(10, None))
    await asyncio.sleep(0)
    cursor.close()
    assert await asyncio.wait_for(waiting, TIMEOUT) == []


async def test_next_times_out_empty() -> None:
    """next() returns an empty batch when its timeout passes with no change."""
    log = EventLog(10)
    pods = log.collection("pods")
    assert await Cursor(pods, pods.end).next(10, 0.01) == []


def test_frames_are_encoded_once_and_shared() -> None:
    """Every watcher gets the very same bytes for one change and type."""
    c = change(1, "a")
    first = c.frame(EventType.ADDED, "ndjson")
    assert c.frame(EventType.ADDED, "ndjson") is first
    assert first.endswith(b"\n")
    assert c.frame(EventType.DELETED, "ws").startswith(b'{"type":"DELETED"')
    sse = c.frame(EventType.ADDED, "sse")
    assert sse.startswith(b"id: 1\nevent: ADDED\ndata: {") and sse.endswith(b"\n\n")
