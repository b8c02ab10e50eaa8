"""The load client: watch connections and a writer over raw asyncio protocols.

Most watch connections only count events: each event carries a marker (the
bytes that open it on the wire) and a connection counts the markers in what it
receives, without parsing. A few sampled connections also read each event's
resourceVersion (to check the order) and the timestamp the writer put into the
object (for the write-to-receive latency). Every target is driven by the same
code; only the requests, the marker and the sample's pattern differ
(:class:`Dialect`).

The writer is open-loop at a fixed rate: a schedule by the clock, spread over
several keep-alive connections with requests pipelined, never waiting for the
previous answer; each object carries the time its write was scheduled, so a
late write shows as latency. At the maximum rate it keeps a fixed number of
requests in flight on each connection instead, so the server sets the pace.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

__all__ = ["Dialect", "LoadSpec", "Measured", "dialect", "run_load"]

_clock = time.perf_counter
_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
# A masked, empty pong: the answer to the empty pings aiohttp sends.
_PING = b"\x89\x00"
_PONG = b"\x8a\x80\x00\x00\x00\x00"


def _http(method: str, path: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra
    if body or method in ("POST", "PUT"):
        head += b"Content-Type: application/json\r\nContent-Length: "
        head += str(len(body)).encode() + b"\r\n"
    return head + b"\r\n" + body


# The targets


class Dialect:
    """What differs between targets: requests, the event marker, the sample."""

    marker = b'{"type":"'
    _rv = re.compile(rb'"resourceVersion":"(\d+)"')
    _ts = re.compile(rb'"ts":([0-9.]+)[,}]')

    def __init__(self, websocket: bool = False) -> None:
        self.websocket = websocket

    def watch(self, collection: str, name: str | None, rv: int) -> bytes:
        """Return the request that opens one watch."""
        path = f"/api/v1/watch/{collection}" + (f"/{name}" if name else "")
        extra = b""
        if self.websocket:
            extra = (
                b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + _WS_KEY + b"\r\n"
            )
        return _http("GET", f"{path}?resourceVersion={rv}", extra=extra)

    def write(
        self, collection: str, name: str, seq: int, ts: float, create: bool
    ) -> bytes:
        """Return the request of one write, stamped with its scheduled time."""
        body = b'{"metadata":{"name":"%s"},"spec":{"seq":%d,"ts":%r}}' % (
            name.encode(),
            seq,
            ts,
        )
        if create:
            return _http("POST", f"/api/v1/{collection}", body)
        return _http("PUT", f"/api/v1/{collection}/{name}", body)

    def sample(self, piece: bytes) -> tuple[int, float] | None:
        """
        Return (resourceVersion, timestamp) of a received event, if complete.

        The resourceVersion is 0 where the object has none (the ceiling).
        """
        ts = self._ts.search(piece)
        if ts is None:
            return None
        rv = self._rv.search(piece)
        return (int(rv.group(1)) if rv else 0), float(ts.group(1))

    async def setup(self, base: str, collection: str, names: list[str]) -> int:
        """Create the objects; return the resourceVersion to watch from."""
        rv = 0
        async with aiohttp.ClientSession(base) as session:
            for name in names:
                body = self.write(collection, name, -1, 0.0, create=True)
                data = body[body.index(b"\r\n\r\n") + 4 :]
                async with session.post(
                    f"/api/v1/{collection}",
                    data=data,
                    headers={"Content-Type": "application/json"},
                ) as answer:
                    if answer.status not in (200, 201):
                        raise RuntimeError(f"setup write failed: {answer.status}")
                    obj = orjson.loads(await answer.read())
                    rv = int(obj.get("metadata", {}).get("resourceVersion", 0) or 0)
        return rv


class EtcdDialect(Dialect):
    """etcd's HTTP JSON gateway: keys under ``/bench/{collection}/``."""

    marker = b'"kv":'
    _rev = re.compile(rb'"mod_revision":"(\d+)"')
    _value = re.compile(rb'"value":"([A-Za-z0-9+/=]*)"')

    @staticmethod
    def _key(collection: str, name: str = "") -> str:
        return base64.b64encode(f"/bench/{collection}/{name}".encode()).decode()

    def watch(self, collection: str, name: str | None, rv: int) -> bytes:
        request: dict[str, Any] = {"key": self._key(collection, name or "")}
        if name is None:
            # The range [/bench/c/, /bench/c0) is every key under the prefix.
            end = f"/bench/{collection}0".encode()
            request["range_end"] = base64.b64encode(end).decode()
        body = orjson.dumps({"create_request": request})
        return _http("POST", "/v3/watch", body)

    def write(
        self, collection: str, name: str, seq: int, ts: float, create: bool
    ) -> bytes:
        value = b'{"seq":%d,"ts":%r}' % (seq, ts)
        body = orjson.dumps(
            {
                "key": self._key(collection, name),
                "value": base64.b64encode(value).decode(),
            }
        )
        return _http("POST", "/v3/kv/put", body)

    def sample(self, piece: bytes) -> tuple[int, float] | None:
        rev = self._rev.search(piece)
        value = self._value.search(piece)
        if rev is None or value is None:
            return None
        ts = self._ts.search(base64.b64decode(value.group(1)) + b"}")
        if ts is None:
            return None
        return int(rev.group(1)), float(ts.group(1))

    async def setup(self, base: str, collection: str, names: list[str]) -> int:
        async with aiohttp.ClientSession(base) as session:
            for name in names:
                request = self.write(collection, name, -1, 0.0, create=True)
                data = request[request.index(b"\r\n\r\n") + 4 :]
                async with session.post("/v3/kv/put", data=data) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"setup write failed: {answer.status}")
        return 0


def dialect(target: str, transport: str = "chunked") -> Dialect:
    """Return the dialect of a target: hub, ceiling or etcd."""
    if target == "etcd":
        return EtcdDialect()
    return Dialect(websocket=transport == "websocket")


# Counting and sampling


@dataclass
class Counters:
    """What every connection adds to."""

    delivered: int = 0
    opened: int = 0
    failed: int = 0
    closed: int = 0
    last: float = 0.0
    acked: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    write_latencies: list[float] = field(default_factory=list)
    disorder: int = 0


class _Sampler:
    def __init__(self, dialect: Dialect, counters: Counters) -> None:
        self.dialect = dialect
        self.counters = counters
        self.buffer = b""
        self.rv = 0

    def feed(self, data: bytes, now: float) -> None:
        marker = self.dialect.marker
        pieces = (self.buffer + data).split(marker)
        self.buffer = b""
        last = len(pieces) - 1
        for index in range(1, last + 1):
            found = self.dialect.sample(pieces[index])
            if found is None:
                if index == last:
                    self.buffer = marker + pieces[index]
                continue
            rv, ts = found
            if rv:
                if rv <= self.rv:
                    self.counters.disorder += 1
                self.rv = rv
            self.counters.latencies.append(now - ts)


class WatchConnection(asyncio.Protocol):
    """One watch: counts the events it receives by their marker."""

    def __init__(
        self,
        counters: Counters,
        request: bytes,
        marker: bytes,
        sampler: _Sampler | None,
        websocket: bool,
    ) -> None:
        self.counters = counters
        self.request = request
        self.marker = marker
        self.k = len(marker) - 1
        self.sampler = sampler
        self.websocket = websocket
        self.head = b""
        self.open = False
        self.tail = b""
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.head[9:12] not in (b"200", b"101"):
                self.counters.failed += 1
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            self.counters.opened += 1
            data, self.head = self.head[end + 4 :], b""
        marker = self.marker
        found = data.count(marker)
        if self.tail:
            # A marker cut in two by the read boundary.
            found += (self.tail + data[: self.k]).count(marker)
        self.tail = data[-self.k :]
        if found:
            counters = self.counters
            counters.delivered += found
            counters.last = _clock()
            self.count += found
        if self.sampler is not None:
            self.sampler.feed(data, _clock())
        if self.websocket and _PING in data:
            assert self.transport is not None
            self.transport.write(_PONG)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counters.closed += 1


class WriteConnection(asyncio.Protocol):
    """A keep-alive connection that pipelines writes and reads their answers."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.pending: deque[float] = deque()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.on_answer: Callable[[WriteConnection], None] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, ts: float) -> None:
        assert self.transport is not None
        self.pending.append(ts)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        counters = self.counters
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            at = head.find(b"content-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else end])
                total = end + 4 + length
            else:
                # Chunked: the body ends with the last, empty chunk.
                last = buffer.find(b"\r\n0\r\n\r\n", end + 2)
                if last < 0:
                    break
                total = last + 7
            if len(buffer) < total:
                break
            now = _clock()
            ts = self.pending.popleft()
            if head[9:10] == b"2":
                counters.acked += 1
            else:
                counters.errors += 1
            counters.write_latencies.append(now - ts)
            buffer = buffer[total:]
            if self.on_answer is not None:
                self.on_answer(self)
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


# Running a load


class _Meter(Protocol):
    def cpu_seconds(self) -> float: ...

    def rss(self) -> int: ...


@dataclass
class LoadSpec:
    """
    One load.

    Attributes:
        mode: ``fanout`` (every watcher sees every write), ``one`` (each
            watcher watches its own object), ``idle`` (no writes) or ``writes``
            (no watchers).
        rate: Writes per second, or ``None`` for the highest the server accepts.
        budget: At the highest rate, stop writing once this many deliveries
            are due, so that draining the backlog stays bounded.
        ports: Every replica of the server (``port`` alone when empty); writer
            connections and watches go to them round-robin.
    """

    host: str
    port: int
    dialect: Dialect
    mode: str
    watchers: int = 0
    rate: float | None = 100.0
    duration: float = 5.0
    warmup: float = 1.0
    writers: int = 4
    window: int = 8
    objects: int = 100
    create: bool = False
    samples: int = 16
    budget: int = 1_000_000
    drain_stall: float = 5.0
    drain_cap: float = 20.0
    collection: str = "bench"
    ports: list[int] = field(default_factory=list)

    def port_of(self, index: int) -> int:
        """Return the port of the ``index``-th connection, round-robin."""
        return self.ports[index % len(self.ports)] if self.ports else self.port


@dataclass
class Measured:
    """What one load measured, before it is put in a result."""

    writes: int
    write_errors: int
    write_seconds: float
    expected: int
    delivered: int
    seconds: float
    server_cpu: float
    client_cpu: float
    rss_before: int
    rss_after: int
    latencies: list[float]
    write_latencies: list[float]
    disorder: int
    watch_failures: int
    watch_closed: int
    short_watchers: int


async def run_load(spec: LoadSpec, meter: _Meter) -> Measured:
    """Run one load against a started server, warm-up first."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    names = [
        f"obj-{i}" for i in range(spec.watchers if spec.mode == "one" else spec.objects)
    ]
    rv = 0
    if spec.mode != "writes" or not spec.create:
        rv = await spec.dialect.setup(
            f"http://{spec.host}:{spec.port}", spec.collection, names
        )
        await _caught_up(spec, rv)
    rss_before = meter.rss()

    # Watchers, opened in batches so the listen backlog never overflows.
    watches: list[WatchConnection] = []
    if spec.mode != "writes":
        watches = await _open_watches(spec, counters, names, rv)
    if spec.mode == "idle":
        await asyncio.sleep(1.0)
        cpu0, client0, t0 = meter.cpu_seconds(), time.process_time(), _clock()
        await asyncio.sleep(spec.duration)
        seconds = _clock() - t0
        return Measured(
            0, 0, 0.0, 0, counters.delivered, seconds,
            meter.cpu_seconds() - cpu0, (time.process_time() - client0) / seconds,
            rss_before, meter.rss(), [], [], 0, counters.failed, counters.closed, 0,
        )  # fmt: skip

    writers = []
    for index in range(spec.writers):
        _, conn = await loop.create_connection(
            lambda: WriteConnection(counters), spec.host, spec.port_of(index)
        )
        writers.append(conn)

    # Warm-up, discarded.
    seq = 0
    if spec.warmup > 0:
        seq = await _write(spec, writers, counters, seq, spec.warmup, warm=True)
        await _drain(spec, counters, _expected(spec, counters.acked))
    warm_acked = counters.acked
    _reset(counters)

    # The measured run.
    cpu0, client0, t0 = meter.cpu_seconds(), time.process_time(), _clock()
    seq = await _write(spec, writers, counters, seq, spec.duration, warm=False)
    write_seconds = _clock() - t0
    expected = _expected(spec, counters.acked)
    await _drain(spec, counters, expected)
    end = max(counters.last, t0 + write_seconds)
    cpu = meter.cpu_seconds() - cpu0
    client_cpu = time.process_time() - client0
    seconds = end - t0
    elapsed = _clock() - t0
    rss_after = meter.rss()
    for conn in writers:
        assert conn.transport is not None
        conn.transport.close()
    short = 0
    if spec.mode == "fanout":
        total = warm_acked + counters.acked
        short = sum(1 for watch in watches if watch.count < total)
    for watch in watches:
        if watch.transport is not None:
            watch.transport.close()
    return Measured(
        counters.acked, counters.errors, write_seconds, expected, counters.delivered,
        seconds, cpu, client_cpu / elapsed, rss_before, rss_after, counters.latencies,
        counters.write_latencies, counters.disorder, counters.failed, counters.closed,
        short,
    )  # fmt: skip


async def _open_watches(
    spec: LoadSpec, counters: Counters, names: list[str], rv: int
) -> list[WatchConnection]:
    loop = asyncio.get_running_loop()
    dialect = spec.dialect
    sampled = set(
        range(0, spec.watchers, max(1, spec.watchers // max(spec.samples, 1)))
    )
    watches: list[WatchConnection] = []

    def factory(index: int) -> Callable[[], WatchConnection]:
        name = names[index] if spec.mode == "one" else None
        request = dialect.watch(spec.collection, name, rv)
        sampler = _Sampler(dialect, counters) if index in sampled else None
        return lambda: WatchConnection(
            counters, request, dialect.marker, sampler, dialect.websocket
        )

    batch = 200
    for first in range(0, spec.watchers, batch):
        indexes = range(first, min(first + batch, spec.watchers))
        made = await asyncio.gather(
            *(
                loop.create_connection(factory(i), spec.host, spec.port_of(i))
                for i in indexes
            )
        )
        watches.extend(protocol for _, protocol in made)
        deadline = _clock() + 30.0
        while counters.opened + counters.failed < len(watches):
            if _clock() > deadline:
                raise RuntimeError(
                    f"only {counters.opened} of {len(watches)} watches opened"
                )
            await asyncio.sleep(0.005)
    if counters.failed:
        raise RuntimeError(f"{counters.failed} watches were refused")
    return watches


async def _caught_up(spec: LoadSpec, rv: int, timeout: float = 30.0) -> None:
    # A replica other than the one the setup wrote through may not have seen
    # those writes yet; watches opened there from ``rv`` wait until it has.
    if len(spec.ports) < 2:
        return
    deadline = _clock() + timeout
    async with aiohttp.ClientSession() as session:
        for port in spec.ports:
            url = f"http://{spec.host}:{port}/api/v1/{spec.collection}"
            while True:
                async with session.get(url) as answer:
                    listed = orjson.loads(await answer.read())
                seen = int(listed.get("metadata", {}).get("resourceVersion", 0) or 0)
                if seen >= rv:
                    break
                if _clock() > deadline:
                    raise RuntimeError(f"replica on port {port} stayed behind {rv}")
                await asyncio.sleep(0.02)


def _expected(spec: LoadSpec, acked: int) -> int:
    return (
        acked * spec.watchers
        if spec.mode == "fanout"
        else acked
        if spec.mode == "one"
        else 0
    )


async def _write(
    spec: LoadSpec,
    writers: list[WriteConnection],
    counters: Counters,
    seq: int,
    duration: float,
    warm: bool,
) -> int:
    dialect = spec.dialect
    names = spec.watchers if spec.mode == "one" else spec.objects
    loop = asyncio.get_running_loop()

    def request(n: int, ts: float) -> bytes:
        name = f"new-{n}" if spec.create else f"obj-{n % names}"
        return dialect.write(spec.collection, name, n, ts, spec.create)

    if spec.rate is not None:
        # Open loop: every write has its time on the schedule, whatever came back.
        count = max(1, int(spec.rate * duration))
        interval = 1.0 / spec.rate
        start = _clock()
        for i in range(count):
            due = start + i * interval
            delay = due - _clock()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            writers[i % len(writers)].send(request(seq + i, due), due)
        seq += count
    else:
        # Highest rate: a fixed number in flight per connection.
        fanout = spec.watchers if spec.mode == "fanout" else 1
        limit = max(1, spec.budget // max(fanout, 1))
        if warm:
            limit = max(1, limit // 10)
        stop_at = _clock() + duration
        state = {"seq": seq, "sent": 0}
        done = loop.create_future()

        def next_write(conn: WriteConnection) -> None:
            if state["sent"] >= limit or _clock() >= stop_at:
                if (
                    not conn.pending
                    and not done.done()
                    and all(not w.pending for w in writers)
                ):
                    done.set_result(None)
                return
            now = _clock()
            conn.send(request(state["seq"], now), now)
            state["seq"] += 1
            state["sent"] += 1

        for conn in writers:
            conn.on_answer = next_write
            for _ in range(spec.window):
                next_write(conn)
        await asyncio.wait_for(done, duration + 60)
        for conn in writers:
            conn.on_answer = None
        return state["seq"]

    # Wait for every answer of the open-loop schedule.
    deadline = _clock() + 60
    while any(conn.pending for conn in writers) and _clock() < deadline:
        await asyncio.sleep(0.002)
    return seq


async def _drain(spec: LoadSpec, counters: Counters, expected: int) -> None:
    start = last_change = _clock()
    seen = counters.delivered
    while counters.delivered < expected:
        now = _clock()
        if counters.delivered != seen:
            seen, last_change = counters.delivered, now
        if now - last_change > spec.drain_stall or now - start > spec.drain_cap:
            return
        await asyncio.sleep(0.002)


def _reset(counters: Counters) -> None:
    counters.delivered = 0
    counters.acked = 0
    counters.errors = 0
    counters.latencies.clear()
    counters.write_latencies.clear()
    counters.disorder = 0
