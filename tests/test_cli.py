"""The ``watchhub`` command line against a real hub process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from .conftest import TIMEOUT, spawn_hub


def cli(
    url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clients.cli", args[0], "--server", url, *args[1:]]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


async def test_apply_get_delete(tmp_path: Path, hub_processes) -> None:
    """apply creates then replaces, get shows a table or JSON, delete removes."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({"kind": "Pod", "metadata": {"name": "web"}}))
    result = await asyncio.to_thread(cli, proc.url, "apply", "-f", str(manifest))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pods/web created (resourceVersion 1)"
    result = await asyncio.to_thread(cli, proc.url, "apply", "-f", str(manifest))
    assert result.stdout.strip() == "pods/web replaced (resourceVersion 2)"

    listing = (
        '[{"metadata": {"name": "a", "labels": {"app": "x"}}},'
        ' {"metadata": {"name": "b"}}]'
    )
    result = await asyncio.to_thread(
        cli, proc.url, "apply", "-f", "-", "-c", "things", stdin=listing
    )
    assert result.returncode == 0, result.stderr

    result = await asyncio.to_thread(cli, proc.url, "get", "things")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "RESOURCEVERSION", "AGE", "LABELS"]
    assert lines[1].split()[0] == "a" and lines[1].split()[-1] == "app=x"
    result = await asyncio.to_thread(cli, proc.url, "get", "pods", "web", "-o", "json")
    assert json.loads(result.stdout)["metadata"]["resourceVersion"] == "2"

    result = await asyncio.to_thread(cli, proc.url, "delete", "pods", "web")
    assert result.returncode == 0 and "deleted" in result.stdout
    result = await asyncio.to_thread(cli, proc.url, "get", "pods", "web")
    assert result.returncode == 1
    assert "not found" in result.stderr and "404 NotFound" in result.stderr


async def test_watch_prints_a_line_per_event(tmp_path: Path, hub_processes) -> None:
    """watch prints type, name and resourceVersion per event, or JSON with -o json."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    for name in ("a", "b"):
        manifest = tmp_path / f"{name}.json"
        manifest.write_text(json.dumps({"metadata": {"name": name}}))
        await asyncio.to_thread(
            cli, proc.url, "apply", "-f", str(manifest), "-c", "pods"
        )

    async def watch(*args: str) -> list[str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clients.cli",
            "watch",
            "--server",
            proc.url,
            "pods",
            *args,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        lines = []
        async with asyncio.timeout(TIMEOUT):
            for _ in range(2):
                lines.append((await process.stdout.readline()).decode().rstrip())
        process.kill()
        await process.wait()
        return lines

    table = await watch()
    assert [line.split() for line in table] == [
        ["ADDED", "a", "1"],
        ["ADDED", "b", "2"],
    ]
    raw = await watch("-o", "json", "--transport", "websocket")
    assert [json.loads(line)["type"] for line in raw] == ["ADDED", "ADDED"]
    since = await watch("--since", "0", "--transport", "sse")
    assert since == table
