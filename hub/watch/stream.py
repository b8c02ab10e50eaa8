"""One watch from start to end, independent of the transport that carries it.

A :class:`WatchStream` wraps a watcher's cursor with what the protocol adds
around the events themselves: the ERROR event that ends a watch whose
resourceVersion is too old or that fell behind, bookmarks, the bookmark that
marks the end of the initial events, and the watch's timeout. Transports ask it
for the next batch and write the batch's frames in one write; the in-process
watcher asks for one event at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..core import codec
from ..core.errors import Expired, HubError
from ..core.events import Change, Event, EventType
from .cursor import Cursor

__all__ = ["INITIAL_EVENTS_END", "Item", "WatchStream", "bookmark", "encode"]

logger = logging.getLogger("watchhub.watch")

#: The annotation on the bookmark that ends the initial events, as in Kubernetes.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

#: What a stream yields: a change with its event type for this watcher, or an
#: event made for this watcher alone (BOOKMARK, ERROR).
Item = tuple[Change, EventType] | Event


def bookmark(resource_version: int, *, initial_end: bool = False) -> Event:
    """Return a BOOKMARK event at ``resource_version``."""
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return Event(EventType.BOOKMARK, {"metadata": metadata})


def encode(items: list[Item], framing: str) -> list[bytes]:
    """Return the frames of ``items``; changes reuse their shared encoding."""
    frames = []
    for item in items:
        if isinstance(item, tuple):
            change, kind = item
            frames.append(change.frame(kind, framing))
        else:
            frames.append(
                codec.frame_event(
                    item.type.value, item.object, framing, item.resource_version
                )
            )
    return frames


class WatchStream:
    """
    Everything one watch sends, as batches.

    Args:
        cursor: The watcher's cursor, or ``None`` when the watch fails at once.
        hub_version: Returns the hub's newest applied resourceVersion.
        error: An error to send as the only event (a too old resourceVersion).
        timeout: Seconds after which the watch ends cleanly.
        bookmark_interval: Seconds between bookmarks; ``None`` for none.
        initial_end: The resourceVersion of the initial events' snapshot, when
            the watcher asked for a bookmark that marks their end.
    """

    def __init__(
        self,
        cursor: Cursor | None,
        hub_version: Callable[[], int],
        *,
        error: HubError | None = None,
        timeout: float | None = None,
        bookmark_interval: float | None = None,
        initial_end: int | None = None,
    ) -> None:
        self.cursor = cursor
        self._hub_version = hub_version
        self._error = error
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._deadline = now + timeout if timeout is not None else None
        self._interval = bookmark_interval
        self._next_bookmark = now + bookmark_interval if bookmark_interval else None
        self._initial_end = initial_end
        self._done = False
        #: A number that names the watch in logs.
        self.id = 0
        #: Why the stream ended: "timeout", "expired" (at its start), "slow"
        #: (fell behind), "stopped" or "".
        self.end_reason = ""
        #: The transport that carries the stream, for metrics.
        self.transport = "inprocess"
        #: The monotonic clock when the stream opened, for latency metrics.
        self.opened_at = time.monotonic()
        #: Called with the stream and each batch it hands out, for metrics.
        self.on_batch: Callable[[WatchStream, list[Item]], None] | None = None

    @property
    def done(self) -> bool:
        """True once the stream has sent its last item."""
        return self._done

    async def next(
        self, limit: int = 1000, idle: float | None = None
    ) -> list[Item] | None:
        """
        Wait for the next batch of at most ``limit`` items; ``None`` at the end.

        With ``idle``, return an empty batch when that many seconds pass with
        nothing to send, so that a transport can keep the connection alive.
        """
        until = None if idle is None else self._loop.time() + idle
        while not self._done:
            batch = await self._next(limit, until)
            if batch:
                if self.on_batch is not None:
                    self.on_batch(self, batch)
                return batch
            if until is not None and self._loop.time() >= until:
                return []
        return None

    async def _next(self, limit: int, until: float | None) -> list[Item]:
        if self._error is not None or self.cursor is None:
            return self._fail(self._error)
        cursor = self.cursor
        if self._initial_end is not None and not cursor.statistics().initial:
            rv, self._initial_end = self._initial_end, None
            return [bookmark(rv, initial_end=True)]

        now = self._loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._finish("timeout")
            if self._next_bookmark is not None and cursor.caught_up:
                return [bookmark(self._hub_version())]
            return []
        wakes = [self._deadline, self._next_bookmark, until]
        wait = min((when for when in wakes if when is not None), default=None)
        if wait is not None:
            wait = max(0.0, wait - now)

        try:
            found: list[Item] = list(await cursor.next(limit, wait))
        except HubError as error:
            # The cursor fell out of the kept history: a slow watcher.
            return self._fail(error, "slow")
        if found:
            return found

        # Nothing came in time: a bookmark may be due, or a deadline reached.
        now = self._loop.time()
        if self._next_bookmark is not None and now >= self._next_bookmark:
            assert self._interval is not None
            self._next_bookmark = now + self._interval
            if cursor.caught_up:
                return [bookmark(self._hub_version())]
        return []

    def _fail(self, error: HubError | None, reason: str = "expired") -> list[Item]:
        self._finish(reason)
        if error is None:
            return []
        return [Event(EventType.ERROR, error.to_status())]

    def fall_behind(self, seconds: float) -> Event:
        """
        End a stream whose transport could not write for ``seconds``.

        Returns the ERROR event (410 Expired) to send as the stream's last, if
        the connection still takes it.
        """
        error = Expired(
            f"watcher fell behind: its connection took nothing for {seconds:g} s"
        )
        (event,) = self._fail(error, "slow")
        assert isinstance(event, Event)
        return event

    def _finish(self, reason: str) -> None:
        self._done = True
        self.end_reason = self.end_reason or reason
        if self.cursor is not None:
            self.cursor.close()

    def stop(self) -> None:
        """End the stream; idempotent."""
        if not self._done:
            self._finish("stopped")


class StreamDecoder:
    """
    A decoder over a :class:`WatchStream`, for the in-process watcher.

    Each event's object is a copy, so that a consumer that changes it changes
    nothing in the hub.
    """

    def __init__(self, stream: WatchStream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._batch: list[Item] = []
        self._on_close = on_close

    async def decode(self) -> Event | None:
        if not self._batch:
            batch = await self._stream.next(1)
            if batch is None:
                await self.close()
                return None
            self._batch = batch
        item = self._batch.pop(0)
        if isinstance(item, tuple):
            change, kind = item
            return Event(kind, codec.loads(change.object_json))
        return item

    async def close(self) -> None:
        if not self._stream.done:
            self._stream.stop()
        self._on_close()
