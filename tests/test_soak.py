"""A bounded soak: 500 watchers come and go at random while writes run.

The hub runs as its own process so that its memory (VmRSS) and open file
descriptors can be read from /proc. The run lasts WATCHHUB_SOAK_SECONDS
(default 60; set it to 600 or more for a long soak before a release).

Tolerances: file descriptors must come back to the baseline (two spare for a
late accept). Memory is measured after a warm-up of the same load, so that the
allocator's pools and the event log's ring are full before the baseline, and
must come back within 8 MiB of it; a 60 s run opens about 8,000 watches (on a
busy 2-core machine), so a leak of 1 KiB per watch would exceed that, while the
growth measured without a leak is under 1 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from .conftest import TIMEOUT, HubProcess, eventually, spawn_hub

SECONDS = float(os.environ.get("WATCHHUB_SOAK_SECONDS", "60"))
WATCHERS = 500
OBJECTS = 50
RSS_TOLERANCE = 8 * 1024 * 1024
FD_TOLERANCE = 2
_ENDS = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    """The number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """Watchers that connect and disconnect at random, and a steady writer."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.opened = 0
        self.events = 0

    async def watcher(self, http: aiohttp.ClientSession, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind = self.rng.choice(["chunked", "sse", "websocket"])
            url = f"{self.url}/api/v1/watch/pods"
            # The random life counts from the moment the watch is open, so that
            # a connection queued in the listen backlog is not given up early.
            life = self.rng.uniform(0.05, 1.5)
            if kind == "websocket":
                async with http.ws_connect(url) as ws:
                    self.opened += 1
                    await self.drain(ws.receive, life)
            else:
                headers = {"Accept": "text/event-stream"} if kind == "sse" else {}
                async with http.get(url, headers=headers) as response:
                    assert response.status == 200
                    self.opened += 1
                    await self.drain(response.content.readany, life)

    async def drain(self, read: Callable[[], Awaitable[object]], life: float) -> None:
        """Read until ``life`` is over (the caller then disconnects) or the end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(life):
                while True:
                    message = await read()
                    if not message or getattr(message, "type", None) in _ENDS:
                        return
                    self.events += 1

    async def writer(self, http: aiohttp.ClientSession, deadline: float) -> None:
        while time.monotonic() < deadline:
            name = f"p{self.rng.randrange(OBJECTS)}"
            patch = {"spec": {"n": self.rng.randrange(10**6)}}
            async with http.patch(
                f"{self.url}/api/v1/pods/{name}",
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                assert response.status == 200
            await asyncio.sleep(0.05)  # about 20 writes a second, each to every watcher

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(
                self.writer(http, deadline),
                *(self.watcher(http, deadline) for _ in range(WATCHERS)),
            )


async def test_soak_memory_and_fds_return_to_baseline(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """After the churn, the hub's memory and descriptors are back at their baseline."""
    proc = spawn_hub(
        tmp_path,
        "--store",
        "memory",
        "--history",
        "200",
        "--write-rate",
        "0",
        "--max-watchers-per-client",
        "2000",
        "--log-level",
        "warning",
    )
    hub_processes.append(proc)
    pid = proc.process.pid
    async with aiohttp.ClientSession() as http:
        for i in range(OBJECTS):
            async with http.post(
                f"{proc.url}/api/v1/pods", json={"metadata": {"name": f"p{i}"}}
            ) as response:
                assert response.status == 201
    idle_fds = fds(pid)

    # Warm-up: the same load, so that pools and the history ring fill first.
    await Load(proc.url, 1).run(max(5.0, SECONDS / 6))
    await eventually(lambda: fds(pid) <= idle_fds + FD_TOLERANCE, TIMEOUT)
    base_rss, base_fds = rss(pid), fds(pid)

    load = Load(proc.url, 2)
    started = time.monotonic()
    await load.run(SECONDS)
    elapsed = time.monotonic() - started
    assert load.opened > WATCHERS * 2, f"only {load.opened} watches were opened"

    await eventually(lambda: fds(pid) <= base_fds + FD_TOLERANCE, TIMEOUT)
    end_rss, end_fds = rss(pid), fds(pid)
    logging.getLogger("watchhub.tests").info(
        f"soak: {elapsed:.0f} s, {load.opened} watches, {load.events} reads; "
        f"rss {base_rss / 2**20:.1f} -> {end_rss / 2**20:.1f} MiB, "
        f"fds {base_fds} -> {end_fds}"
    )
    assert end_rss <= base_rss + RSS_TOLERANCE, (base_rss, end_rss)
    assert proc.process.poll() is None
