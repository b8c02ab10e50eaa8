"""Store backends behind one contract (see :mod:`hub.store.base`)."""

from __future__ import annotations

from .base import DEFAULT_HISTORY, Snapshot, Store
from .memory import MemoryStore

__all__ = ["DEFAULT_HISTORY", "MemoryStore", "Snapshot", "Store", "open_store"]


def open_store(
    spec: str,
    *,
    data: str | None = None,
    history: int = DEFAULT_HISTORY,
    nats_bucket: str = "watchhub",
    nats_replicas: int = 1,
    nats_key_history: int = 64,
) -> Store:
    """
    Make the store that ``spec`` names: ``memory``, ``sqlite`` or a ``nats://`` URL.

    ``data`` is the SQLite file's path. A NATS URL may list several servers of
    one cluster, separated by commas; the ``nats_`` options configure the
    bucket (see :class:`~hub.store.nats.NATSStore`).
    """
    if spec == "memory":
        return MemoryStore(history=history)
    if spec == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(data or "watchhub.db", history=history)
    if spec.startswith(("nats://", "tls://")):
        from .nats import NATSStore

        return NATSStore(
            [url.strip() for url in spec.split(",") if url.strip()],
            bucket=nats_bucket,
            replicas=nats_replicas,
            key_history=nats_key_history,
            history=history,
        )
    raise ValueError(f"unknown store {spec!r}: use memory, sqlite or nats://HOST:PORT")
