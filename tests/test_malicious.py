"""Malicious clients are cut off, and a normal watcher beside them goes on.

Slowloris (request heads that never end), WebSocket garbage and oversized
frames; one client opening thousands of watches is in tests/test_security.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import TIMEOUT, HubProcess, eventually, read_lines, spawn_hub

HEADER_TIMEOUT = 1.0


@pytest.fixture
async def hub_process(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> AsyncIterator[HubProcess]:
    """A memory hub process with a short deadline for request heads."""
    proc = spawn_hub(
        tmp_path, "--store", "memory", "--header-timeout", str(HEADER_TIMEOUT)
    )
    hub_processes.append(proc)
    yield proc


class Neighbour:
    """A normal watcher, and the writes it must keep seeing."""

    def __init__(self, proc: HubProcess) -> None:
        self.proc = proc
        self.count = 0

    async def __aenter__(self) -> Neighbour:
        self.session = aiohttp.ClientSession()
        self.watch = await self.session.get(self.proc.url + "/api/v1/watch/pods")
        assert self.watch.status == 200
        return self

    async def check(self) -> None:
        """Write one object and see its event on the watch."""
        name = f"n{self.count}"
        self.count += 1
        async with self.session.post(
            self.proc.url + "/api/v1/pods", json={"metadata": {"name": name}}
        ) as response:
            assert response.status == 201
        (event,) = await read_lines(self.watch, 1)
        assert event["object"]["metadata"]["name"] == name

    async def __aexit__(self, *exc: object) -> None:
        self.watch.close()
        await self.session.close()


async def test_slowloris_heads_are_cut_off(hub_process: HubProcess) -> None:
    """Connections that trickle a request head in are closed after the deadline."""
    port = int(hub_process.url.rsplit(":", 1)[1])
    async with Neighbour(hub_process) as neighbour:
        sockets = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n")
            sockets.append((reader, writer))
        closed: set[int] = set()

        async def trickle(i: int) -> None:
            reader, writer = sockets[i]
            # One header byte every 100 ms: the head never ends on its own.
            for byte in b"X-Slow: " + b"a" * 200:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(1024), 0.1)
                except TimeoutError:
                    continue
                except ConnectionError:
                    data = b""
                if not data:
                    closed.add(i)
                    return

        tasks = [asyncio.create_task(trickle(i)) for i in range(len(sockets))]
        await neighbour.check()
        await eventually(lambda: len(closed) == len(sockets), HEADER_TIMEOUT + TIMEOUT)
        await asyncio.gather(*tasks)
        await neighbour.check()
        for _, writer in sockets:
            writer.close()


async def test_websocket_garbage_is_cut_off(hub_process: HubProcess) -> None:
    """Bytes that are no WebSocket frame end that connection, and only that one."""
    port = int(hub_process.url.rsplit(":", 1)[1])
    async with Neighbour(hub_process) as neighbour:
        for garbage in (b"\xff" * 64, os.urandom(4096), b"GET / HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16))
            writer.write(
                b"GET /api/v1/watch/pods HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert head.startswith(b"HTTP/1.1 101")
            writer.write(garbage)
            # The hub answers with a close frame (1002) and ends the connection.
            async with asyncio.timeout(TIMEOUT):
                while await reader.read(65536):
                    pass
            writer.close()
            await neighbour.check()


async def test_websocket_huge_frame_is_refused_with_1009(
    hub_process: HubProcess,
) -> None:
    """A message above the hub's limit closes that WebSocket with 1009."""
    url = hub_process.url.replace("http", "ws") + "/api/v1/watch/pods"
    async with Neighbour(hub_process) as neighbour:
        async with connect(url, max_size=None) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                async with asyncio.timeout(TIMEOUT):
                    # The hub may close while the message is still being sent:
                    # the close then shows on the send rather than on a read.
                    await ws.send("x" * (2 * 1024 * 1024))
                    while True:
                        await ws.recv()
            assert caught.value.rcvd is not None
            assert caught.value.rcvd.code == 1009
        async with connect(url, max_size=None) as flood:
            # Many small messages are read and dropped; the watch goes on.
            for _ in range(2000):
                await flood.send(orjson.dumps({"type": "ADDED"}).decode())
            await neighbour.check()
            event = orjson.loads(await asyncio.wait_for(flood.recv(), TIMEOUT))
            assert event["object"]["metadata"]["name"] == "n0"
        await neighbour.check()
