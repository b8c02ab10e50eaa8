"""
The NATS store: objects and their history in a JetStream key-value bucket.

Several hub processes, on one machine or many, open the same bucket and act as
one hub: each is a *replica* that follows the bucket's stream and keeps its own
copy of the state and of the recent history, fed in the stream's order.

Layout:
    One key-value bucket (default ``watchhub``), that is the JetStream stream
    ``KV_<bucket>`` on the subjects ``$KV.<bucket>.<collection>.<name>``.
    Collection names hold no dot, so the first token of a key is the
    collection and the rest, dots included, the object's name. Each message
    is the JSON envelope ``{"type", "prevLabels", "object"}``: the change's
    event type, the labels the object had before it, and the object without
    its ``metadata.resourceVersion``. A delete is a KV delete marker (header
    ``KV-Operation: DEL``) that carries the object's last state, so other
    NATS tools see the key as deleted.

resourceVersion:
    The stream's sequence number. It is one order across every key and every
    replica, the first write gets 1, and a message need not know its own
    number: a replica sets ``metadata.resourceVersion`` from the sequence as it
    reads the message.

Writes:
    Every write is compare-and-set on the key's last revision (the
    ``Nats-Expected-Last-Subject-Sequence`` header): a create expects the key
    to be absent or deleted, an update or delete expects the revision the
    writer read. Two replicas racing on one object give one winner; the other
    gets :class:`~hub.core.errors.Conflict` (or AlreadyExists for a create).
    A write returns only once this replica's feed has applied it and handed it
    to the listeners, so a list or watch on the same replica that follows an
    acknowledged write sees it (read-your-writes on one replica). Publishing
    is retried, with a message id, through a short loss of the connection or a
    JetStream leader election, for at most ``write_timeout`` seconds; after
    that, or while the connection is away, writes fail with
    :class:`~hub.core.errors.StoreUnavailable` (503).

Feed:
    Each replica reads the whole stream with an ordered consumer from the
    sequence after the last one it applied, on :meth:`NATSStore.open` from the
    start, and :meth:`NATSStore.open` returns once it has caught up with the
    stream as it was when it opened. When the connection comes back after a
    loss, the consumer is made again from the next sequence, so no change is
    lost or applied twice; watchers stay open meanwhile.

History and 410:
    A replica keeps at most ``history`` changes per collection, like the other
    stores. What a replica can load on start is bounded by the bucket: it keeps
    ``key_history`` revisions per key (64 at most, JetStream's limit for a
    bucket). Each message records the revision it replaced (the CAS header),
    so a replica that finds a key's previous revision gone from the stream
    knows that the collection lost changes up to that sequence and moves the
    collection's horizon there: a watch that resumes from before it is
    answered 410 Expired, never given a gap. A bucket with stream-wide limits
    (maximum messages, bytes or age), which the hub never sets itself, may lose
    any message: every collection's horizon is then the stream's first
    sequence at load.

Objects:
    NATS refuses a message larger than the server's ``max_payload`` (1 MiB by
    default); such a write is answered 413. Raise ``max_payload`` in the
    server's configuration to store larger objects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import Any, NoReturn

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi

from ..core import codec
from ..core.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    RequestEntityTooLarge,
    StoreUnavailable,
)
from ..core.events import Change, EventType
from ..core.resource import prepare_create, prepare_update
from .base import DEFAULT_HISTORY, Snapshot, Store, _check, _labels, changes_after

__all__ = ["DEFAULT_BUCKET", "DEFAULT_KEY_HISTORY", "NATSStore"]

logger = logging.getLogger("watchhub.store")

DEFAULT_BUCKET = "watchhub"

#: Revisions kept per key: JetStream's largest history for a key-value bucket.
DEFAULT_KEY_HISTORY = 64

# JetStream's error codes for a failed Nats-Expected-Last-Subject-Sequence.
_WRONG_LAST_SEQUENCE = (10071, 10164)

_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_MSG_ID = "Nats-Msg-Id"
_KV_OPERATION = "KV-Operation"
_DELETES = ("DEL", "PURGE")

# A write that loses its compare-and-set because this replica had not yet seen
# the newest revision reads it from the stream and tries again, this often.
_CAS_RETRIES = 5

# How long open() waits for JetStream (a cluster may still be electing its
# leader) and for the feed to catch up with the stream.
_OPEN_TIMEOUT = 30.0

# How long a write that the stream acknowledged waits for this replica's feed
# to apply it before the client is told the replica is unavailable.
_APPLY_TIMEOUT = 10.0

# The ordered consumer's heartbeat: a consumer silent for two of these is made
# again from the next sequence.
_HEARTBEAT = 2.0


class _WrongLastSequence(Exception):
    """The key's last revision is not the one a write expected."""


class NATSStore(Store):
    """
    A store in a NATS JetStream key-value bucket, shared by hub replicas.

    See the module's docstring for the layout and the guarantees.

    Args:
        servers: NATS URLs (``nats://host:port``), one or several of a cluster.
        bucket: The key-value bucket, made on first use.
        replicas: JetStream replicas of a bucket this store makes (1, or 3 on
            a three-node cluster).
        key_history: Revisions the bucket keeps per key, for replicas that
            start later and resume watches (1 to 64).
        history: Changes this replica keeps per collection for watches that
            resume.
        write_timeout: Seconds a write keeps trying through a lost connection
            or a leader election before it fails with StoreUnavailable.
    """

    kind = "nats"

    def __init__(
        self,
        servers: str | list[str],
        *,
        bucket: str = DEFAULT_BUCKET,
        replicas: int = 1,
        key_history: int = DEFAULT_KEY_HISTORY,
        history: int = DEFAULT_HISTORY,
        write_timeout: float = 5.0,
    ) -> None:
        super().__init__(history=history)
        if not 1 <= key_history <= 64:
            raise ValueError(f"key_history must be between 1 and 64, not {key_history}")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        self.bucket = bucket
        self.replicas = replicas
        self.key_history = key_history
        self.write_timeout = write_timeout
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."

        self._nc: NATSClient | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._generation = 0
        self._restart: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._open = False

        # The replica's state, as of the last applied sequence.
        self._applied = 0
        self._progress = asyncio.Event()
        self._objects: dict[str, dict[str, Change]] = {}
        self._revisions: dict[str, int] = {}
        self._history: dict[str, collections.deque[Change]] = {}
        self._horizons: dict[str, int] = {}
        self._floor = 0
        # Writes of this replica waiting for the feed, by message id.
        self._pending: dict[str, asyncio.Future[Change]] = {}

    # Public API

    @property
    def location(self) -> str:
        return f"{','.join(self._servers)} bucket {self.bucket}"

    @property
    def resource_version(self) -> int:
        """The last stream sequence this replica has applied."""
        return self._applied

    async def open(self) -> None:
        """
        Connect, make the bucket if missing, and catch up with the stream.

        Raises:
            StoreUnavailable: NATS cannot be reached, JetStream does not answer,
                or the feed does not catch up in time.
        """
        if self._nc is not None:
            return
        try:
            nc = await nats.connect(
                servers=self._servers,
                name="watchhub",
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:  # nats-py raises several unrelated types here
            raise self._unavailable("cannot connect to", exc) from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=2.0)
        self._open = False
        self._connected.set()
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT):
                target = await self._prepare_bucket()
                await self._follow()
                while self._applied < target:
                    self._progress.clear()
                    await self._progress.wait()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, StoreUnavailable) or not isinstance(exc, Exception):
                raise
            raise self._unavailable("cannot open", exc) from exc
        self._open = True
        logger.info(
            "nats store opened",
            extra={
                "servers": self._servers,
                "bucket": self.bucket,
                "rv": self._applied,
                "history": self.history,
            },
        )

    async def close(self) -> None:
        """Stop following the stream and disconnect; idempotent."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        self._generation += 1
        self._connected.clear()
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
            self._restart = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(StoreUnavailable("nats store closed"))
        self._pending.clear()
        sub, self._sub = self._sub, None
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await nc.close()
        logger.info(
            "nats store closed", extra={"bucket": self.bucket, "rv": self._applied}
        )

    async def ping(self) -> None:
        """
        Check that the NATS connection is up; reads are served from memory.

        Raises:
            StoreUnavailable: the store is closed, or NATS is not connected.
        """
        if not self._client().is_connected:
            raise StoreUnavailable(f"nats store {self.location} is not connected")

    async def get(self, collection: str, name: str) -> dict[str, Any]:
        change = self._objects.get(collection, {}).get(name)
        if change is None:
            raise NotFound(
                f'{collection} "{name}" not found', name=name, kind=collection
            )
        return change.object

    async def list(self, collection: str) -> tuple[list[dict[str, Any]], int]:
        objects = self._objects.get(collection, {})
        return [change.object for change in objects.values()], self._applied

    async def snapshot(self) -> Snapshot:
        # Built without yielding to the loop, so that the feed cannot apply a
        # change between this view and the caller's subscribing.
        names = set(self._objects) | set(self._history)
        return Snapshot(
            self._applied,
            {
                name: [change.object for change in self._objects.get(name, {}).values()]
                for name in names
            },
            {name: list(changes) for name, changes in self._history.items()},
            {name: self._horizon(name) for name in names},
        )

    async def events_since(
        self, collection: str, resource_version: int
    ) -> list[Change]:
        return changes_after(
            self._history.get(collection, ()),
            collection,
            resource_version,
            self._horizon(collection),
        )

    async def create(self, collection: str, body: dict[str, Any]) -> Change:
        name = body["metadata"]["name"]
        key = _key(collection, name)
        obj = _unversioned(prepare_create(body, 0))
        payload = _envelope(EventType.ADDED, obj, None)

        # Start from this replica's view; ask the stream when it may be stale.
        last: int | None = None
        if name not in self._objects.get(collection, {}):
            last = self._revisions.get(key, 0)
        for _ in range(_CAS_RETRIES):
            if last is None:
                old, last = await self._latest(collection, name)
                if old is not None:
                    raise AlreadyExists(
                        f'{collection} "{name}" already exists',
                        name=name,
                        kind=collection,
                    )
            try:
                return await self._write(collection, name, payload, last)
            except _WrongLastSequence:
                last = None
        _too_busy(collection, name)

    async def update(
        self,
        collection: str,
        name: str,
        body: dict[str, Any],
        *,
        precondition: int | None = None,
    ) -> Change:
        fresh = False
        for _ in range(_CAS_RETRIES):
            current, last = await self._current(collection, name, precondition, fresh)
            old = _check(current, collection, name, precondition)
            obj = _unversioned(prepare_update(old, body, 0))
            payload = _envelope(EventType.MODIFIED, obj, _labels(old))
            try:
                return await self._write(collection, name, payload, last)
            except _WrongLastSequence:
                if precondition is not None:
                    _conflict(collection, name, precondition)
                fresh = True
        _too_busy(collection, name)

    async def delete(
        self, collection: str, name: str, *, precondition: int | None = None
    ) -> Change:
        fresh = False
        for _ in range(_CAS_RETRIES):
            current, last = await self._current(collection, name, precondition, fresh)
            old = _check(current, collection, name, precondition)
            payload = _envelope(EventType.DELETED, _unversioned(old), _labels(old))
            try:
                return await self._write(collection, name, payload, last, delete=True)
            except _WrongLastSequence:
                if precondition is not None:
                    _conflict(collection, name, precondition)
                fresh = True
        _too_busy(collection, name)

    # For the base class

    async def _commit(self, collection: str, name: str, build: Any) -> Change:
        # The sequence, hence the resourceVersion, is known only once the
        # stream has taken the write: create, update and delete do it instead.
        raise NotImplementedError("the nats store writes through create/update/delete")

    # Writing

    async def _current(
        self, collection: str, name: str, precondition: int | None, fresh: bool
    ) -> tuple[dict[str, Any] | None, int]:
        """Return an object's state and revision, from the stream if need be."""
        if not fresh:
            change = self._objects.get(collection, {}).get(name)
            if change is not None and (
                precondition is None or precondition <= change.resource_version
            ):
                return change.object, change.resource_version
        # Absent here, newer than here, or a write lost its CAS: this replica
        # may not have seen the newest revision yet.
        return await self._latest(collection, name)

    async def _latest(
        self, collection: str, name: str
    ) -> tuple[dict[str, Any] | None, int]:
        """Read a key's last revision from the stream: (live object or None, seq)."""
        js = self._jetstream()
        try:
            msg = await js.get_msg(
                self._stream, subject=self._subject(collection, name)
            )
        except nats.js.errors.NotFoundError:
            return None, 0
        except Exception as exc:
            raise self._unavailable(
                f"cannot read {collection} {name!r} from", exc
            ) from exc
        headers = msg.headers or {}
        if headers.get(_KV_OPERATION) in _DELETES or not msg.data:
            return None, msg.seq
        try:
            obj = _decode(msg.data, msg.seq)[1]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unavailable(
                f"cannot decode {collection} {name!r} in", exc
            ) from exc
        return obj, msg.seq

    async def _write(
        self,
        collection: str,
        name: str,
        payload: bytes,
        last: int,
        *,
        delete: bool = False,
    ) -> Change:
        """
        Publish one change if the key's last revision is ``last``; return it applied.

        Raises:
            _WrongLastSequence: the key has another last revision.
        """
        nc = self._client()
        if len(payload) > nc.max_payload:
            raise RequestEntityTooLarge(
                f"object is {len(payload)} bytes stored, above the nats server's "
                f"max_payload of {nc.max_payload}",
                name=name,
                kind=collection,
            )
        msg_id = uuid.uuid4().hex
        headers = {_MSG_ID: msg_id, _EXPECTED_LAST: str(last)}
        if delete:
            headers[_KV_OPERATION] = "DEL"
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            seq = await self._send(collection, name, payload, headers)
            try:
                async with asyncio.timeout(_APPLY_TIMEOUT):
                    return await future
            except TimeoutError as exc:
                raise self._unavailable(
                    f"wrote {collection} {name!r} at resourceVersion {seq} but "
                    "has not applied it yet from",
                    exc,
                ) from exc
        finally:
            self._pending.pop(msg_id, None)

    async def _send(
        self, collection: str, name: str, payload: bytes, headers: dict[str, str]
    ) -> int:
        """Publish, trying again through a short outage; return the sequence."""
        subject = self._subject(collection, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout
        retried = False
        while True:
            remaining = deadline - loop.time()
            try:
                if not self._connected.is_set():
                    async with asyncio.timeout(max(remaining, 0)):
                        await self._connected.wait()
                ack = await self._jetstream().publish(
                    subject, payload, headers=headers, timeout=max(remaining, 0.1)
                )
                return int(ack.seq)
            except nats.js.errors.ServiceUnavailableError as exc:
                # JetStream is electing a stream leader: try again.
                if loop.time() >= deadline:
                    raise self._unavailable(f"cannot write {subject} to", exc) from exc
                retried = True
                await asyncio.sleep(0.05)
            except nats.js.errors.APIError as exc:
                if exc.err_code not in _WRONG_LAST_SEQUENCE:
                    raise self._unavailable(f"cannot write {subject} to", exc) from exc
                if retried and await self._landed(subject, headers[_MSG_ID]):
                    # An attempt that timed out had been stored after all.
                    return 0
                raise _WrongLastSequence() from exc
            except nats.errors.MaxPayloadError as exc:
                raise RequestEntityTooLarge(
                    f"object is above the nats server's max_payload: {exc}",
                    name=name,
                    kind=collection,
                ) from exc
            except (
                TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.TimeoutError,
                nats.errors.ConnectionReconnectingError,
            ) as exc:
                # A lost connection or a leader election: the same message id
                # lets JetStream drop a copy that an earlier attempt stored.
                if loop.time() >= deadline:
                    raise self._unavailable(f"cannot write {subject} to", exc) from exc
                retried = True
                await asyncio.sleep(0.05)
            except nats.errors.Error as exc:
                raise self._unavailable(f"cannot write {subject} to", exc) from exc

    async def _landed(self, subject: str, msg_id: str) -> bool:
        """Tell whether the key's last revision is the message ``msg_id``."""
        try:
            msg = await self._jetstream().get_msg(self._stream, subject=subject)
        except Exception:
            return False
        return bool(msg.headers and msg.headers.get(_MSG_ID) == msg_id)

    # The feed

    async def _prepare_bucket(self) -> int:
        """Find or make the bucket; return the stream's last sequence."""
        js = self._jetstream()
        while True:
            try:
                try:
                    info = await js.stream_info(self._stream)
                except nats.js.errors.NotFoundError:
                    await js.create_key_value(
                        jsapi.KeyValueConfig(
                            bucket=self.bucket,
                            history=self.key_history,
                            replicas=self.replicas,
                            storage=jsapi.StorageType.FILE,
                        )
                    )
                    info = await js.stream_info(self._stream)
                break
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError,
                nats.js.errors.ServerError,
            ) as exc:
                # JetStream is starting, or a cluster is electing its leader.
                logger.info("waiting for jetstream", extra={"error": str(exc)})
                await asyncio.sleep(0.2)

        config, state = info.config, info.state
        if config.max_msgs_per_subject != self.key_history:
            logger.info(
                "nats bucket exists with another key history",
                extra={
                    "bucket": self.bucket,
                    "key_history": config.max_msgs_per_subject,
                },
            )
        limits = (config.max_msgs, config.max_bytes, config.max_age)
        limited = any(value and value > 0 for value in limits)
        if state.messages == 0:
            # Everything was purged, or nothing was ever written.
            self._applied = self._floor = state.last_seq
        elif limited:
            # Stream-wide limits drop the oldest messages of any key.
            self._floor = max(state.first_seq - 1, 0)
        return int(state.last_seq)

    async def _follow(self) -> None:
        """(Re)make the ordered consumer from the sequence after the last applied."""
        js = self._jetstream()
        self._generation += 1
        generation = self._generation
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()

        async def on_message(msg: Msg) -> None:
            if generation != self._generation:
                return
            try:
                self._apply(msg)
            except Exception:
                logger.exception(
                    "cannot apply a message of the nats stream",
                    extra={"subject": msg.subject, "rv": self._applied},
                )

        self._sub = await js.subscribe(
            f"{self._prefix}>",
            stream=self._stream,
            cb=on_message,
            ordered_consumer=True,
            idle_heartbeat=_HEARTBEAT,
            deliver_policy=jsapi.DeliverPolicy.BY_START_SEQUENCE,
            config=jsapi.ConsumerConfig(opt_start_seq=self._applied + 1),
            # Flow control bounds what the server sends ahead; a client-side
            # limit would drop messages instead.
            pending_msgs_limit=0,
            pending_bytes_limit=0,
        )
        # A hack on nats-py's private state: its ordered consumer remakes itself
        # from the last sequence it received, 0 before the first message, which
        # would replay the whole stream (harmlessly: applied sequences are
        # skipped, but slowly). Start it from where this replica is.
        jsi = getattr(self._sub, "_jsi", None)
        if jsi is not None and getattr(jsi, "_sseq", 0) < self._applied:
            jsi._sseq = self._applied
        logger.debug("nats feed following", extra={"from_rv": self._applied + 1})

    def _refollow(self) -> None:
        """Remake the feed in the background, once at a time, until it works."""
        if self._nc is None or (self._restart is not None and not self._restart.done()):
            return

        async def restart() -> None:
            delay = 0.1
            while self._nc is not None:
                try:
                    await self._follow()
                    return
                except Exception as exc:  # JetStream may still be recovering
                    logger.warning(
                        "cannot follow the nats stream yet",
                        extra={"error": repr(exc), "rv": self._applied},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

        self._restart = asyncio.get_running_loop().create_task(restart())

    def _apply(self, msg: Msg) -> None:
        """Apply one message of the stream, in sequence order."""
        seq = msg.metadata.sequence.stream
        if seq <= self._applied:
            return  # already applied: the consumer was remade from before it
        headers = msg.headers or {}
        key = msg.subject[len(self._prefix) :]
        collection, _, name = key.partition(".")

        # A key's previous revision that this replica never saw was dropped
        # from the stream (the bucket's per-key history): the collection's
        # history is complete only after it.
        prev = headers.get(_EXPECTED_LAST, "")
        if prev.isdecimal() and int(prev) > self._revisions.get(key, 0):
            lost = int(prev)
            self._horizons[collection] = max(self._horizon(collection), lost)
            if self._open:
                # Found while serving (after a lost connection): the watchers
                # of this collection missed changes, and must hear it.
                logger.warning(
                    "nats bucket dropped changes this replica had not read",
                    extra={"collection": collection, "object_name": name, "rv": lost},
                )
            self._expire(collection, lost)
        self._revisions[key] = seq
        self._applied = seq

        change = self._change(seq, collection, name, msg.data, headers)
        if change is not None:
            self._record(change)
            self._publish(change)
        future = self._pending.pop(headers.get(_MSG_ID, ""), None)
        if future is not None and not future.done():
            if change is None:
                future.set_exception(
                    StoreUnavailable(f"cannot decode {collection} {name!r} at {seq}")
                )
            else:
                future.set_result(change)
        self._progress.set()

    def _change(
        self,
        seq: int,
        collection: str,
        name: str,
        data: bytes,
        headers: dict[str, str],
    ) -> Change | None:
        """Make the change of one message, ``None`` for one that is not a change."""
        if data:
            try:
                kind, obj, prev_labels = _decode(data, seq)
                return Change(seq, collection, name, kind, obj, prev_labels)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning(
                    "skipping a message the hub did not write",
                    extra={
                        "subject": f"{self._prefix}{collection}.{name}",
                        "rv": seq,
                        "error": repr(exc),
                    },
                )
                return None
        if headers.get(_KV_OPERATION) in _DELETES:
            # A delete made with another NATS tool: its last state is ours.
            last = self._objects.get(collection, {}).get(name)
            if last is not None:
                obj = dict(last.object)
                obj["metadata"] = dict(obj["metadata"], resourceVersion=str(seq))
                return Change(
                    seq, collection, name, EventType.DELETED, obj, last.labels
                )
        return None

    def _record(self, change: Change) -> None:
        objects = self._objects.setdefault(change.collection, {})
        if change.type is EventType.DELETED:
            objects.pop(change.name, None)
        else:
            objects[change.name] = change
        history = self._history.setdefault(change.collection, collections.deque())
        history.append(change)
        if len(history) > self.history:
            dropped = history.popleft().resource_version
            self._horizons[change.collection] = max(
                self._horizon(change.collection), dropped
            )

    # Connection events (nats-py callbacks)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            # Should not happen without client-side limits; if it does, a
            # message was dropped: follow again from the last applied one.
            logger.warning("nats feed dropped a message", extra={"rv": self._applied})
            self._refollow()
            return
        logger.debug("nats client error: %r", exc, extra={"error": repr(exc)})

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            self._connected.clear()
            logger.warning(
                "nats connection lost; writes wait, then fail with 503",
                extra={"bucket": self.bucket, "rv": self._applied},
            )

    async def _on_reconnected(self) -> None:
        if self._nc is None:
            return
        self._connected.set()
        url = self._nc.connected_url
        logger.info(
            "nats connection back; following the stream again",
            extra={"server": url.netloc if url else "", "rv": self._applied},
        )
        self._refollow()

    # Private

    def _client(self) -> NATSClient:
        if self._nc is None:
            raise StoreUnavailable(f"nats store {self.location} is not open")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        self._client()
        assert self._js is not None
        return self._js

    def _subject(self, collection: str, name: str) -> str:
        return f"{self._prefix}{_key(collection, name)}"

    def _horizon(self, collection: str) -> int:
        return max(self._horizons.get(collection, 0), self._floor)

    def _unavailable(self, message: str, exc: BaseException) -> StoreUnavailable:
        """Log a driver failure and return the hub error that reports it."""
        logger.warning(
            "nats store unavailable",
            extra={"servers": self._servers, "bucket": self.bucket, "error": repr(exc)},
        )
        return StoreUnavailable(f"{message} nats store {self.location}: {exc!r}")


def _key(collection: str, name: str) -> str:
    # Collections hold no dot and names no empty token, so this splits back.
    return f"{collection}.{name}"


def _unversioned(obj: dict[str, Any]) -> dict[str, Any]:
    """Return ``obj`` without its resourceVersion: the stream's sequence is it."""
    obj = dict(obj)
    metadata = dict(obj["metadata"])
    metadata.pop("resourceVersion", None)
    obj["metadata"] = metadata
    return obj


def _envelope(
    kind: EventType, obj: dict[str, Any], prev_labels: dict[str, str] | None
) -> bytes:
    return codec.dumps({"type": kind.value, "prevLabels": prev_labels, "object": obj})


def _decode(
    data: bytes, seq: int
) -> tuple[EventType, dict[str, Any], dict[str, str] | None]:
    """Read an envelope; the object gets ``seq`` as its resourceVersion."""
    envelope = codec.loads(data)
    kind = EventType(envelope["type"])
    obj = envelope["object"]
    obj["metadata"]["resourceVersion"] = str(seq)
    prev_labels = envelope.get("prevLabels")
    return kind, obj, prev_labels if isinstance(prev_labels, dict) else None


def _conflict(collection: str, name: str, precondition: int) -> NoReturn:
    raise Conflict(
        f'operation cannot be fulfilled on {collection} "{name}": the object has '
        f"been modified (not at resourceVersion {precondition})",
        name=name,
        kind=collection,
    )


def _too_busy(collection: str, name: str) -> NoReturn:
    raise Conflict(
        f'{collection} "{name}" changed too often to write; try again',
        name=name,
        kind=collection,
    )
