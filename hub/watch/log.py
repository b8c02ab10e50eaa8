"""The event log: recent changes of each collection, and its current state.

One :class:`EventLog` per hub holds a :class:`CollectionLog` per collection.
Each keeps a bounded, ordered list of its most recent changes, the current
state (the last change of every live object) for lists and initial events, and
a *horizon*: the resourceVersion at or after which its history is complete.
History is judged per collection, so a busy collection does not expire the
watchers of a quiet one.

Watchers are cursors into these lists (see :mod:`hub.watch.cursor`): appending
a change costs the same whatever the number of watchers, and a watcher that
falls out of the kept history is told so (410 Expired) instead of making the
hub buffer for it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.events import Change, EventType

__all__ = ["CollectionLog", "EventLog", "LogStatistics", "Wakeup"]

# The kept history is trimmed in steps of this fraction of its capacity, so
# that trimming (a list deletion) is amortized over many appends.
_TRIM_SLACK = 0.25


class Wakeup:
    """
    Wakes every coroutine waiting for the next change, once.

    Each waiter holds its own future, so that one waiter can be woken alone
    (a watch being stopped) and a cancelled waiter disturbs no other.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def waiter(self) -> asyncio.Future[None]:
        """Return a future that the next :meth:`notify` resolves."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def notify(self) -> None:
        """Resolve every waiting future."""
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def __len__(self) -> int:
        return len(self._waiters)


@dataclass(frozen=True, slots=True)
class LogStatistics:
    """A snapshot of one collection's log."""

    collection: str
    objects: int
    changes: int
    capacity: int
    horizon: int
    oldest: int
    newest: int


class CollectionLog:
    """
    The kept changes and current state of one collection.

    Positions are absolute: position ``p`` is the ``p``-th change ever appended
    to this log since the hub started, whether or not it is still kept.
    """

    def __init__(self, collection: str, capacity: int, horizon: int = 0) -> None:
        self.collection = collection
        self.capacity = capacity
        self.horizon = horizon
        self.state: dict[str, Change] = {}
        self._changes: list[Change] = []
        self._base = 0
        self._wakeup = Wakeup()
        self._single: dict[str, list[Any]] = {}

    # Reading

    @property
    def end(self) -> int:
        """The position after the newest change."""
        return self._base + len(self._changes)

    @property
    def start(self) -> int:
        """The position of the oldest kept change."""
        return self._base

    def position_after(self, resource_version: int) -> int | None:
        """
        Return the position of the first change after ``resource_version``.

        ``None`` when the kept history no longer covers every change after it.
        """
        if resource_version < self.horizon:
            return None
        index = bisect.bisect_right(
            self._changes, resource_version, key=lambda change: change.resource_version
        )
        return self._base + index

    def changes(self, position: int, limit: int) -> list[Change] | None:
        """
        Return up to ``limit`` changes from ``position`` on.

        ``None`` when the change at ``position`` is no longer kept.
        """
        if position < self._base:
            return None
        index = position - self._base
        return self._changes[index : index + limit]

    def acquire(self, name: str | None = None) -> Wakeup:
        """
        Return the event that the next change (of ``name``, if given) sets.

        A watcher of one name is woken only by changes of that name; it calls
        :meth:`release` when it ends.
        """
        if name is None:
            return self._wakeup
        entry = self._single.get(name)
        if entry is None:
            entry = self._single[name] = [Wakeup(), 0]
        entry[1] += 1
        return entry[0]

    def release(self, name: str | None) -> None:
        """Let go of what :meth:`acquire` gave for ``name``."""
        if name is None:
            return
        entry = self._single.get(name)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._single[name]

    def statistics(self) -> LogStatistics:
        """Return the occupancy of this log."""
        return LogStatistics(
            self.collection,
            len(self.state),
            len(self._changes),
            self.capacity,
            self.horizon,
            self._changes[0].resource_version if self._changes else 0,
            self._changes[-1].resource_version if self._changes else 0,
        )

    # Writing

    def append(self, change: Change) -> None:
        """Append a committed change and wake the watchers waiting for one."""
        if change.type is EventType.DELETED:
            self.state.pop(change.name, None)
        else:
            self.state[change.name] = change
        self._changes.append(change)
        if len(self._changes) > self.capacity * (1 + _TRIM_SLACK):
            drop = len(self._changes) - self.capacity
            self.horizon = self._changes[drop - 1].resource_version
            del self._changes[:drop]
            self._base += drop
        self._wakeup.notify()
        single = self._single.get(change.name)
        if single is not None:
            single[0].notify()

    def expire(self, resource_version: int) -> None:
        """
        Forget the kept history: changes up to ``resource_version`` were lost.

        Every cursor on this log is then answered 410 Expired, those at its end
        too (they had not seen the lost changes either); watches that start
        later may resume from ``resource_version`` on. The state is kept.
        """
        self.horizon = max(self.horizon, resource_version)
        # One position past the end, so that no existing cursor is at or after it.
        self._base += len(self._changes) + 1
        self._changes = []
        self._wakeup.notify()
        for waker, _ in self._single.values():
            waker.notify()

    def load(self, objects: Iterable[Change], history: Iterable[Change]) -> None:
        """Fill a new log with the current state and the kept history."""
        for change in objects:
            self.state[change.name] = change
        changes = list(history)
        if len(changes) > self.capacity:
            dropped = changes[-self.capacity - 1]
            self.horizon = max(self.horizon, dropped.resource_version)
            changes = changes[-self.capacity :]
        self._changes = changes


class EventLog:
    """
    The event logs of every collection, fed by the store in resourceVersion order.

    Attributes:
        resource_version: The newest resourceVersion applied, hub-wide.
        capacity: How many changes each collection keeps.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.resource_version = 0
        self._collections: dict[str, CollectionLog] = {}
        self._progress = asyncio.Event()

    def collection(self, name: str) -> CollectionLog:
        """Return the log of one collection, made empty if it has none yet."""
        log = self._collections.get(name)
        if log is None:
            # A collection without a log has had no change since the store's
            # snapshot, which held none of its history: every change it ever
            # had is here, so a watch may start from any version.
            log = CollectionLog(name, self.capacity, 0)
            self._collections[name] = log
        return log

    def find(self, name: str) -> CollectionLog | None:
        """Return the log of one collection, or ``None`` if none was written to."""
        return self._collections.get(name)

    def collections(self) -> list[str]:
        """Return the names of the collections that have a log."""
        return sorted(self._collections)

    def append(self, change: Change) -> None:
        """Apply one committed change; the store calls this in order."""
        self.collection(change.collection).append(change)
        self.resource_version = change.resource_version
        self._progress.set()
        self._progress.clear()

    def expire(self, collection: str, resource_version: int) -> None:
        """Tell one collection's watchers that its changes up to a version were lost."""
        self.collection(collection).expire(resource_version)

    def load(
        self,
        resource_version: int,
        objects: dict[str, list[dict[str, Any]]],
        history: dict[str, list[Change]],
        horizons: dict[str, int],
    ) -> None:
        """Fill the log from a store's snapshot."""
        self.resource_version = resource_version
        for name in set(objects) | set(history) | set(horizons):
            log = CollectionLog(name, self.capacity, horizons.get(name, 0))
            log.load(
                (_as_change(name, obj) for obj in objects.get(name, ())),
                history.get(name, ()),
            )
            self._collections[name] = log

    async def wait_for(self, resource_version: int, timeout: float) -> bool:
        """Wait until the log reaches ``resource_version``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.resource_version < resource_version:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def statistics(self) -> list[LogStatistics]:
        """Return the occupancy of every collection's log."""
        return [self._collections[name].statistics() for name in self.collections()]


def _as_change(collection: str, obj: dict[str, Any]) -> Change:
    metadata = obj["metadata"]
    return Change(
        int(metadata["resourceVersion"]),
        collection,
        metadata["name"],
        EventType.ADDED,
        obj,
    )
