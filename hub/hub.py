"""The hub: a store, its event log, and the operations and watches on them.

:class:`Hub` is what the HTTP API serves and what a Python program embeds::

    async with Hub(MemoryStore()) as hub:
        pods = hub.collection("pods")
        watcher = await pods.watch_all()
        await pods.create({"metadata": {"name": "web"}})
        async for event in watcher:
            ...

The embedded watcher is the same type as the network client's: a
:class:`~hub.core.watcher.StreamWatcher`.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core import codec
from .core.errors import (
    BadRequest,
    Conflict,
    Expired,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
    Timeout,
)
from .core.events import Change
from .core.resource import (
    SERVER_FIELDS,
    check_collection,
    merge_patch,
    parse_precondition,
    validate_body,
)
from .core.selectors import FieldSelector, LabelSelector
from .core.watcher import StreamWatcher
from .store.base import DEFAULT_HISTORY, Store
from .store.memory import MemoryStore
from .watch.cursor import Cursor
from .watch.log import EventLog
from .watch.stream import Item, StreamDecoder, WatchStream

__all__ = ["Collection", "Hub", "HubConfig"]

logger = logging.getLogger("watchhub.watch")

MiB = 1024 * 1024

# A merge patch without a resourceVersion is retried this often when another
# write to the same object slips in between its read and its write.
_PATCH_RETRIES = 5


@dataclass
class HubConfig:
    """
    The hub's tunables.

    Attributes:
        history: Changes kept per collection, for watches that resume.
        max_object_size: The largest object, in bytes of JSON, that a write takes.
        bookmark_interval: Seconds between bookmarks on watches that ask for them.
        min_watch_timeout: A watch without ``timeoutSeconds`` ends after a random
            time between this and twice this, so that clients reconnect spread out.
        future_version_wait: How long a watch from a resourceVersion the hub has
            not reached yet waits for it before a 504.
    """

    history: int = DEFAULT_HISTORY
    max_object_size: int = 3 * MiB
    bookmark_interval: float = 60.0
    min_watch_timeout: float = 1800.0
    future_version_wait: float = 3.0


class Hub:
    """
    A store with its event log: every operation and watch of the hub.

    Call :meth:`start` before use and :meth:`close` at the end, or use it as an
    async context manager.
    """

    def __init__(
        self, store: Store | None = None, config: HubConfig | None = None
    ) -> None:
        self.config = config or HubConfig()
        self.store = store or MemoryStore(history=self.config.history)
        self.log = EventLog(self.config.history)
        self._streams: set[WatchStream] = set()
        self._ids = itertools.count(1)
        self._started = False
        #: How many watchers were ended for falling behind.
        self.slow_watchers = 0
        #: Called with each watch stream and each batch it hands out (metrics).
        self.on_batch: Callable[[WatchStream, list[Item]], None] | None = None
        #: Called with each watch stream once it has ended (metrics).
        self.on_stream_end: Callable[[WatchStream], None] | None = None

    # Lifecycle

    async def start(self) -> None:
        """Open the store and load the event log from it; idempotent."""
        if self._started:
            return
        await self.store.open()
        snapshot = await self.store.snapshot()
        self.log.load(
            snapshot.resource_version,
            snapshot.objects,
            snapshot.history,
            snapshot.horizons,
        )
        self.store.subscribe(self.log.append)
        self.store.subscribe_expired(self.log.expire)
        self._started = True

    async def close(self) -> None:
        """End every watch and close the store; idempotent."""
        self.stop_watches()
        if self._started:
            self.store.unsubscribe(self.log.append)
            self.store.unsubscribe_expired(self.log.expire)
            self._started = False
        await self.store.close()

    def stop_watches(self) -> None:
        """End every open watch."""
        for stream in list(self._streams):
            stream.stop()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Reading state

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion the hub has applied."""
        return self.log.resource_version

    @property
    def started(self) -> bool:
        """True once the store is open and the event log loaded from it."""
        return self._started

    @property
    def watchers(self) -> int:
        """How many watches are open."""
        return len(self._streams)

    def streams(self) -> list[WatchStream]:
        """Return the open watch streams."""
        return list(self._streams)

    def collection(self, name: str) -> Collection:
        """
        Return one collection; it exists once something is written to it.

        Raises:
            Invalid: the name is out of pattern.
        """
        return Collection(self, check_collection(name))

    def collections(self) -> list[str]:
        """Return the names of the collections written so far."""
        return self.log.collections()

    # Watching

    async def open_stream(
        self,
        collection: str,
        *,
        resource_version: str | None = None,
        label_selector: LabelSelector | str | None = None,
        field_selector: FieldSelector | str | None = None,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        timeout: float | None = None,
    ) -> WatchStream:
        """
        Start a watch and return its transport-independent stream.

        Raises:
            BadRequest: a selector or the resourceVersion is malformed.
            Timeout: the resourceVersion is one the hub did not reach in time.
        """
        labels = _label_selector(label_selector)
        fields = _field_selector(field_selector)
        if timeout is not None and timeout < 0:
            raise BadRequest(f"timeoutSeconds must not be negative, not {timeout}")
        since = await self.wait_for_version(resource_version, collection)
        if timeout is None:
            low = self.config.min_watch_timeout
            timeout = random.uniform(low, 2 * low)

        log = self.log.collection(collection)
        initial_end = None
        error = None
        cursor = None
        if since == 0 or send_initial_events:
            # The current state, then every change after it: both are read in
            # one step of the loop, so nothing falls between them.
            initial = [
                change
                for change in log.state.values()
                if fields.matches(change.name) and labels.matches(change.labels)
            ]
            cursor = Cursor(log, log.end, initial=initial, labels=labels, fields=fields)
            cursor.resource_version = self.log.resource_version
            if send_initial_events:
                initial_end = self.log.resource_version
        else:
            position = log.position_after(since)
            if position is None:
                error = Expired(
                    f"too old resource version: {since} ({log.horizon})",
                    kind=collection,
                )
            else:
                cursor = Cursor(log, position, labels=labels, fields=fields)
                cursor.resource_version = since

        stream = WatchStream(
            cursor,
            lambda: self.log.resource_version,
            error=error,
            timeout=timeout,
            bookmark_interval=self.config.bookmark_interval
            if allow_bookmarks
            else None,
            initial_end=initial_end,
        )
        self._streams.add(stream)
        stream.id = next(self._ids)
        stream.on_batch = self.on_batch
        logger.debug(
            "watch started",
            extra={
                "watch_id": stream.id,
                "collection": collection,
                "resource_version": since,
                "label_selector": str(labels),
                "field_selector": str(fields),
            },
        )
        return stream

    async def wait_for_version(
        self, resource_version: str | None, kind: str = ""
    ) -> int:
        """
        Wait until the hub has applied ``resource_version``; return it as a number.

        Unset, "" and "0" mean any state. A version the hub has not reached is
        waited for briefly, as a list or watch from a replica that is behind.

        Raises:
            BadRequest: the version is not a decimal number.
            Timeout: the hub did not reach it within ``future_version_wait``.
        """
        since = _watch_version(resource_version)
        if since > self.log.resource_version:
            wait = self.config.future_version_wait
            if not await self.log.wait_for(since, wait):
                raise Timeout(
                    f"too large resource version: {since}, current: "
                    f"{self.log.resource_version}",
                    kind=kind,
                )
        return since

    def close_stream(self, stream: WatchStream) -> None:
        """Forget a stream that its transport has finished with; idempotent."""
        stream.stop()
        if stream in self._streams:
            self._streams.discard(stream)
            if self.on_stream_end is not None:
                self.on_stream_end(stream)
            if stream.end_reason == "slow":
                self.slow_watchers += 1
                logger.warning(
                    "slow watcher ended",
                    extra={"watch_id": stream.id, "transport": stream.transport},
                )
            logger.debug(
                "watch ended",
                extra={
                    "watch_id": stream.id,
                    "reason": stream.end_reason,
                },
            )


class Collection:
    """
    One collection of a hub: its operations, and its watches.

    Objects returned are copies: changing one changes nothing in the hub.
    """

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name

    # Reading (from the event log's state, consistent with the watches)

    def get_change(self, name: str) -> Change:
        """
        Return the last change of a live object.

        Raises:
            NotFound: there is no such object.
        """
        log = self.hub.log.find(self.name)
        change = log.state.get(name) if log is not None else None
        if change is None:
            raise NotFound(f'{self.name} "{name}" not found', name=name, kind=self.name)
        return change

    def list_changes(
        self,
        label_selector: LabelSelector | str | None = None,
        field_selector: FieldSelector | str | None = None,
    ) -> tuple[list[Change], int]:
        """
        Return the last change of every selected live object, and the list's version.

        Raises:
            BadRequest: a selector is malformed.
        """
        labels = _label_selector(label_selector)
        fields = _field_selector(field_selector)
        log = self.hub.log.find(self.name)
        # Reading a collection nobody wrote to makes no log for it.
        changes = [
            change
            for change in (log.state.values() if log is not None else ())
            if fields.matches(change.name) and labels.matches(change.labels)
        ]
        return changes, self.hub.log.resource_version

    async def get(self, name: str) -> dict[str, Any]:
        """Return one object. Raises NotFound."""
        return codec.loads(self.get_change(name).object_json)

    async def list(
        self,
        label_selector: LabelSelector | str | None = None,
        field_selector: FieldSelector | str | None = None,
    ) -> dict[str, Any]:
        """Return a ``List`` of the selected objects with its resourceVersion."""
        changes, rv = self.list_changes(label_selector, field_selector)
        return {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(rv)},
            "items": [codec.loads(change.object_json) for change in changes],
        }

    # Writing

    def _check(self, body: Any) -> dict[str, Any]:
        body = validate_body(body, self.name)
        # The metadata the hub owns does not count, so that an object stored at
        # the limit can be read, changed and written back.
        metadata = body["metadata"]
        mine = {k: v for k, v in metadata.items() if k not in SERVER_FIELDS}
        size = len(codec.dumps({**body, "metadata": mine}))
        if size > self.hub.config.max_object_size:
            raise RequestEntityTooLarge(
                f"object is {size} bytes, above the limit of "
                f"{self.hub.config.max_object_size}",
                name=body["metadata"]["name"],
                kind=self.name,
            )
        return body

    async def create_change(self, body: Any) -> Change:
        """Create an object and return the change. Raises Invalid, AlreadyExists."""
        return await self.hub.store.create(self.name, self._check(body))

    async def replace_change(self, name: str, body: Any) -> Change:
        """
        Replace an object and return the change.

        A ``metadata.resourceVersion`` in the body is a precondition: the write
        fails with Conflict unless it is the object's current version.
        """
        body = self._check(body)
        if body["metadata"]["name"] != name:
            raise BadRequest(
                f"the name of the object ({body['metadata']['name']}) does not match "
                f"the name in the path ({name})",
                name=name,
                kind=self.name,
            )
        precondition = parse_precondition(body["metadata"].get("resourceVersion"))
        return await self.hub.store.update(
            self.name, name, body, precondition=precondition
        )

    async def patch_change(self, name: str, patch: Any) -> Change:
        """Apply a JSON merge patch (RFC 7386) and return the change."""
        if not isinstance(patch, dict):
            raise Invalid(
                "a merge patch must be a JSON object", name=name, kind=self.name
            )
        pinned = isinstance(patch.get("metadata"), dict) and (
            "resourceVersion" in patch["metadata"]
        )
        for _ in range(_PATCH_RETRIES):
            current = self.get_change(name).object
            body = merge_patch(current, patch)
            if not pinned and isinstance(body.get("metadata"), dict):
                body["metadata"]["resourceVersion"] = current["metadata"][
                    "resourceVersion"
                ]
            try:
                return await self.replace_change(name, body)
            except Conflict:
                if pinned:
                    raise
        raise Conflict(
            f'{self.name} "{name}" changed too often to patch; try again',
            name=name,
            kind=self.name,
        )

    async def delete_change(
        self, name: str, resource_version: str | None = None
    ) -> Change:
        """Delete an object and return the change, with its last state."""
        precondition = None
        if resource_version:
            precondition = parse_precondition(resource_version)
            if precondition is None:
                raise BadRequest(
                    f"resourceVersion {resource_version!r} must be a decimal string",
                    name=name,
                    kind=self.name,
                )
        return await self.hub.store.delete(self.name, name, precondition=precondition)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object and return it as stored."""
        return _copy(await self.create_change(body))

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the object that ``body`` names and return it as stored."""
        name = validate_body(body, self.name)["metadata"]["name"]
        return _copy(await self.replace_change(name, body))

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch an object and return it as stored."""
        return _copy(await self.patch_change(name, patch))

    async def delete(
        self, name: str, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Delete an object and return its last state."""
        return _copy(await self.delete_change(name, resource_version))

    # Watching (the ResourceWatcher interface)

    async def watch_all(
        self,
        *,
        resource_version: str | None = None,
        label_selector: LabelSelector | str | None = None,
        field_selector: FieldSelector | str | None = None,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        timeout: float | None = None,
    ) -> StreamWatcher:
        """Watch the collection's selected objects, from where PROTOCOL.md says."""
        stream = await self.hub.open_stream(
            self.name,
            resource_version=resource_version,
            label_selector=label_selector,
            field_selector=field_selector,
            allow_bookmarks=allow_bookmarks,
            send_initial_events=send_initial_events,
            timeout=timeout,
        )
        return StreamWatcher(
            StreamDecoder(stream, lambda: self.hub.close_stream(stream))
        )

    async def watch_single(
        self,
        name: str,
        *,
        resource_version: str | None = None,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        timeout: float | None = None,
    ) -> StreamWatcher:
        """Watch one object, which need not exist yet."""
        return await self.watch_all(
            resource_version=resource_version,
            field_selector=FieldSelector(name),
            allow_bookmarks=allow_bookmarks,
            send_initial_events=send_initial_events,
            timeout=timeout,
        )


def _copy(change: Change) -> dict[str, Any]:
    return codec.loads(change.object_json)


def _label_selector(value: LabelSelector | str | None) -> LabelSelector:
    return value if isinstance(value, LabelSelector) else LabelSelector.parse(value)


def _field_selector(value: FieldSelector | str | None) -> FieldSelector:
    return value if isinstance(value, FieldSelector) else FieldSelector.parse(value)


def _watch_version(value: str | None) -> int:
    if value is None or value == "":
        return 0
    rv = parse_precondition(value)
    if rv is None:
        raise BadRequest(f"resourceVersion {value!r} must be a decimal string")
    return rv
