"""Store backends behind one contract (see :mod:`hub.store.base`)."""

from __future__ import annotations

from .base import DEFAULT_HISTORY, Snapshot, Store
from .memory import MemoryStore

__all__ = ["DEFAULT_HISTORY", "MemoryStore", "Snapshot", "Store", "open_store"]


def open_store(spec: str, *, data: str | None = None, history: int = DEFAULT_HISTORY) -> Store:
    """
    Make the store that ``spec`` names: ``memory``, ``sqlite`` or a ``nats://`` URL.

    ``data`` is the SQLite file's path.
    """
    if spec == "memory":
        return MemoryStore(history=history)
    if spec == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(data or "watchhub.db", history=history)
    raise ValueError(f"unknown store {spec!r}: use memory or sqlite")
