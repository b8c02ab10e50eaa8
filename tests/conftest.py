"""Shared fixtures: a real hub on a free port, and ways to wait with a deadline."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hub import Hub, HubConfig
from hub.api import ServerConfig, create_app
from hub.store import MemoryStore

#: One unit for every deadline in the tests; WATCHHUB_TEST_TIMEOUT stretches it
#: on a slow machine.
TIMEOUT = float(os.environ.get("WATCHHUB_TEST_TIMEOUT", "10"))

ROOT = Path(__file__).resolve().parent.parent


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = TIMEOUT
) -> None:
    """Wait until ``check()`` holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@dataclass
class RunningHub:
    """A hub served over HTTP on a free port of the loopback."""

    hub: Hub
    url: str
    runner: web.AppRunner

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


async def start_hub(
    hub: Hub | None = None, server: ServerConfig | None = None, port: int = 0
) -> RunningHub:
    """Serve ``hub`` (a new memory hub by default) on ``port`` (0: a free one)."""
    hub = hub or Hub(MemoryStore())
    runner = web.AppRunner(
        create_app(hub, server), handler_cancellation=True, shutdown_timeout=2.0
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return RunningHub(hub, f"http://127.0.0.1:{port}", runner)


@pytest.fixture
async def served() -> AsyncIterator[RunningHub]:
    """A memory hub served on a free port, with a small watch history."""
    running = await start_hub(Hub(MemoryStore(history=50), HubConfig(history=50)))
    yield running
    await running.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        yield s


def free_port() -> int:
    """Return a port that is free on the loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HubProcess:
    """A ``watchhub serve`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def spawn_hub(tmp_path: Path, *args: str, port: int | None = None) -> HubProcess:
    """Start ``watchhub serve`` in a process and wait until it answers."""
    port = port or free_port()
    log = tmp_path / f"hub-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "serve", "--port", str(port), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"hub did not start:\n{log.read_text()}") from None
            time.sleep(0.02)
    return HubProcess(process, url, log)


@pytest.fixture
def hub_processes() -> Iterator[list[HubProcess]]:
    """Hub processes a test starts; any still running at the end are killed."""
    started: list[HubProcess] = []
    yield started
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


async def read_lines(
    response: aiohttp.ClientResponse, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Read ``count`` NDJSON events from a watch response, with a deadline."""
    import orjson

    events = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            line = await response.content.readline()
            if not line:
                break
            if line.strip():
                events.append(orjson.loads(line))
    return events
