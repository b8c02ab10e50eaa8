"""The memory store: everything in this process, gone when it ends."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from ..core.errors import NotFound
from ..core.events import Change
from .base import DEFAULT_HISTORY, Snapshot, Store, changes_after

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A store for tests and throwaway hubs."""

    kind = "memory"

    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history=history)
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}
        self._history: dict[str, collections.deque[Change]] = {}
        self._horizons: dict[str, int] = {}
        self._rv = 0

    @property
    def location(self) -> str:
        return "memory"

    @property
    def resource_version(self) -> int:
        return self._rv

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get(self, collection: str, name: str) -> dict[str, Any]:
        obj = self._objects.get(collection, {}).get(name)
        if obj is None:
            raise NotFound(
                f'{collection} "{name}" not found', name=name, kind=collection
            )
        return obj

    async def list(self, collection: str) -> tuple[list[dict[str, Any]], int]:
        return list(self._objects.get(collection, {}).values()), self._rv

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            self._rv,
            {name: list(objects.values()) for name, objects in self._objects.items()},
            {name: list(changes) for name, changes in self._history.items()},
            dict(self._horizons),
        )

    async def events_since(
        self, collection: str, resource_version: int
    ) -> list[Change]:
        return changes_after(
            self._history.get(collection, ()),
            collection,
            resource_version,
            self._horizons.get(collection, 0),
        )

    async def _commit(
        self,
        collection: str,
        name: str,
        build: Callable[[dict[str, Any] | None, int], Change],
    ) -> Change:
        # build() may refuse the write: only then is the collection made.
        change = build(self._objects.get(collection, {}).get(name), self._rv + 1)
        objects = self._objects.setdefault(collection, {})
        self._rv = change.resource_version
        if change.type.value == "DELETED":
            del objects[name]
        else:
            objects[name] = change.object
        history = self._history.setdefault(collection, collections.deque())
        history.append(change)
        if len(history) > self.history:
            self._horizons[collection] = history.popleft().resource_version
        self._publish(change)
        return change
