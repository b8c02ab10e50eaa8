"""The watcher interface, and the watcher that reads events from a decoder.

A watcher is the Python form of Kubernetes' ``watch.Interface``: an async
iterator of :class:`~hub.core.events.Event` with an idempotent ``stop()``. The
consumer owns it and must stop it when done; iteration ends after ``stop()`` or
when the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from .events import Event
from .selectors import FieldSelector, LabelSelector

__all__ = ["Decoder", "ResourceWatcher", "StreamWatcher", "Watcher"]

logger = logging.getLogger("watchhub.watcher")


@runtime_checkable
class Watcher(Protocol):
    """An async iterator of events that its consumer stops."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    def stop(self) -> None:
        """Stop the watch; safe to call more than once, from anywhere."""


class Decoder(Protocol):
    """A source of events: one event per call to ``decode``."""

    async def decode(self) -> Event | None:
        """
        Return the next event, or ``None`` at the clean end of the stream.

        Raises:
            hub.core.errors.HubError or ValueError: the stream is malformed,
                truncated or broken; the error says which.
        """

    async def close(self) -> None:
        """Release the stream; a ``decode`` waiting on it ends."""


class ResourceWatcher(Protocol):
    """The watch side of one collection: the one door to the watch machinery."""

    async def watch_all(
        self,
        *,
        resource_version: str | None = None,
        label_selector: LabelSelector | str | None = None,
        field_selector: FieldSelector | str | None = None,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        timeout: float | None = None,
    ) -> Watcher:
        """Watch every object of the collection that the selectors select."""

    async def watch_single(
        self,
        name: str,
        *,
        resource_version: str | None = None,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        timeout: float | None = None,
    ) -> Watcher:
        """Watch one object, which need not exist yet."""


class StreamWatcher:
    """
    Turn a :class:`Decoder` into a :class:`Watcher`.

    It is unbuffered: it asks the decoder for the next event only when its
    consumer asks for one, so a slow consumer slows the stream, not the memory.
    ``stop()`` closes the decoder and wakes a consumer waiting for an event; the
    iteration then ends. A decoder error is raised to the consumer, and the
    iteration ends after it.
    """

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._stopped = False
        self._reader: asyncio.Task[Any] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def stopped(self) -> bool:
        """True once the watch is stopped or its stream has ended."""
        return self._stopped

    def __aiter__(self) -> StreamWatcher:
        return self

    async def __anext__(self) -> Event:
        if self._stopped:
            raise StopAsyncIteration
        if self._reader is not None:
            raise RuntimeError("another coroutine is already reading this watcher")
        self._reader = asyncio.current_task()
        try:
            event = await self._decoder.decode()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped and task is not None and task.uncancel() == 0:
                raise StopAsyncIteration from None
            raise
        except BaseException:
            self.stop()
            raise
        finally:
            self._reader = None
        if event is None:
            self.stop()
            raise StopAsyncIteration
        return event

    def stop(self) -> None:
        """Stop the watch and close the decoder; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        try:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        except RuntimeError:  # no running loop: nothing can be waiting either
            self._closing = None

    async def _close(self) -> None:
        try:
            await self._decoder.close()
        except Exception:  # the stream is gone either way
            logger.debug("closing a decoder failed", exc_info=True)

    async def wait_closed(self) -> None:
        """Wait until the decoder is closed after ``stop()``."""
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def __aenter__(self) -> StreamWatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.wait_closed()
