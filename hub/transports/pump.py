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
    while (batch := await stream.next(BATCH, idle=idle)) is not None:
        try:
            async with asyncio.timeout(write_timeout):
                if batch:
                    await send(batch)
                elif on_idle is not None:
                    await on_idle()
        except TimeoutError:
            # The bytes of the unfinished write are queued in the transport
            # already; the ERROR goes after them if the peer ever reads.
            goodbye = stream.fall_behind(write_timeout)
            try:
                async with asyncio.timeout(_GOODBYE_TIMEOUT):
                    await send([goodbye])
            except TimeoutError:
                pass
            return False
    return True


def hang_up(transport: asyncio.BaseTransport | None, grace: float) -> None:
    """
    Close a slow watcher's connection, giving queued bytes ``grace`` seconds.

    A peer that still reads nothing is then cut off, so that its socket is not
    held for ever by the data it will not take.
    """
    if transport is None or transport.is_closing():
        return
    transport.close()
    asyncio.get_running_loop().call_later(grace, transport.abort)  # type: ignore[attr-defined]
