"""Crash safety: a hub killed with SIGKILL mid-write loses no acknowledged write."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp

from .conftest import HubProcess, spawn_hub

KILLS = 20
WRITERS = 4


async def writer(
    http: aiohttp.ClientSession, url: str, prefix: str, acked: dict[str, int]
) -> None:
    """Create objects until the hub goes; record each acknowledgement."""
    n = 0
    while True:
        name = f"{prefix}-{n}"
        n += 1
        try:
            async with http.post(url, json={"metadata": {"name": name}}) as response:
                if response.status != 201:
                    raise AssertionError(f"create {name}: {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, OSError):
            return  # the hub was killed: this write was never acknowledged
        acked[name] = int(body["metadata"]["resourceVersion"])


async def check_store(
    http: aiohttp.ClientSession, url: str, acked: dict[str, int]
) -> int:
    """Check every acknowledged write, and that versions run 1..N; return N."""
    async with http.get(url) as response:
        listed = await response.json()
    stored = {
        item["metadata"]["name"]: int(item["metadata"]["resourceVersion"])
        for item in listed["items"]
    }
    lost = {name: rv for name, rv in acked.items() if stored.get(name) != rv}
    assert not lost, f"acknowledged writes lost or changed: {sorted(lost.items())[:5]}"
    versions = sorted(stored.values())
    assert versions == list(range(1, len(versions) + 1)), "gap or repeat in versions"
    assert int(listed["metadata"]["resourceVersion"]) == len(versions)
    return len(versions)


async def test_sigkill_at_random_moments_loses_no_acknowledged_write(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """Killed 20 times mid-write, the hub keeps every acknowledged write, in order."""
    seed = int(os.environ.get("WATCHHUB_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    acked: dict[str, int] = {}
    args = ("--data", "hub.db", "--write-rate", "0", "--log-level", "warning")
    async with aiohttp.ClientSession() as http:
        for round_ in range(KILLS + 1):
            proc = spawn_hub(tmp_path, *args)
            hub_processes.append(proc)
            url = proc.url + "/api/v1/items"
            try:
                count = await check_store(http, url, acked)
            except AssertionError as error:
                raise AssertionError(
                    f"after kill {round_} (seed {seed}): {error}"
                ) from None
            if round_ == KILLS:
                break

            tasks = [
                asyncio.create_task(writer(http, url, f"r{round_}w{i}", acked))
                for i in range(WRITERS)
            ]
            # The kill lands at a random moment of the write stream.
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            proc.process.kill()
            proc.process.wait()
            await asyncio.gather(*tasks)
    assert len(acked) >= KILLS, f"too few writes were acknowledged: {len(acked)}"
    assert count >= len(acked)
