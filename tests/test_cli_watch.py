"""``watchhub watch`` reconnects by itself: across hub restarts and after a 410."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from clients import Client

from .conftest import TIMEOUT, HubProcess, spawn_hub


@asynccontextmanager
async def watching(url: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``watchhub watch`` against ``url``; kill it on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli",
        "watch",
        "--server",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def lines(process: asyncio.subprocess.Process, count: int) -> list[list[str]]:
    """Read ``count`` lines of the watch's output, split into words."""
    assert process.stdout is not None
    found = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(count):
            found.append((await process.stdout.readline()).decode().split())
    return found


async def stderr_until(process: asyncio.subprocess.Process, text: str) -> str:
    """Read the watch's stderr until a line holds ``text``; return all read."""
    assert process.stderr is not None
    seen = ""
    async with asyncio.timeout(TIMEOUT):
        while text not in seen:
            line = await process.stderr.readline()
            assert line, f"stderr ended without {text!r}: {seen}"
            seen += line.decode()
    return seen


async def test_watch_resumes_across_a_hub_restart(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """After a restart the watch resumes, saying so; nothing is missed or repeated."""
    data = str(tmp_path / "hub.db")
    first = spawn_hub(tmp_path, "--store", "sqlite", "--data", data)
    hub_processes.append(first)
    port = int(first.url.rsplit(":", 1)[1])
    async with Client(first.url) as client:
        await client.create(
            "pods", {"metadata": {"name": "a", "labels": {"app": "web"}}}
        )
        await client.create(
            "pods", {"metadata": {"name": "b", "labels": {"app": "db"}}}
        )

    async with watching(first.url, "pods", "-l", "app=web") as watch:
        assert await lines(watch, 1) == [["ADDED", "a", "1"]]
        first.process.terminate()
        await asyncio.to_thread(first.process.wait, TIMEOUT)
        said = await stderr_until(watch, "reconnecting")
        second = spawn_hub(tmp_path, "--store", "sqlite", "--data", data, port=port)
        hub_processes.append(second)
        async with Client(second.url) as client:
            labels = {"app": "web"}
            await client.create("pods", {"metadata": {"name": "c", "labels": labels}})
            await client.create("pods", {"metadata": {"name": "d"}})
            await client.patch("pods", "a", {"spec": {"n": 1}})
        assert await lines(watch, 2) == [["ADDED", "c", "3"], ["MODIFIED", "a", "5"]]
        said += await stderr_until(
            watch, "reconnected, watching from resourceVersion 2"
        )
    assert "the hub ended the watch" in said


async def test_watch_starts_again_after_a_410(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """A watch from a version the hub no longer holds says so and starts afresh."""
    proc = spawn_hub(tmp_path, "--store", "memory", "--history", "5")
    hub_processes.append(proc)
    async with Client(proc.url) as client:
        await client.create("pods", {"metadata": {"name": "a"}})
        for n in range(10):
            await client.patch("pods", "a", {"spec": {"n": n}})

    async with watching(proc.url, "pods", "--since", "1") as watch:
        said = await stderr_until(watch, "watching again from the current state")
        assert await lines(watch, 1) == [["ADDED", "a", "11"]]
    assert "410 Expired" in said


async def test_watch_without_reconnect_ends_with_the_watch(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """With --no-reconnect the command ends when the hub ends the watch."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    async with Client(proc.url) as client:
        await client.create("pods", {"metadata": {"name": "a"}})
    async with watching(proc.url, "pods", "--no-reconnect") as watch:
        assert await lines(watch, 1) == [["ADDED", "a", "1"]]
        proc.process.terminate()
        async with asyncio.timeout(TIMEOUT):
            _, err = await watch.communicate()
    assert watch.returncode == 0
    assert b"reconnect" not in err
