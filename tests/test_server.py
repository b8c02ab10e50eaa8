"""``watchhub serve`` as a process: start-up, shutdown, and durability."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect

from .conftest import TIMEOUT, HubProcess, read_lines, spawn_hub


async def create(http: aiohttp.ClientSession, url: str, name: str) -> dict:
    body = {"metadata": {"name": name}, "spec": {"n": name}}
    async with http.post(f"{url}/api/v1/pods", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


def wait_exit(proc: HubProcess, timeout: float) -> float:
    started = time.monotonic()
    proc.process.wait(timeout=timeout)
    return time.monotonic() - started


async def test_serve_logs_address_and_data(tmp_path: Path, hub_processes) -> None:
    """The start-up line says where the hub listens and where its data lives."""
    proc = spawn_hub(tmp_path, "--data", str(tmp_path / "hub.db"))
    hub_processes.append(proc)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{proc.url}/healthz") as response:
            assert response.status == 200
    log = proc.output()
    assert f"listening on {proc.url}" in log
    assert "sqlite store at " + str(tmp_path / "hub.db") in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_with_open_watches_exits_quickly(
    tmp_path: Path, hub_processes, signum: signal.Signals
) -> None:
    """SIGTERM or SIGINT ends open watches and exits within a few seconds."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{proc.url}/api/v1/watch/pods")
        ws = await connect(proc.url.replace("http", "ws") + "/api/v1/watch/pods")
        await create(http, proc.url, "a")
        (event,) = await read_lines(response, 1)
        assert event["type"] == "ADDED"
        await asyncio.wait_for(ws.recv(), TIMEOUT)

        proc.process.send_signal(signum)
        elapsed = await asyncio.to_thread(wait_exit, proc, 10)
        assert elapsed < 5
        assert proc.process.returncode == 0
        async with asyncio.timeout(TIMEOUT):
            assert await response.content.read() == b""
            await ws.wait_closed()
        assert ws.close_code == 1001
        response.close()
    assert "stopped" in proc.output()


async def test_acknowledged_writes_survive_sigkill(
    tmp_path: Path, hub_processes
) -> None:
    """Writes acknowledged before a SIGKILL are all there after a restart."""
    data = str(tmp_path / "hub.db")
    proc = spawn_hub(tmp_path, "--data", data)
    hub_processes.append(proc)
    acknowledged: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:

        async def writer(prefix: str) -> None:
            for index in range(10_000):
                try:
                    obj = await create(http, proc.url, f"{prefix}-{index}")
                except (aiohttp.ClientError, AssertionError):
                    return
                acknowledged[obj["metadata"]["name"]] = obj["metadata"][
                    "resourceVersion"
                ]

        writers = [asyncio.create_task(writer(f"w{n}")) for n in range(4)]
        deadline = time.monotonic() + TIMEOUT
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        proc.process.kill()
        await asyncio.gather(*writers)
    assert len(acknowledged) >= 300
    proc.process.wait()

    proc = spawn_hub(tmp_path, "--data", data)
    hub_processes.append(proc)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{proc.url}/api/v1/pods") as response:
            listed = await response.json()
        stored = {
            item["metadata"]["name"]: item["metadata"]["resourceVersion"]
            for item in listed["items"]
        }
        for name, rv in acknowledged.items():
            assert stored.get(name) == rv, name
        top = int(listed["metadata"]["resourceVersion"])
        assert top >= max(int(rv) for rv in acknowledged.values())
        assert sorted(int(rv) for rv in stored.values()) == list(range(1, top + 1))
        after = await create(http, proc.url, "after-restart")
        assert int(after["metadata"]["resourceVersion"]) == top + 1

        # The history survives too: a watch resumes from before the kill.
        url = f"{proc.url}/api/v1/watch/pods?resourceVersion={top - 5}"
        async with http.get(url) as response:
            events = await read_lines(response, 6)
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == list(range(top - 4, top + 2))
