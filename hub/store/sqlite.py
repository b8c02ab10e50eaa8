"""
The SQLite store: the hub's embedded default, one file on disk.

Durability:
    Each write is one SQLite transaction, committed before the write returns.
    The database runs in WAL journal mode with ``synchronous=NORMAL``: a commit
    appends its pages to the write-ahead log with ``write()`` and does not
    ``fsync`` (the log is synced only when it is checkpointed into the main
    file). Once ``write()`` returns, the operating system holds the data, so an
    acknowledged write survives the end of the process, ``kill -9`` included,
    and is replayed from the log when the file is opened again. It does not
    survive a power loss or a kernel crash: the last acknowledged writes before
    one may be lost, though the file stays consistent. ``synchronous=FULL``
    would close that gap at the cost of one ``fsync`` per write.

One process:
    The store takes SQLite's exclusive lock (``locking_mode=EXCLUSIVE``) from
    :meth:`SQLiteStore.open` to :meth:`SQLiteStore.close`. The resourceVersion
    counter, the history's bookkeeping and the listeners live in this process,
    so a second writer would break the order of changes; a second store on the
    same file fails to open with :class:`~hub.core.errors.StoreUnavailable`.
    The lock goes with the process, however it ends.

Threads:
    Every call runs synchronously on the caller's thread, the event loop's,
    one after another, which is what publishes changes in resourceVersion
    order. A write of a small object costs about 150 microseconds of CPU,
    SQLite and JSON together. The write that takes the log past 1,000 pages
    (every few hundred writes) also checkpoints it into the main file, which
    syncs both files on this thread: a pause of milliseconds, more on a slow
    disk.

History:
    A collection's history is its last ``history`` changes, as in the memory
    store: each write that takes a collection past that drops its oldest
    change and makes that change's resourceVersion the collection's horizon.
    A watch may resume from the horizon or later, and is answered
    :class:`~hub.core.errors.Expired` from before it. The horizon moves on
    every such write; the dropped rows leave the ``events`` table in batches
    of ``TRIM_BATCH``, in the transaction of the write that completes a batch,
    which also stores the horizon. Deleting one row per write would rewrite
    the oldest page of the table on every commit; a batch frees whole pages
    at once. Until their batch is deleted, dropped rows sit below the horizon
    and no read returns them. Opening the file trims each collection to its
    last ``history`` changes, which recovers the same horizon after a crash
    and applies a smaller ``history`` than before.

Schema (``PRAGMA user_version`` 1):
    - ``meta(key, value)``: the hub's resourceVersion counter, written in every
      write's transaction, so that it carries on after a restart even when
      compaction has emptied the history.
    - ``objects(collection, name, object)``: the live objects, as JSON.
    - ``events(collection, rv, name, type, object, prev_labels)``: the kept
      changes, clustered on ``(collection, rv)`` so that a write appends to
      its collection's last page, a trim deletes from its first pages, and a
      resuming watch reads one range; ``prev_labels`` is JSON, NULL for a
      create.
    - ``horizons(collection, rv)``: the resourceVersion through which each
      collection's history has been deleted.

Lists return a collection's objects ordered by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..core import codec
from ..core.errors import Expired, NotFound, StoreUnavailable
from ..core.events import Change, EventType
from .base import DEFAULT_HISTORY, Snapshot, Store

__all__ = ["TRIM_BATCH", "SQLiteStore"]

logger = logging.getLogger("watchhub.store")

SCHEMA_VERSION = 1

#: Changes dropped from a collection's history before their rows are deleted.
TRIM_BATCH = 100

# How long to wait for a lock another process holds before giving up. Nothing
# else should ever hold one (see "One process"), so fail fast rather than stall
# the event loop.
_BUSY_TIMEOUT = 1.0

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS objects (
        collection TEXT NOT NULL,
        name TEXT NOT NULL,
        object BLOB NOT NULL,
        PRIMARY KEY (collection, name)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS events (
        collection TEXT NOT NULL,
        rv INTEGER NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        object BLOB NOT NULL,
        prev_labels BLOB,
        PRIMARY KEY (collection, rv)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS horizons (
        collection TEXT PRIMARY KEY,
        rv INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('resource_version', 0)",
)

_EVENT_COLUMNS = "rv, collection, name, type, object, prev_labels"


@dataclass(frozen=True, slots=True)
class _History:
    """Where a collection's history stands."""

    #: Changes in the history, at most the store's ``history``.
    count: int = 0
    #: The last resourceVersion dropped from it, 0 if none was.
    horizon: int = 0
    #: Dropped changes whose rows are still in the table, below the horizon.
    stale: int = 0


class SQLiteStore(Store):
    """
    A store in one SQLite file; see the module's docstring for its guarantees.

    Args:
        path: The database file, created with its schema on :meth:`open`. Its
            directory must exist.
        history: Changes kept per collection for watches that resume.
    """

    kind = "sqlite"

    def __init__(self, path: str, *, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history=history)
        self._path = os.path.abspath(path)
        self._conn: sqlite3.Connection | None = None
        self._rv = 0
        # Each collection's history, loaded by open() and changed only after a
        # commit; valid because no other process writes the file.
        self._histories: dict[str, _History] = {}

    # Public API

    @property
    def location(self) -> str:
        return self._path

    @property
    def resource_version(self) -> int:
        """The last committed resourceVersion, as of :meth:`open`, or 0 before."""
        return self._rv

    async def open(self) -> None:
        """
        Open the file, creating it and its schema if needed; idempotent.

        Raises:
            StoreUnavailable: the file cannot be opened, is locked by another
                process, or holds an unknown schema.
        """
        if self._conn is not None:
            return
        try:
            conn = sqlite3.connect(
                self._path, timeout=_BUSY_TIMEOUT, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        try:
            self._load(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unavailable("cannot open", exc) from exc
            raise
        self._conn = conn
        logger.info(
            "sqlite store opened",
            extra={"path": self._path, "rv": self._rv, "history": self.history},
        )

    async def close(self) -> None:
        """Close the file, releasing its lock; idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise self._unavailable("cannot close", exc) from exc
        logger.info("sqlite store closed", extra={"path": self._path, "rv": self._rv})

    async def get(self, collection: str, name: str) -> dict[str, Any]:
        rows = self._query(
            "SELECT object FROM objects WHERE collection = ? AND name = ?",
            (collection, name),
        )
        if not rows:
            raise NotFound(
                f'{collection} "{name}" not found', name=name, kind=collection
            )
        return _loads(rows[0][0])

    async def list(self, collection: str) -> tuple[list[dict[str, Any]], int]:
        rows = self._query(
            "SELECT object FROM objects WHERE collection = ? ORDER BY name",
            (collection,),
        )
        return [_loads(obj) for (obj,) in rows], self._rv

    async def snapshot(self) -> Snapshot:
        # No other process writes the file and these queries run back to back
        # without yielding to the loop, so they see one state.
        history: dict[str, list[Change]] = {}
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY collection, rv"
        )
        for row in rows:
            collection, rv = row[1], row[0]
            if rv > self._horizon(collection):
                history.setdefault(collection, []).append(_change(row))
        objects: dict[str, list[dict[str, Any]]] = {name: [] for name in history}
        rows = self._query(
            "SELECT collection, object FROM objects ORDER BY collection, name"
        )
        for collection, obj in rows:
            objects.setdefault(collection, []).append(_loads(obj))
        horizons = {
            collection: kept.horizon
            for collection, kept in self._histories.items()
            if kept.horizon
        }
        return Snapshot(self._rv, objects, history, horizons)

    async def events_since(
        self, collection: str, resource_version: int
    ) -> list[Change]:
        self._connection()
        horizon = self._horizon(collection)
        if resource_version < horizon:
            raise Expired(
                f"too old resource version: {resource_version} ({horizon})",
                kind=collection,
            )
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events"
            " WHERE collection = ? AND rv > ? ORDER BY rv",
            (collection, resource_version),
        )
        return [_change(row) for row in rows]

    # For the base class

    async def _commit(
        self,
        collection: str,
        name: str,
        build: Callable[[dict[str, Any] | None, int], Change],
    ) -> Change:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT object FROM objects WHERE collection = ? AND name = ?",
                    (collection, name),
                ).fetchone()
                change = build(None if row is None else _loads(row[0]), self._rv + 1)
                kept = self._write(conn, change)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise self._unavailable(
                f"cannot write {collection} {name!r} to",
                exc,
                collection=collection,
                object_name=name,
                rv=self._rv + 1,
            ) from exc

        # Committed: bring the caches up to date, then tell the listeners.
        self._rv = change.resource_version
        self._histories[collection] = kept
        self._publish(change)
        return change

    # Private

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        return self._conn

    def _horizon(self, collection: str) -> int:
        kept = self._histories.get(collection)
        return 0 if kept is None else kept.horizon

    def _load(self, conn: sqlite3.Connection) -> None:
        """Set the connection up, create the schema, and load the caches."""
        # Exclusive before WAL: the log then needs no shared-memory index.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StoreUnavailable(
                f"sqlite store {self._path} cannot use WAL (journal mode {mode})"
            )
        conn.execute("PRAGMA synchronous = NORMAL")

        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"sqlite store {self._path} has schema version {version}, "
                    f"this hub knows {SCHEMA_VERSION} at most"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            rv = self._load_counter(conn)
            histories = self._load_histories(conn)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._rv = rv
        self._histories = histories

    def _load_counter(self, conn: sqlite3.Connection) -> int:
        (counter,) = conn.execute(
            "SELECT value FROM meta WHERE key = 'resource_version'"
        ).fetchone()
        return int(counter)

    def _load_histories(self, conn: sqlite3.Connection) -> dict[str, _History]:
        """Trim each collection to its last ``history`` changes, and count them."""
        horizons = dict(conn.execute("SELECT collection, rv FROM horizons"))
        histories = {collection: _History(0, rv) for collection, rv in horizons.items()}
        counts = conn.execute(
            "SELECT collection, COUNT(*) FROM events GROUP BY collection"
        ).fetchall()
        for collection, count in counts:
            horizon = horizons.get(collection, 0)
            excess = count - self.history
            if excess > 0:
                (horizon,) = conn.execute(
                    "SELECT MAX(rv) FROM (SELECT rv FROM events"
                    " WHERE collection = ? ORDER BY rv LIMIT ?)",
                    (collection, excess),
                ).fetchone()
                _delete_through(conn, collection, horizon)
            histories[collection] = _History(min(count, self.history), horizon)
        return histories

    def _write(self, conn: sqlite3.Connection, change: Change) -> _History:
        """
        Persist ``change`` inside the open transaction.

        Returns where its collection's history stands after the write.
        """
        collection, rv = change.collection, change.resource_version
        if change.type is EventType.DELETED:
            conn.execute(
                "DELETE FROM objects WHERE collection = ? AND name = ?",
                (collection, change.name),
            )
        else:
            conn.execute(
                "INSERT OR REPLACE INTO objects (collection, name, object)"
                " VALUES (?, ?, ?)",
                (collection, change.name, change.object_json),
            )
        labels = change.prev_labels
        conn.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                rv,
                collection,
                change.name,
                change.type.value,
                change.object_json,
                None if labels is None else codec.dumps(labels),
            ),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'resource_version'", (rv,))
        return self._drop(conn, collection)

    def _drop(self, conn: sqlite3.Connection, collection: str) -> _History:
        """Drop a collection's oldest change if its history is over the limit."""
        kept = self._histories.get(collection, _History())
        if kept.count < self.history:
            return replace(kept, count=kept.count + 1)

        # The oldest change above the horizon becomes the horizon.
        (horizon,) = conn.execute(
            "SELECT rv FROM events WHERE collection = ? AND rv > ? ORDER BY rv LIMIT 1",
            (collection, kept.horizon),
        ).fetchone()
        if kept.stale + 1 < TRIM_BATCH:
            return replace(kept, horizon=horizon, stale=kept.stale + 1)
        _delete_through(conn, collection, horizon)
        return replace(kept, horizon=horizon, stale=0)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable("cannot read from", exc) from exc

    def _unavailable(
        self, message: str, exc: sqlite3.Error, **extra: Any
    ) -> StoreUnavailable:
        """Log a driver failure and return the hub error that reports it."""
        logger.error(
            "sqlite store failed", exc_info=exc, extra={"path": self._path, **extra}
        )
        return StoreUnavailable(
            f"{message} sqlite store {self._path}: {exc}",
            name=str(extra.get("object_name", "")),
            kind=str(extra.get("collection", "")),
        )


def _rollback(conn: sqlite3.Connection) -> None:
    # The error that led here is the one worth raising; if the rollback fails
    # too, SQLite rolls the transaction back when the file is next opened.
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _delete_through(conn: sqlite3.Connection, collection: str, horizon: int) -> None:
    """Delete a collection's changes up to ``horizon``, and record it."""
    conn.execute(
        "DELETE FROM events WHERE collection = ? AND rv <= ?", (collection, horizon)
    )
    conn.execute(
        "INSERT OR REPLACE INTO horizons (collection, rv) VALUES (?, ?)",
        (collection, horizon),
    )


def _loads(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = codec.loads(data)
    return obj


def _change(row: tuple[Any, ...]) -> Change:
    rv, collection, name, kind, object_json, prev_labels = row
    return Change(
        rv,
        collection,
        name,
        EventType(kind),
        _loads(object_json),
        None if prev_labels is None else codec.loads(prev_labels),
        # The stored bytes are what Change would encode: reuse them.
        _object_json=object_json,
    )
