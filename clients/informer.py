"""An informer: a local cache of one collection that a list and a watch keep right.

After client-go's Reflector and Informer (``tools/cache``)::

    async with Client(url) as client:
        pods = Informer(client, "pods", label_selector="app=web")
        pods.add_handler(on_add=added, on_update=updated, on_delete=deleted)
        async with pods:
            await pods.wait_for_sync()
            web = pods.get("web")            # from the cache, never the hub

What it does, in order:

1. **List** the collection, fill the cache, and note the list's resourceVersion;
   :meth:`Informer.has_synced` is then true.
2. **Watch** from that resourceVersion with bookmarks on, so that a resumed
   watch starts after every change the hub filtered out of this one too.
   Each event updates the cache, then calls the handlers.
3. On a **break** (the hub is unreachable, the stream is cut or malformed, or
   the watch ends on its timeout) it watches again from the last
   resourceVersion it saw, bookmarks included: no change is missed or repeated.
4. On a **410** (the hub no longer holds the history after that version) or a
   **504** on resume (a hub that restarted without its history has not reached
   that version), it lists again and delivers the differences between the old
   cache and the new list as adds, updates and deletes.
5. While the hub is **away**, it waits between attempts with exponential
   backoff and jitter (:class:`~clients.backoff.Backoff`), reset once the hub
   answers again.
6. With ``resync_period``, it re-delivers every cached object as an update
   that often, so that a handler that lost work gets another chance.

Handlers run one at a time, in the informer's own task, after the cache has
changed: a handler that reads the cache sees the change it is told about. A
slow handler slows the watch (nothing is buffered); an exception in one is
logged on the ``watchhub.client`` logger and does not stop the informer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hub.core.events import Event, EventType
from hub.core.selectors import LabelSelector

from .backoff import Backoff
from .client import Client, Transport
from .errors import ApiError

__all__ = ["Informer", "InformerStatistics"]

logger = logging.getLogger("watchhub.client")

Object = dict[str, Any]
AddHandler = Callable[[Object], Awaitable[None] | None]
UpdateHandler = Callable[[Object, Object], Awaitable[None] | None]
DeleteHandler = Callable[[Object], Awaitable[None] | None]


@dataclass
class InformerStatistics:
    """
    What an informer has done since it started.

    Attributes:
        lists: Lists that filled or refilled the cache.
        watches: Watches the hub accepted.
        breaks: Lists and watches that failed, or watches that ended before
            any event, each retried after a backoff delay.
        relists: Lists caused by a 410, or a 504 on resume, after the first.
        events: Events applied to the cache (bookmarks excluded).
        resyncs: Periodic resyncs delivered.
        objects: Objects in the cache now.
        resource_version: The last resourceVersion seen, or "".
    """

    lists: int = 0
    watches: int = 0
    breaks: int = 0
    relists: int = 0
    events: int = 0
    resyncs: int = 0
    objects: int = 0
    resource_version: str = ""


@dataclass(frozen=True)
class _Handler:
    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None


class _Relist(Exception):
    """The watch cannot resume from the last resourceVersion: list again."""


class Informer:
    """
    A local cache of one collection, with handlers called on each change.

    Args:
        client: The client to list and watch with; the caller keeps it open
            while the informer runs, and closes it.
        collection: The collection to follow.
        label_selector: Follow only objects with these labels. An object that
            stops matching leaves the cache (a delete); one that starts, enters
            it (an add).
        field_selector: ``metadata.name`` with ``=``, ``==`` or ``!=``.
        resync_period: Seconds between re-deliveries of every cached object as
            an update (``on_update(obj, obj)``); ``None`` for none.
        watch_timeout: Ask the hub to end each watch after a random time
            between this and twice this, in seconds, as client-go does, so that
            watches are renewed spread out; ``None`` leaves it to the hub.
        transport: The watch transport: chunked, websocket or sse.
        backoff: The delays while the hub is away (default: 0.8 s doubling
            to 30 s, with jitter).

    The objects the cache hands out are its own: treat them as read-only.
    """

    def __init__(
        self,
        client: Client,
        collection: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_period: float | None = None,
        watch_timeout: float | None = None,
        transport: Transport = "chunked",
        backoff: Backoff | None = None,
    ) -> None:
        if resync_period is not None and resync_period <= 0:
            raise ValueError(f"resync period must be positive, got {resync_period}")
        if watch_timeout is not None and watch_timeout < 1:
            raise ValueError(f"watch timeout must be 1 s or more, got {watch_timeout}")
        self.client = client
        self.collection = collection
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.transport: Transport = transport
        self._backoff = backoff or Backoff()
        self._rng = random.Random()
        self._handlers: list[_Handler] = []
        self._cache: dict[str, Object] = {}
        self._resource_version: str | None = None
        self._synced = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = InformerStatistics()

    # Public API: handlers.

    def add_handler(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """
        Call these on each change, in the order handlers were added.

        Each may be a plain function or a coroutine function:
        ``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)`` (the
        object's last state known). Add handlers before :meth:`start`.

        Raises:
            RuntimeError: the informer is started already.
        """
        if self._tasks:
            raise RuntimeError("add handlers before the informer starts")
        self._handlers.append(_Handler(on_add, on_update, on_delete))

    # Public API: the cache. No method here calls the hub.

    def get(self, name: str) -> Object | None:
        """Return the cached object ``name``, or ``None``."""
        return self._cache.get(name)

    def list(self, label_selector: str | LabelSelector | None = None) -> list[Object]:
        """
        Return the cached objects, by name, that ``label_selector`` selects.

        Raises:
            hub.core.errors.BadRequest: the selector is malformed.
        """
        if not isinstance(label_selector, LabelSelector):
            label_selector = LabelSelector.parse(label_selector)
        return [
            obj
            for name, obj in sorted(self._cache.items())
            if label_selector.empty or label_selector.matches(_labels(obj))
        ]

    def names(self) -> list[str]:
        """Return the names of the cached objects, sorted."""
        return sorted(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, name: object) -> bool:
        return name in self._cache

    def __iter__(self) -> Iterator[Object]:
        return iter(self.list())

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen (bookmarks included), or ``None``."""
        return self._resource_version

    def has_synced(self) -> bool:
        """Tell whether the first list is in the cache."""
        return self._synced.is_set()

    async def wait_for_sync(self) -> None:
        """
        Wait until the first list is in the cache.

        Bound the wait with ``asyncio.timeout`` if the hub may be away.

        Raises:
            RuntimeError: the informer is not started, or stopped first.
        """
        if self._synced.is_set():
            return
        if not self._tasks:
            raise RuntimeError("the informer is not started")
        waiter = asyncio.ensure_future(self._synced.wait())
        try:
            await asyncio.wait(
                {waiter, self._tasks[0]}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not self._synced.is_set():
            raise RuntimeError("the informer stopped before its first list")

    def statistics(self) -> InformerStatistics:
        """Return a snapshot of what the informer has done."""
        stats = InformerStatistics(**vars(self._stats))
        stats.objects = len(self._cache)
        stats.resource_version = self._resource_version or ""
        return stats

    # Public API: lifecycle.

    async def start(self) -> None:
        """
        Start listing and watching in the background; returns at once.

        Raises:
            RuntimeError: the informer is started already.
        """
        if self._tasks:
            raise RuntimeError("the informer is started already")
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run()))
        if self.resync_period is not None:
            self._tasks.append(loop.create_task(self._resync(self.resync_period)))

    async def stop(self) -> None:
        """Stop the watch and the resync; the cache stays readable. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Informer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # Private: the reflector's loop.

    async def _run(self) -> None:
        while True:
            try:
                if self._resource_version is None:
                    await self._list()
                    self._backoff.reset()
                if await self._watch():
                    continue  # ended cleanly after events: renew at once
            except _Relist as why:
                self._stats.relists += 1
                logger.info(
                    "informer lists again: %s",
                    why,
                    extra=self._extra(),
                )
                self._resource_version = None
                continue  # the hub answered: list again at once
            except Exception as exc:
                self._log_break(exc)
            self._stats.breaks += 1
            delay = self._backoff.next_delay()
            logger.debug(
                "informer retries in %.2f s", delay, extra=self._extra(delay=delay)
            )
            await asyncio.sleep(delay)

    async def _list(self) -> None:
        listed = await self.client.list(
            self.collection,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        version = str(listed["metadata"]["resourceVersion"])
        items: dict[str, Object] = {}
        for item in listed["items"]:
            items[item["metadata"]["name"]] = item
        self._stats.lists += 1
        async with self._lock:
            old, self._cache = self._cache, items
            self._resource_version = version
            # A relist tells the handlers what changed while the watch could
            # not: objects new to the cache are adds, changed ones updates,
            # and those gone are deletes with the last state the cache held.
            for name, obj in items.items():
                before = old.get(name)
                if before is None:
                    await self._dispatch("add", obj)
                elif _version(before) != _version(obj):
                    await self._dispatch("update", before, obj)
            for name, before in old.items():
                if name not in items:
                    await self._dispatch("delete", before)
        if not self._synced.is_set():
            self._synced.set()
        logger.info("informer listed %d objects", len(items), extra=self._extra())

    async def _watch(self) -> bool:
        """Watch from the last resourceVersion; True if it ended after events."""
        timeout = None
        if self.watch_timeout is not None:
            timeout = int(self.watch_timeout * (1 + self._rng.random()))
        try:
            watcher = await self.client.watch(
                self.collection,
                resource_version=self._resource_version,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                allow_bookmarks=True,
                timeout_seconds=timeout,
                transport=self.transport,
            )
        except ApiError as exc:
            if exc.code in (410, 504):
                raise _Relist(
                    f"the watch was refused: {exc.code} {exc.reason}"
                ) from exc
            raise
        self._stats.watches += 1
        received = False
        async with watcher:
            async for event in watcher:
                if not received:
                    received = True
                    self._backoff.reset()  # the hub is back and talking
                await self._receive(event)
        return received

    async def _receive(self, event: Event) -> None:
        if event.type is EventType.ERROR:
            if event.object.get("code") == 410:
                raise _Relist(str(event.object.get("message") or "410 expired"))
            raise ApiError(event.object)
        version = event.resource_version
        if event.type is EventType.BOOKMARK:
            if version:
                self._resource_version = version
            return
        async with self._lock:
            self._stats.events += 1
            await self._apply(event)
            if version:
                self._resource_version = version

    async def _apply(self, event: Event) -> None:
        obj = event.object
        name = event.name
        if event.type is EventType.DELETED:
            if self._cache.pop(name, None) is not None:
                await self._dispatch("delete", obj)
            return
        before = self._cache.get(name)
        self._cache[name] = obj
        if before is None:
            await self._dispatch("add", obj)
        elif _version(before) != _version(obj):
            await self._dispatch("update", before, obj)
        # The same version again (a synthetic ADDED of a watch from "0"):
        # nothing changed, so nothing is delivered.

    async def _resync(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self._synced.is_set():
                continue
            async with self._lock:
                for obj in list(self._cache.values()):
                    await self._dispatch("update", obj, obj)
                self._stats.resyncs += 1

    async def _dispatch(self, kind: str, *args: Object) -> None:
        for handler in self._handlers:
            function: Callable[..., Any] | None = getattr(handler, f"on_{kind}")
            if function is None:
                continue
            try:
                result = function(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(
                    "informer handler failed on %s",
                    kind,
                    extra=self._extra(object_name=_name(args[-1])),
                )

    # Private: logging.

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "resource_version": self._resource_version,
            **more,
        }

    def _log_break(self, exc: Exception) -> None:
        if isinstance(exc, ApiError) and 400 <= exc.code < 500 and exc.code != 429:
            # A refusal that retrying will not mend, such as a bad selector:
            # say it loudly, and keep trying in case the hub is reconfigured.
            logger.error("informer refused by the hub: %r", exc, extra=self._extra())
        elif isinstance(exc, ApiError | OSError | ValueError):
            logger.warning("informer lost the hub: %r", exc, extra=self._extra())
        else:
            logger.exception("informer failed", extra=self._extra())


def _labels(obj: Object) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _version(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def _name(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("name", ""))
