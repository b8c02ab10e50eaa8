"""The store contract that every backend keeps.

A store holds the objects of every collection, assigns each write the next
resourceVersion of one hub-wide counter, compares-and-sets on an object's
resourceVersion, and keeps a bounded history of committed changes per
collection. It hands each committed change, in resourceVersion order, to the
listeners that subscribed; it knows nothing of watchers.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..core.errors import AlreadyExists, Conflict, Expired, NotFound
from ..core.events import Change, EventType
from ..core.resource import prepare_create, prepare_update

__all__ = [
    "DEFAULT_HISTORY",
    "ExpiredListener",
    "Listener",
    "Snapshot",
    "Store",
    "changes_after",
]

logger = logging.getLogger("watchhub.store")

# Changes kept per collection for watches that resume. A watch that resumes
# from before the kept history is answered 410 Expired and lists again.
DEFAULT_HISTORY = 10_000

Listener = Callable[[Change], None]

#: Called with a collection and a resourceVersion: that collection's changes up
#: to it were lost before this store could hand them out (see
#: :meth:`Store.subscribe_expired`).
ExpiredListener = Callable[[str, int], None]


class Snapshot:
    """
    A consistent view of the whole store, for loading the event log.

    Attributes:
        resource_version: The last committed resourceVersion of the hub.
        objects: For each collection, its live objects.
        history: For each collection, its kept changes in resourceVersion order.
        horizons: For each collection, the resourceVersion at or after which
            its history is complete (a watch may resume from it or later).
    """

    def __init__(
        self,
        resource_version: int,
        objects: dict[str, list[dict[str, Any]]],
        history: dict[str, list[Change]],
        horizons: dict[str, int],
    ) -> None:
        self.resource_version = resource_version
        self.objects = objects
        self.history = history
        self.horizons = horizons


class Store(abc.ABC):
    """
    A store backend.

    ``open()`` and ``close()`` are idempotent. Writes raise
    :class:`~hub.core.errors.NotFound`, :class:`~hub.core.errors.AlreadyExists`
    or :class:`~hub.core.errors.Conflict`, and, where the backend cannot be
    reached, :class:`~hub.core.errors.StoreUnavailable`. Every committed change
    reaches each listener exactly once, in resourceVersion order, before the
    write that made it returns.
    """

    #: The backend's name, as ``--store`` takes it.
    kind = "abstract"

    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, not {history}")
        self.history = history
        self._listeners: list[Listener] = []
        self._expired_listeners: list[ExpiredListener] = []

    # Public API

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the data lives, for the operator's log."""

    @property
    @abc.abstractmethod
    def resource_version(self) -> int:
        """The last committed resourceVersion, 0 before the first write."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the backend; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the backend; idempotent."""

    @abc.abstractmethod
    async def get(self, collection: str, name: str) -> dict[str, Any]:
        """
        Return one object.

        Raises:
            NotFound: there is no such object.
        """

    @abc.abstractmethod
    async def list(self, collection: str) -> tuple[list[dict[str, Any]], int]:
        """Return a collection's objects and the resourceVersion they are at."""

    @abc.abstractmethod
    async def snapshot(self) -> Snapshot:
        """Return every object and the kept history, consistently."""

    @abc.abstractmethod
    async def events_since(
        self, collection: str, resource_version: int
    ) -> list[Change]:
        """
        Return a collection's changes after ``resource_version``, in order.

        Raises:
            hub.core.errors.Expired: the history no longer reaches back that far.
        """

    async def create(self, collection: str, body: dict[str, Any]) -> Change:
        """
        Store a new object; ``body`` is validated already.

        Raises:
            AlreadyExists: an object of that name exists.
        """
        name = body["metadata"]["name"]

        def build(old: dict[str, Any] | None, rv: int) -> Change:
            if old is not None:
                raise AlreadyExists(
                    f'{collection} "{name}" already exists', name=name, kind=collection
                )
            return Change(
                rv, collection, name, EventType.ADDED, prepare_create(body, rv)
            )

        return await self._commit(collection, name, build)

    async def update(
        self,
        collection: str,
        name: str,
        body: dict[str, Any],
        *,
        precondition: int | None = None,
    ) -> Change:
        """
        Replace an object; ``body`` is validated already.

        Raises:
            NotFound: there is no such object.
            Conflict: ``precondition`` is not the object's resourceVersion.
        """

        def build(old: dict[str, Any] | None, rv: int) -> Change:
            old = _check(old, collection, name, precondition)
            obj = prepare_update(old, body, rv)
            return Change(rv, collection, name, EventType.MODIFIED, obj, _labels(old))

        return await self._commit(collection, name, build)

    async def delete(
        self, collection: str, name: str, *, precondition: int | None = None
    ) -> Change:
        """
        Delete an object; the change carries its last state at the new version.

        Raises:
            NotFound: there is no such object.
            Conflict: ``precondition`` is not the object's resourceVersion.
        """

        def build(old: dict[str, Any] | None, rv: int) -> Change:
            old = _check(old, collection, name, precondition)
            obj = dict(old)
            obj["metadata"] = dict(old["metadata"], resourceVersion=str(rv))
            return Change(rv, collection, name, EventType.DELETED, obj, _labels(old))

        return await self._commit(collection, name, build)

    async def ping(self) -> None:
        """
        Check that the backend answers, for readiness probes.

        The default reads an object that cannot exist: a round trip for
        backends that read from their storage. Backends that read from memory
        override it with a check of their connection.

        Raises:
            StoreUnavailable: the backend cannot be reached.
        """
        try:
            await self.get("", "")
        except NotFound:
            pass

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every change committed from now on."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def subscribe_expired(self, listener: ExpiredListener) -> None:
        """
        Call ``listener(collection, rv)`` when a collection's changes are lost.

        A store shared by several processes (``nats``) may find, after a lost
        connection, that changes it never handed out are gone: the watchers of
        that collection must then be answered 410, not given a gap. The other
        stores never call it.
        """
        self._expired_listeners.append(listener)

    def unsubscribe_expired(self, listener: ExpiredListener) -> None:
        """Stop calling ``listener`` on lost changes."""
        self._expired_listeners.remove(listener)

    # For backends

    @abc.abstractmethod
    async def _commit(
        self,
        collection: str,
        name: str,
        build: Callable[[dict[str, Any] | None, int], Change],
    ) -> Change:
        """
        Commit one write atomically.

        Read the object's current state (``None`` if absent), call
        ``build(old, next_rv)``, which raises to refuse the write or returns the
        change, persist it, then :meth:`_publish` it. Nothing is persisted if
        ``build`` raises.
        """

    def _expire(self, collection: str, resource_version: int) -> None:
        for listener in self._expired_listeners:
            try:
                listener(collection, resource_version)
            except Exception:
                logger.exception(
                    "a store listener failed",
                    extra={"collection": collection, "rv": resource_version},
                )

    def _publish(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                logger.exception(
                    "a store listener failed",
                    extra={
                        "collection": change.collection,
                        "rv": change.resource_version,
                    },
                )


def changes_after(
    changes: Iterable[Change], collection: str, resource_version: int, horizon: int
) -> list[Change]:
    """
    Return the kept ``changes`` of a collection after ``resource_version``.

    Raises:
        Expired: ``resource_version`` is older than the collection's ``horizon``.
    """
    if resource_version < horizon:
        raise Expired(
            f"too old resource version: {resource_version} ({horizon})",
            kind=collection,
        )
    return [change for change in changes if change.resource_version > resource_version]


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _check(
    old: dict[str, Any] | None, collection: str, name: str, precondition: int | None
) -> dict[str, Any]:
    if old is None:
        raise NotFound(f'{collection} "{name}" not found', name=name, kind=collection)
    current = old["metadata"]["resourceVersion"]
    if precondition is not None and str(precondition) != current:
        raise Conflict(
            f'operation cannot be fulfilled on {collection} "{name}": the object has '
            f"been modified (resourceVersion {current}, not {precondition})",
            name=name,
            kind=collection,
        )
    return old
