"""One run: start a server, load it, and turn what was measured into a result."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import load, servers

__all__ = ["CLIENT_LIMIT", "Run", "execute", "pin_client"]

#: A run whose load client used more of its core than this measured the client.
CLIENT_LIMIT = 0.70

SERVER_CORE = 0
CLIENT_CORE = 1


@dataclass
class Run:
    """
    One run of a scenario against one target.

    Attributes:
        target: ``hub``, ``ceiling`` or ``etcd``.
        transport: ``chunked`` or ``websocket`` (the hub only).
        store: The hub's store, ``memory``, ``sqlite`` or ``nats`` (a
            nats-server and ``replicas`` hub processes on it).
        replicas: Hub replicas with the ``nats`` store; the writer's
            connections and the watches are spread over them round-robin.
    """

    scenario: str
    target: str
    mode: str
    watchers: int = 0
    rate: float | None = 100.0
    transport: str = "chunked"
    store: str = "memory"
    replicas: int = 1
    duration: float = 5.0
    warmup: float = 1.0
    writers: int = 4
    window: int = 8
    create: bool = False
    budget: int = 1_000_000
    profile: Path | None = None

    @property
    def label(self) -> str:
        """The target as the tables name it."""
        if self.target == "hub":
            # nats runs name their replicas: hub/nats-r2, hub/chunked/nats-r2.
            nats = f"nats-r{self.replicas}" if self.store == "nats" else ""
            if self.mode == "writes":
                return f"hub/{nats or self.store}"
            return f"hub/{self.transport}" + (f"/{nats}" if nats else "")
        return self.target


def pin_client() -> bool:
    """Pin this process (the load client) to its core; False on a one-core machine."""
    servers.raise_file_limit()
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {CLIENT_CORE})
    return True


def execute(run: Run, scratch: Path, profile: Path | None = None) -> dict[str, Any]:
    """Start the run's server, load it, stop it; return the result."""
    pinned = len(os.sched_getaffinity(0)) == 1
    core = SERVER_CORE if pinned else None
    # Enough history that no watcher of a bounded run falls out of it.
    history = 200_000
    server: servers.Server | servers.Replicas
    if run.target == "hub" and run.store == "nats":
        server = servers.start_replicas(
            run.replicas, scratch, core=core, history=history
        )
        ports = server.ports
    else:
        server = servers.start(
            run.target, scratch, core=core, store=run.store, history=history
        )
        ports = [server.port]
    try:
        spec = load.LoadSpec(
            host="127.0.0.1",
            port=server.port,
            ports=ports,
            dialect=load.dialect(run.target, run.transport),
            mode=run.mode,
            watchers=run.watchers,
            rate=run.rate,
            duration=run.duration,
            warmup=run.warmup,
            writers=run.writers,
            window=run.window,
            create=run.create,
            budget=run.budget,
        )
        with _profiling(server, profile or run.profile):
            measured = _run_loop(load.run_load(spec, server))
    finally:
        server.stop()
    return _result(run, measured)


def _run_loop(coroutine: Any) -> load.Measured:
    try:
        import uvloop
    except ImportError:  # the client is faster on uvloop but runs without it
        return asyncio.run(coroutine)  # type: ignore[no-any-return]
    return uvloop.run(coroutine)  # type: ignore[no-any-return]


@contextmanager
def _profiling(
    server: servers.Server | servers.Replicas, output: Path | None
) -> Iterator[None]:
    if output is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [py_spy, "record", "--pid", str(server.process.pid), "--format", "raw",
         "--rate", "200", "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] * 1000}


def _cdf(values: list[float], points: int = 200) -> list[list[float]]:
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    step = max(1, n // points)
    cdf = [[(i + 1) / n, ordered[i] * 1000] for i in range(0, n, step)]
    cdf.append([1.0, ordered[-1] * 1000])
    return cdf


def _result(run: Run, m: load.Measured) -> dict[str, Any]:
    per = m.delivered if run.mode != "writes" else m.writes
    result: dict[str, Any] = {
        "scenario": run.scenario,
        "label": run.label,
        "target": run.target,
        "transport": run.transport,
        "store": run.store,
        "replicas": run.replicas if run.store == "nats" else 1,
        "mode": run.mode,
        "op": "create" if run.create else "update",
        "watchers": run.watchers,
        "rate": run.rate if run.rate is not None else "max",
        "writes": m.writes,
        "write_errors": m.write_errors,
        "write_rate": m.writes / m.write_seconds if m.write_seconds else 0.0,
        "expected": m.expected,
        "delivered": m.delivered,
        "complete": (
            m.delivered == m.expected
            and m.disorder == 0
            and m.short_watchers == 0
            and m.write_errors == 0
        ),
        "disorder": m.disorder,
        "short_watchers": m.short_watchers,
        "seconds": m.seconds,
        "events_per_s": m.delivered / m.seconds if m.seconds else 0.0,
        "latency_ms": _percentiles(m.latencies),
        "latency_cdf": _cdf(m.latencies),
        "latency_samples": len(m.latencies),
        "write_latency_ms": _percentiles(m.write_latencies),
        "server_cpu_s": m.server_cpu,
        "cpu_per_100k": m.server_cpu / per * 100_000 if per else 0.0,
        "rss_mb": m.rss_after / 2**20,
        "rss_per_watcher_kb": (
            (m.rss_after - m.rss_before) / run.watchers / 1024 if run.watchers else 0.0
        ),
        "client_cpu": m.client_cpu,
        "client_bound": m.client_cpu > CLIENT_LIMIT,
        "watch_failures": m.watch_failures,
    }
    return result
