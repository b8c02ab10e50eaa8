"""
The SQLite store: the hub's embedded default, one file on disk.

Durability:
    A write is acknowledged (its awaitable returns) only after the SQLite
    transaction that holds it has committed. The database runs in WAL journal
    mode with ``synchronous=NORMAL``: a commit appends its pages to the
    write-ahead log with ``write()`` and does not ``fsync`` (the log is synced
    only when it is checkpointed into the main file). Once ``write()``
    returns, the operating system holds the data, so an acknowledged write
    survives the end of the process, ``kill -9`` included, and is replayed from
    the log when the file is opened again. It does not survive a power loss or
    a kernel crash: the last acknowledged writes before one may be lost, though
    the file stays consistent. ``synchronous=FULL`` would close that gap at the
    cost of one ``fsync`` per commit.

Group commit:
    Writes are not executed when they are called: :meth:`SQLiteStore._commit`
    queues the write and awaits it. The first write queued in a turn of the
    event loop schedules a flush with ``loop.call_soon``; every write queued
    before that flush runs joins it. The flush runs on the loop's thread, from
    start to end without yielding: it opens one transaction and applies the
    writes in the order they were queued, each inside its own ``SAVEPOINT``:
    it reads the object, calls the write's ``build`` with the next
    resourceVersion, and stores the change. A write whose ``build`` refuses it
    (``NotFound``, ``Conflict``, ``AlreadyExists``) or whose statements fail is
    rolled back to its savepoint alone and takes no resourceVersion, so the
    batch's versions stay gap-free and increasing. Later writes in the batch
    read the earlier ones' results, uncommitted, through the same transaction,
    so their compare-and-set checks see them. The batch then commits once;
    only after that are its changes published to the listeners, in
    resourceVersion order, and each writer's awaitable given its change or its
    own error. If the commit fails, or an error (a full disk, say) rolls the
    whole transaction back, every write of the batch fails with
    :class:`~hub.core.errors.StoreUnavailable` (a refusal may have depended on
    a write that is now gone). A write whose caller was cancelled before the
    flush is dropped and never committed.

    Because a flush runs whole within one callback, no other code ever sees
    the open transaction: reads (``get``, ``list``, ``snapshot``,
    ``events_since``) see committed state only, never a queued write. A batch
    costs one ``BEGIN``, one ``COMMIT`` and one counter update, and writes
    each page it touches to the log once, instead of once per write.

Checkpoints:
    SQLite's automatic checkpoint (``wal_autocheckpoint``) would copy the log
    into the main file and sync both on the thread of the commit that takes
    the log past 1,000 pages: a pause of every watcher of up to half a second
    on a busy disk. It is turned off on the writer's connection. A thread of
    the store's own (``watchhub-sqlite-checkpoint``), with its own connection,
    checkpoints instead; SQLite releases Python's lock while it copies and
    syncs, so the loop goes on meanwhile. After a commit, and at most every
    ``CHECKPOINT_INTERVAL`` seconds, it runs ``PRAGMA
    wal_checkpoint(PASSIVE)``, which never blocks the writer. When a passive
    checkpoint copies the whole log, the next transaction starts the log again
    from its beginning. Under a steady stream of writes it seldom does: a
    batch commits while it syncs, and the log keeps growing. Once the log
    holds ``RESTART_PAGES`` pages, the thread runs a ``RESTART`` checkpoint,
    which holds the write lock while it copies the rest and syncs, so that
    the log starts again. The loop never waits for that lock: the writer's
    connection has no busy timeout, and a flush that finds the lock taken
    puts its writes back at the head of the queue and tries again
    ``_BUSY_RETRY`` seconds later (writes wait, watchers and reads do not),
    failing them with :class:`~hub.core.errors.StoreUnavailable` if the lock
    stays taken for ``_BUSY_TIMEOUT`` seconds. A ``RESTART`` that cannot have
    the lock, or that finds a reader still on the log, within ``_RESTART_WAIT``
    seconds gives up until the next one. :meth:`SQLiteStore.close`
    commits the queue, then stops the thread, which runs a final
    ``TRUNCATE`` checkpoint. ``journal_size_limit`` cuts a log that grew past
    ``JOURNAL_SIZE_LIMIT`` bytes back to that size when it starts again.

One process:
    The resourceVersion counter, the history's bookkeeping and the listeners
    live in this process, so a second writer would break the order of
    changes. The store holds an exclusive ``flock`` on a file beside the
    database (its path plus ``.lock``) from :meth:`SQLiteStore.open` to
    :meth:`SQLiteStore.close`; a second store on the same file, in this
    process or another, fails to open with
    :class:`~hub.core.errors.StoreUnavailable`. The lock goes with the
    process, however it ends; the lock file stays (removing it would let two
    stores lock two different files of one name). ``flock`` holds on a local
    file system, not across machines sharing a network one. SQLite itself runs
    in its normal locking mode, so that the checkpoint thread can use the
    file; other programs may read the file while the hub runs (one that keeps
    a read open holds the log back from starting again), but nothing else may
    write it.

Threads:
    Every read, and every flush, runs on the event loop's thread; only
    checkpoints run on the checkpoint thread. A write of a small object in a
    batch of a few dozen costs 120 to 150 microseconds of the loop's CPU,
    SQLite and JSON together (about 180 alone, before group commit, with the
    checkpoints on the loop); the loop never syncs a file after ``open``.

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
      batch's transaction, so that it carries on after a restart even when
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

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core import codec
from ..core.errors import Expired, NotFound, StoreUnavailable
from ..core.events import Change, EventType
from .base import DEFAULT_HISTORY, Snapshot, Store

__all__ = [
    "CHECKPOINT_INTERVAL",
    "JOURNAL_SIZE_LIMIT",
    "RESTART_PAGES",
    "TRIM_BATCH",
    "SQLiteStore",
]

logger = logging.getLogger("watchhub.store")

SCHEMA_VERSION = 1

#: Changes dropped from a collection's history before their rows are deleted.
TRIM_BATCH = 100

#: Seconds the checkpoint thread waits after a checkpoint before the next one.
CHECKPOINT_INTERVAL = 0.5

#: Pages in the log (4 KiB each) from which the thread forces it to start again.
RESTART_PAGES = 8_192

#: Bytes to which a log that grew larger is cut when it starts again.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

# A flush that finds the write lock taken (by a RESTART checkpoint; nothing
# else writes the file) tries again this many seconds later, and fails its
# writes once the lock has been taken for _BUSY_TIMEOUT seconds.
_BUSY_RETRY = 0.002
_BUSY_TIMEOUT = 10.0

# How long a RESTART checkpoint waits for the write lock, then for readers of
# the log, before it gives up until the next one: writes wait meanwhile. The
# final checkpoint, when the store takes no more writes, waits longer.
_RESTART_WAIT = 0.2
_FINAL_WAIT = 10.0

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

_Build = Callable[[dict[str, Any] | None, int], Change]


@dataclass(frozen=True, slots=True)
class _History:
    """Where a collection's history stands."""

    #: Changes in the history, at most the store's ``history``.
    count: int = 0
    #: The last resourceVersion dropped from it, 0 if none was.
    horizon: int = 0
    #: Dropped changes whose rows are still in the table, below the horizon.
    stale: int = 0


@dataclass(slots=True)
class _Write:
    """A write queued for the next flush."""

    collection: str
    name: str
    build: _Build
    future: asyncio.Future[Change]


class SQLiteStore(Store):
    """
    A store in one SQLite file; see the module's docstring for its guarantees.

    Args:
        path: The database file, created with its schema on :meth:`open`. Its
            directory must exist. The store also uses ``path + ".lock"``.
        history: Changes kept per collection for watches that resume.
    """

    kind = "sqlite"

    def __init__(self, path: str, *, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history=history)
        self._path = os.path.abspath(path)
        self._conn: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._checkpointer: _Checkpointer | None = None
        self._rv = 0
        # Each collection's history, loaded by open() and changed only after a
        # commit; valid because no other process writes the file.
        self._histories: dict[str, _History] = {}
        # The writes waiting for the next flush, and that flush.
        self._queue: list[_Write] = []
        self._flush_handle: asyncio.Handle | None = None
        # When flushes began to find the write lock taken, None while they do not.
        self._busy_since: float | None = None

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
            StoreUnavailable: the file cannot be opened, is in use by another
                store, or holds an unknown schema.
        """
        if self._conn is not None:
            return
        try:
            # No busy timeout: SQLite would sleep on the loop's thread.
            conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        try:
            # Lock before touching the file: another hub may be writing it.
            lock = self._take_lock()
        except BaseException:
            conn.close()
            raise
        try:
            self._load(conn)
            checkpointer = _Checkpointer(self._path)
        except BaseException as exc:
            conn.close()
            os.close(lock)
            if isinstance(exc, sqlite3.Error):
                raise self._unavailable("cannot open", exc) from exc
            raise
        checkpointer.start()
        self._conn, self._lock, self._checkpointer = conn, lock, checkpointer
        logger.info(
            "sqlite store opened",
            extra={"path": self._path, "rv": self._rv, "history": self.history},
        )

    async def close(self) -> None:
        """
        Commit the queued writes, checkpoint and close the file; idempotent.

        The file's lock is released once everything is closed.
        """
        if self._conn is None:
            return
        while self._queue:
            self._flush()
            if self._queue:
                # The write lock is taken by a checkpoint: the writes are back
                # in the queue.
                await asyncio.sleep(_BUSY_RETRY)
        conn, self._conn = self._conn, None
        checkpointer, self._checkpointer = self._checkpointer, None
        lock, self._lock = self._lock, None
        try:
            # The thread's final checkpoint copies and syncs the whole log:
            # wait for it off the loop.
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)
        finally:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._unavailable("cannot close", exc) from exc
            finally:
                if lock is not None:
                    os.close(lock)
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
        # No other process writes the file, flushes never yield to the loop,
        # and these queries run back to back without yielding either, so they
        # see one committed state.
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

    async def _commit(self, collection: str, name: str, build: _Build) -> Change:
        self._connection()
        loop = asyncio.get_running_loop()
        write = _Write(collection, name, build, loop.create_future())
        self._queue.append(write)
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        # Cancelling the caller cancels the future: a flush skips the write.
        return await write.future

    # Private: group commit

    def _flush(self) -> None:
        """Commit the queued writes in one transaction, then answer each."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        queued, self._queue = self._queue, []
        writes = [write for write in queued if not write.future.done()]
        if not writes:
            return
        if self._conn is None:
            for write in writes:
                write.future.set_exception(
                    StoreUnavailable(f"sqlite store {self._path} is not open")
                )
            return

        conn = self._conn
        committed: list[tuple[_Write, Change]] = []
        refused: list[tuple[_Write, BaseException]] = []
        histories: dict[str, _History] = {}
        try:
            if not self._begin(conn, writes):
                return
            try:
                for write in writes:
                    rv = self._rv + len(committed) + 1
                    outcome = self._apply(conn, write, rv, histories)
                    if isinstance(outcome, Change):
                        committed.append((write, outcome))
                    else:
                        refused.append((write, outcome))
                if committed:
                    conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'resource_version'",
                        (self._rv + len(committed),),
                    )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except BaseException as exc:
            self._fail(writes, exc)
            if not isinstance(exc, sqlite3.Error):
                raise
            return

        # Committed: bring the caches up to date, then tell the listeners and
        # the writers, in resourceVersion order.
        if committed:
            self._rv = committed[-1][1].resource_version
            self._histories.update(histories)
            if self._checkpointer is not None:
                self._checkpointer.poke()
        for write, change in committed:
            self._publish(change)
            # A listener may have cancelled a writer.
            if not write.future.done():
                write.future.set_result(change)
        for write, error in refused:
            if not write.future.done():
                write.future.set_exception(error)

    def _begin(self, conn: sqlite3.Connection, writes: Sequence[_Write]) -> bool:
        """
        Begin the batch's transaction; False if the writes were put back.

        Raises:
            sqlite3.Error: the transaction cannot begin, or the write lock has
                been taken for longer than ``_BUSY_TIMEOUT``.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._busy_since is None:
                self._busy_since = now
            elif now - self._busy_since >= _BUSY_TIMEOUT:
                self._busy_since = None
                raise
            # A RESTART checkpoint holds the lock: try again soon, first.
            self._queue[:0] = writes
            if self._flush_handle is None:
                self._flush_handle = loop.call_later(_BUSY_RETRY, self._flush)
            return False
        self._busy_since = None
        return True

    def _apply(
        self,
        conn: sqlite3.Connection,
        write: _Write,
        rv: int,
        histories: dict[str, _History],
    ) -> Change | BaseException:
        """
        Apply one write of a batch inside its own savepoint.

        Returns its change, or the error that refused it; a refused write is
        rolled back to its savepoint and ``histories`` keeps no trace of it.
        Raises the driver's error if the transaction itself is lost.
        """
        collection, name = write.collection, write.name
        conn.execute("SAVEPOINT write")
        try:
            row = conn.execute(
                "SELECT object FROM objects WHERE collection = ? AND name = ?",
                (collection, name),
            ).fetchone()
            change = write.build(None if row is None else _loads(row[0]), rv)
            before = self._histories.get(collection, _History())
            kept = self._write(conn, change, histories.get(collection, before))
        except Exception as exc:
            # Some errors (a full disk, say) roll the whole transaction back:
            # then the batch fails.
            if isinstance(exc, sqlite3.Error) and not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            if isinstance(exc, sqlite3.Error):
                error = self._unavailable(
                    f"cannot write {collection} {name!r} to",
                    exc,
                    collection=collection,
                    object_name=name,
                    rv=rv,
                )
                error.__cause__ = exc
                return error
            return exc
        conn.execute("RELEASE write")
        histories[collection] = kept
        return change

    def _fail(self, writes: Sequence[_Write], exc: BaseException) -> None:
        """Fail every write of a batch that could not commit."""
        logger.error(
            "sqlite store failed",
            exc_info=exc,
            extra={"path": self._path, "writes": len(writes), "rv": self._rv},
        )
        for write in writes:
            if write.future.done():
                continue
            error = StoreUnavailable(
                f"cannot write {write.collection} {write.name!r} to sqlite store"
                f" {self._path}: {exc}",
                name=write.name,
                kind=write.collection,
            )
            error.__cause__ = exc
            write.future.set_exception(error)

    # Private

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        return self._conn

    def _horizon(self, collection: str) -> int:
        kept = self._histories.get(collection)
        return 0 if kept is None else kept.horizon

    def _take_lock(self) -> int:
        """Lock the file beside the database; return its descriptor."""
        path = self._path + ".lock"
        try:
            lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot open sqlite store {self._path}: lock file {path}: {exc}"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock)
            raise StoreUnavailable(
                f"sqlite store {self._path} is in use by another hub (it holds {path})"
            ) from exc
        return lock

    def _load(self, conn: sqlite3.Connection) -> None:
        """Set the connection up, create the schema, and load the caches."""
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StoreUnavailable(
                f"sqlite store {self._path} cannot use WAL (journal mode {mode})"
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints run on the checkpoint thread, never on this connection.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")

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

    def _write(
        self, conn: sqlite3.Connection, change: Change, kept: _History
    ) -> _History:
        """
        Persist ``change`` inside the open transaction.

        ``kept`` is where its collection's history stands before the write;
        returns where it stands after. The batch stores the counter.
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
        return self._drop(conn, collection, kept)

    def _drop(
        self, conn: sqlite3.Connection, collection: str, kept: _History
    ) -> _History:
        """Drop a collection's oldest change if its history is over the limit."""
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


class _Checkpointer:
    """
    Copies the log into the main file on a thread of its own.

    The loop calls :meth:`poke` after each commit; the thread checkpoints when
    poked, at most once per ``CHECKPOINT_INTERVAL``, and once more, fully,
    when :meth:`stop` ends it.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        # Opened here, on the loop's thread, so that open() reports a failure.
        self._conn = sqlite3.connect(
            path,
            timeout=_RESTART_WAIT,
            isolation_level=None,
            check_same_thread=False,
        )
        self._poked = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="watchhub-sqlite-checkpoint", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def poke(self) -> None:
        """Say that a commit added to the log."""
        self._poked.set()

    def stop(self) -> None:
        """Run the final checkpoint, close the connection and end the thread."""
        self._stopping.set()
        self._poked.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                self._poked.wait()
                if self._stopping.is_set():
                    break
                self._poked.clear()
                log, copied = self._checkpoint("PASSIVE")
                if copied < log:
                    # Commits came in during the copy: come back for them.
                    self._poked.set()
                    if log >= RESTART_PAGES:
                        self._checkpoint("RESTART")
                self._stopping.wait(CHECKPOINT_INTERVAL)
            # The store takes no more writes, so the copy completes.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute(f"PRAGMA busy_timeout = {int(_FINAL_WAIT * 1000)}")
            self._checkpoint("TRUNCATE")
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def _checkpoint(self, mode: str) -> tuple[int, int]:
        """Checkpoint; return the pages in the log and those copied, in all."""
        try:
            busy, log, copied = self._conn.execute(
                f"PRAGMA wal_checkpoint({mode})"
            ).fetchone()
        except sqlite3.Error:
            logger.exception(
                "sqlite checkpoint failed", extra={"path": self._path, "mode": mode}
            )
            return 0, 0
        if busy:
            logger.warning(
                "sqlite checkpoint could not complete",
                extra={"path": self._path, "mode": mode, "log": log, "copied": copied},
            )
        return log, copied


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
