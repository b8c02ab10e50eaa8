"""A watcher's cursor: its place in a collection's log, and its filters.

A cursor holds no events of its own. It remembers the position of the next
change it has to look at, reads forward in the shared log when woken, and
decides per change whether, and as which event type, its watcher receives it.
A cursor that falls out of the kept history raises
:class:`~hub.core.errors.Expired`; the fast cursors beside it are not affected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..core.errors import Expired
from ..core.events import Change, EventType
from ..core.selectors import FieldSelector, LabelSelector
from .log import CollectionLog

__all__ = ["Cursor", "CursorStatistics", "Delivery"]

#: A change and the event type it has for one watcher.
Delivery = tuple[Change, EventType]

_ADDED = EventType.ADDED
_MODIFIED = EventType.MODIFIED
_DELETED = EventType.DELETED

# How much later than asked a kept timer may fire (seconds): the same deadline,
# asked for as a timeout a moment later, lands a few microseconds off.
_TIMER_SLACK = 0.001


@dataclass(frozen=True, slots=True)
class CursorStatistics:
    """A snapshot of one cursor: where it is and how far behind."""

    position: int
    lag: int
    initial: int


class Cursor:
    """
    One watcher's place in a collection's log.

    Args:
        log: The collection's log.
        position: The position of the first change to look at.
        initial: Objects to send first as ADDED events (a snapshot of the
            state at ``position``), already filtered.
        labels: The watcher's label selector.
        fields: The watcher's field selector.
    """

    def __init__(
        self,
        log: CollectionLog,
        position: int,
        *,
        initial: list[Change] | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> None:
        self.log = log
        self.position = position
        self.labels = labels or LabelSelector()
        self.fields = fields or FieldSelector()
        self._initial = initial or []
        self._single = self.fields.single
        self._waiter = log.acquire(self._single)
        self._closed = False
        self._future: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: The resourceVersion of the last change this cursor has passed.
        self.resource_version = 0

    @property
    def caught_up(self) -> bool:
        """True when nothing kept is left for this cursor to look at."""
        return not self._initial and self.position >= self.log.end

    def classify(self, change: Change) -> EventType | None:
        """Return the event type ``change`` has for this watcher, or ``None``."""
        if not self.fields.matches(change.name):
            return None
        labels = self.labels
        if labels.empty:
            return change.type
        kind = change.type
        if kind is _ADDED:
            return _ADDED if labels.matches(change.labels) else None
        before = change.prev_labels
        was = labels.matches(before if before is not None else change.labels)
        if kind is _DELETED:
            return _DELETED if was else None
        now = labels.matches(change.labels)
        if was:
            return _MODIFIED if now else _DELETED
        return _ADDED if now else None

    def take(self, limit: int) -> list[Delivery]:
        """
        Return up to ``limit`` deliveries available now, moving the cursor past them.

        Raises:
            Expired: the cursor fell out of the kept history.
        """
        if self._closed:
            return []
        if self._initial:
            batch = self._initial[:limit]
            del self._initial[:limit]
            return [(change, _ADDED) for change in batch]
        found: list[Delivery] = []
        classify = self.classify
        while len(found) < limit:
            changes = self.log.changes(self.position, max(limit, 64))
            if changes is None:
                raise Expired(
                    f"watcher fell behind: the changes of {self.log.collection} "
                    f"after resourceVersion {self.resource_version} are no longer "
                    "kept; list again",
                    kind=self.log.collection,
                )
            if not changes:
                break
            for change in changes:
                self.position += 1
                self.resource_version = change.resource_version
                kind = classify(change)
                if kind is not None:
                    found.append((change, kind))
                    if len(found) == limit:
                        break
        return found

    async def next(self, limit: int, timeout: float | None) -> list[Delivery]:
        """
        Wait for deliveries and return up to ``limit`` of them.

        Returns an empty list when ``timeout`` seconds pass without one.

        Raises:
            Expired: the cursor fell out of the kept history.
        """
        found = self.take(limit)
        if found or self._closed or timeout is not None and timeout <= 0:
            return found
        if timeout is not None:
            self._arm(asyncio.get_running_loop(), timeout)
        try:
            while not found and not self._closed:
                self._future = self._waiter.waiter()
                if await self._future:
                    break  # the timer fired
                found = self.take(limit)
        finally:
            self._future = None
        return found

    def _arm(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        # A watch waits again and again for the same deadline (its timeout, its
        # next bookmark): one timer serves every wait until it fires, instead
        # of a timer made and cancelled per event, which the profile of a busy
        # fan-out showed as the largest cost after the socket writes. A timer
        # that fires early only makes the stream look again.
        when = loop.time() + timeout
        if self._timer is not None:
            if self._timer.when() <= when + _TIMER_SLACK:
                return
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._future is not None and not self._future.done():
            self._future.set_result(True)  # type: ignore[arg-type]

    def close(self) -> None:
        """Release what the cursor holds in the log; idempotent."""
        if not self._closed:
            self._closed = True
            self.log.release(self._single)
            self._initial = []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._future is not None and not self._future.done():
                self._future.set_result(None)

    def statistics(self) -> CursorStatistics:
        """Return where the cursor is and how far behind."""
        return CursorStatistics(
            self.position, max(0, self.log.end - self.position), len(self._initial)
        )
