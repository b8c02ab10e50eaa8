"""The endpoints reconciler example converges, against real hub processes."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import Client
from hub.core.errors import AlreadyExists, NotFound

from .conftest import ROOT, TIMEOUT, HubProcess, eventually, spawn_hub

EXAMPLES = ROOT / "examples"
APPS = ["a", "b", "c"]
TIERS = ["x", "y"]
# A small pool, so that pods share IPs now and then; one is not an address.
IPS = [f"10.0.0.{n}" for n in (1, 2, 9, 10, 100)] + ["fe80::1", "not-an-ip"]


def expected_endpoints(
    services: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """Compute, from lists, the IPs each service's endpoints must list."""
    result = {}
    for service in services:
        selector = (service.get("spec") or {}).get("selector") or {}
        ips = set()
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            try:
                ips.add(ipaddress.ip_address((pod.get("status") or {}).get("podIP")))
            except ValueError:
                continue  # no IP, or not an address: not an endpoint
        ordered = sorted(ips, key=lambda ip: (ip.version, int(ip)))
        result[service["metadata"]["name"]] = [str(ip) for ip in ordered]
    return result


async def converged(client: Client) -> bool:
    """Tell whether every endpoints object is what a fresh computation says."""
    services = (await client.list("services"))["items"]
    pods = (await client.list("pods"))["items"]
    endpoints = (await client.list("endpoints"))["items"]
    have = {item["metadata"]["name"]: item.get("ips") for item in endpoints}
    return have == expected_endpoints(services, pods)


async def random_change(client: Client, rng: random.Random) -> None:
    """Make one random change to a pod or a service."""
    pod = f"pod-{rng.randrange(10)}"
    service = f"svc-{rng.randrange(4)}"
    roll = rng.random()
    try:
        if roll < 0.25:
            labels = {"app": rng.choice(APPS), "tier": rng.choice(TIERS)}
            status = {"podIP": rng.choice(IPS)} if rng.random() < 0.8 else {}
            body = {"metadata": {"name": pod, "labels": labels}, "status": status}
            await client.create("pods", body)
        elif roll < 0.4:
            labels = {"app": rng.choice(APPS), "tier": rng.choice(TIERS)}
            await client.patch("pods", pod, {"metadata": {"labels": labels}})
        elif roll < 0.55:
            ip = rng.choice([*IPS, None])
            await client.patch("pods", pod, {"status": {"podIP": ip}})
        elif roll < 0.7:
            await client.delete("pods", pod)
        elif roll < 0.8:
            selector = {"app": rng.choice(APPS)}
            if rng.random() < 0.3:
                selector["tier"] = rng.choice(TIERS)
            elif rng.random() < 0.1:
                selector = {}
            body = {"metadata": {"name": service}, "spec": {"selector": selector}}
            await client.create("services", body)
        elif roll < 0.92:
            selector = {"app": rng.choice(APPS)}
            await client.replace(
                "services",
                {"metadata": {"name": service}, "spec": {"selector": selector}},
            )
        else:
            await client.delete("services", service)
    except (AlreadyExists, NotFound):
        pass


@pytest.fixture
def reconcilers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Reconciler processes a test starts; stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_reconciler(
    tmp_path: Path, url: str, started: list[subprocess.Popen[bytes]]
) -> Path:
    """Run ``examples/reconciler.py`` against ``url``; return its log's path."""
    log = tmp_path / f"reconciler-{len(started)}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "reconciler.py"),
                "--server",
                url,
                "--resync",
                "0",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    started.append(process)
    return log


async def test_reconciler_converges_after_random_changes(
    tmp_path: Path,
    hub_processes: list[HubProcess],
    reconcilers: list[subprocess.Popen[bytes]],
) -> None:
    """After random pod and service changes, every endpoints object is right."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    log = start_reconciler(tmp_path, proc.url, reconcilers)
    rng = random.Random("converge")
    async with Client(proc.url) as client:
        for _ in range(150):
            await random_change(client, rng)
            if rng.random() < 0.1:
                # Now and then, let the controller catch up with a burst.
                await asyncio.sleep(0)
        await eventually(lambda: converged(client), 2 * TIMEOUT)
        endpoints = (await client.list("endpoints"))["items"]
    assert reconcilers[0].poll() is None, log.read_text()
    # The sequence made endpoints both with and without IPs.
    lists = [item["ips"] for item in endpoints]
    assert any(lists) and [] in lists
    assert "Traceback" not in log.read_text()


async def test_reconciler_converges_through_a_hub_restart(
    tmp_path: Path,
    hub_processes: list[HubProcess],
    reconcilers: list[subprocess.Popen[bytes]],
) -> None:
    """The controller converges again after its hub restarts in the middle."""
    data = str(tmp_path / "hub.db")
    first = spawn_hub(tmp_path, "--store", "sqlite", "--data", data)
    hub_processes.append(first)
    port = int(first.url.rsplit(":", 1)[1])
    log = start_reconciler(tmp_path, first.url, reconcilers)
    rng = random.Random("restart")
    async with Client(first.url) as client:
        for _ in range(80):
            await random_change(client, rng)
        await eventually(lambda: converged(client), 2 * TIMEOUT)
        for _ in range(20):
            await random_change(client, rng)

    # Restart while the controller may still be writing.
    first.process.terminate()
    await asyncio.to_thread(first.process.wait, TIMEOUT)
    second = spawn_hub(tmp_path, "--store", "sqlite", "--data", data, port=port)
    hub_processes.append(second)

    async with Client(second.url) as client:
        for _ in range(80):
            await random_change(client, rng)
        await eventually(lambda: converged(client), 3 * TIMEOUT)
    assert reconcilers[0].poll() is None, log.read_text()


async def test_reconciler_keeps_up_with_the_churn_script(
    tmp_path: Path,
    hub_processes: list[HubProcess],
    reconcilers: list[subprocess.Popen[bytes]],
) -> None:
    """The README demo: churn_pods.py runs, and the endpoints end up right."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    start_reconciler(tmp_path, proc.url, reconcilers)
    churn = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "churn_pods.py"),
        "--server",
        proc.url,
        "--seed",
        "1",
        "--steps",
        "60",
        "--interval",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    async with asyncio.timeout(3 * TIMEOUT):
        out, err = await churn.communicate()
    assert churn.returncode == 0, err.decode()
    assert len(out.decode().splitlines()) == 60
    async with Client(proc.url) as client:
        await eventually(lambda: converged(client), 2 * TIMEOUT)
        names = [
            i["metadata"]["name"] for i in (await client.list("endpoints"))["items"]
        ]
    assert sorted(names) == ["api", "front", "web"]
