"""The loop every transport runs: take a batch from the stream, write it.

The slow-consumer policy lives here. A watcher never makes the hub buffer: its
cursor stays where it is while its connection is busy, and the shared log
moves on without it. It is ended with a 410 ERROR, and counted, when either
its cursor falls out of the kept history (the stream says so) or one write
stays unfinished for ``write_timeout`` seconds: a connection that takes
nothing for that long holds a socket and a cursor for no one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..watch.stream import Item, WatchStream

__all__ = ["BATCH", "hang_up", "pump"]

#: How many events one write carries at most when a watcher is behind.
BATCH = 1000

# How long the ERROR that ends a slow watcher may take to go out.
_GOODBYE_TIMEOUT = 1.0


class _Watchdog:
    """
    Tells a write that has been unfinished for too long, at little cost.

    A write only marks when it starts and ends; one timer per watch looks now
    and then and cancels the writing task when a write has run past its
    deadline. An ``asyncio.timeout`` around every write would make and cancel a
    timer per write, which a fan-out profile showed as a large share of the
    hub's time.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.fired = False
        #: The loop time the write under way started, or None between writes.
        self.started: float | None = None
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._handle = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        started = self.started
        if started is not None and now - started >= self.timeout:
            self.fired = True
            if self._task is not None:
                self._task.cancel()
            return
        due = self.timeout if started is None else started + self.timeout - now
        self._handle = self._loop.call_later(due, self._check)

    def close(self) -> None:
        self._handle.cancel()


async def pump(
    stream: WatchStream,
    send: Callable[[list[Item]], Awaitable[None]],
    *,
    write_timeout: float,
    idle: float | None = None,
    on_idle: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """
    Write the stream's batches with ``send`` until it ends.

    With ``idle``, ``on_idle`` is called after that many seconds without an
    event (keep-alive comments). Returns False when the watcher was ended for
    being too slow to write to, True otherwise.
    """
    loop = asyncio.get_running_loop()
    watchdog = _Watchdog(write_timeout)
    try:
        while (batch := await stream.next(BATCH, idle=idle)) is not None:
            watchdog.started = loop.time()
            try:
                if batch:
                    await send(batch)
                elif on_idle is not None:
                    await on_idle()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not watchdog.fired or task is None or task.uncancel() > 0:
                    raise
                break
            watchdog.started = None
        else:
            return True
    finally:
        watchdog.close()

    # The bytes of the unfinished write are queued in the transport already;
    # the ERROR goes after them if the peer ever reads.
    goodbye = stream.fall_behind(write_timeout)
    try:
        async with asyncio.timeout(_GOODBYE_TIMEOUT):
            await send([goodbye])
    except TimeoutError:
        pass
    return False


def hang_up(transport: asyncio.BaseTransport | None, grace: float) -> None:
    """
    Close a slow watcher's connection, giving queued bytes ``grace`` seconds.

    A peer that still reads nothing is then cut off, so that its socket is not
    held for ever by the data it will not take.
    """
    if transport is None or transport.is_closing():
        return
    transport.close()
    abort = transport.abort  # type: ignore[attr-defined]
    asyncio.get_running_loop().call_later(grace, abort)
