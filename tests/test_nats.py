"""Hub replicas on NATS JetStream: real nats-server processes, real sockets."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest

from hub import Hub, HubConfig
from hub.store.nats import NATSStore

from .conftest import (
    TIMEOUT,
    HubProcess,
    RunningHub,
    eventually,
    free_port,
    spawn_hub,
    start_hub,
)

NATS_SERVER = Path(sys.executable).parent / "nats-server"


class NATSServer:
    """A nats-server process with JetStream on a directory of its own."""

    def __init__(
        self,
        tmp: Path,
        name: str = "n1",
        *,
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.port = free_port()
        self.dir = tmp / f"nats-{name}"
        self.log = tmp / f"nats-{name}.log"
        self.cluster_port = cluster_port
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-sd", str(self.dir), "--server_name", self.name]
        if self.cluster_port is not None:
            args += ["--cluster_name", "watchhub", "--cluster"]
            args += [f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"nats-server did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=TIMEOUT)


@pytest.fixture
def nats_servers() -> Iterator[list[NATSServer]]:
    """nats-server processes a test starts; all are killed at the end."""
    started: list[NATSServer] = []
    yield started
    for server in started:
        server.stop(kill=True)


@pytest.fixture
def nats_server(tmp_path: Path, nats_servers: list[NATSServer]) -> NATSServer:
    """One nats-server with JetStream."""
    server = NATSServer(tmp_path)
    server.start()
    nats_servers.append(server)
    return server


@pytest.fixture
async def replicas() -> AsyncIterator[list[RunningHub]]:
    """Hub replicas a test serves; all are closed at the end."""
    running: list[RunningHub] = []
    yield running
    for replica in running:
        await replica.runner.cleanup()


async def replica(
    running: list[RunningHub], servers: str | list[str], **options: Any
) -> RunningHub:
    """Serve one more hub replica on a NATS store and remember it."""
    config = HubConfig(future_version_wait=TIMEOUT)
    hub = await start_hub(Hub(NATSStore(servers, **options), config))
    running.append(hub)
    return hub


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"n": 0}}


class Watch:
    """A chunked HTTP watch whose events are collected as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for line in self.response.content:
            if line.strip():
                self.events.append(orjson.loads(line))

    @property
    def seen(self) -> list[tuple[str, str, int]]:
        """(type, name, resourceVersion) of each event but bookmarks."""
        return [
            (
                event["type"],
                event["object"]["metadata"]["name"],
                int(event["object"]["metadata"]["resourceVersion"]),
            )
            for event in self.events
            if event["type"] in ("ADDED", "MODIFIED", "DELETED")
        ]

    def close(self) -> None:
        self.task.cancel()
        self.response.close()


async def watch(
    http: aiohttp.ClientSession, url: str, collection: str, rv: str = "0"
) -> Watch:
    response = await http.get(
        f"{url}/api/v1/{collection}",
        params={"watch": "true", "resourceVersion": rv},
    )
    assert response.status == 200
    return Watch(response)


async def write(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json()


async def test_replicas_give_every_watcher_every_event_once_in_one_order(
    tmp_path: Path,
    nats_server: NATSServer,
    replicas: list[RunningHub],
    hub_processes: list[HubProcess],
    http: aiohttp.ClientSession,
) -> None:
    """Writes spread over three replicas reach every watcher once, in order."""
    a = await replica(replicas, nats_server.url)
    b = await replica(replicas, nats_server.url)
    process = spawn_hub(
        tmp_path, "--store", nats_server.url, "--nats-bucket", "watchhub"
    )
    hub_processes.append(process)
    urls = [a.url, b.url, process.url]
    watches = [await watch(http, url, "pods") for url in urls]

    # Creates, updates and deletes, through every replica at once.
    async def work(i: int) -> list[int]:
        base = f"{urls[i % 3]}/api/v1/pods"
        status, made = await write(http, "POST", base, pod(f"p{i}"))
        assert status == 201, made
        body = dict(made, spec={"n": 1})
        status, replaced = await write(http, "PUT", f"{base}/p{i}", body)
        assert status == 200, replaced
        rvs = [made, replaced]
        if i % 2:
            status, deleted = await write(http, "DELETE", f"{base}/p{i}")
            assert status == 200, deleted
            rvs.append(deleted)
        return [int(obj["metadata"]["resourceVersion"]) for obj in rvs]

    acknowledged = sorted(
        rv for rvs in await asyncio.gather(*(work(i) for i in range(24))) for rv in rvs
    )
    await eventually(lambda: all(len(w.seen) >= len(acknowledged) for w in watches))

    first = watches[0].seen
    assert [rv for _, _, rv in first] == acknowledged
    for other in watches[1:]:
        assert other.seen == first
    for w in watches:
        w.close()

    # Each replica lists the same state at a version at least its own last write.
    lists = [await (await http.get(f"{url}/api/v1/pods")).json() for url in urls]
    names = [sorted(item["metadata"]["name"] for item in lst["items"]) for lst in lists]
    assert names[0] == sorted(f"p{i}" for i in range(0, 24, 2))
    assert names[1] == names[0] and names[2] == names[0]
    assert all(int(lst["metadata"]["resourceVersion"]) >= 1 for lst in lists)


async def test_replicas_read_their_own_writes(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """A list on the replica that acknowledged a write includes it at once."""
    a = await replica(replicas, nats_server.url)
    await replica(replicas, nats_server.url)
    for i in range(10):
        status, made = await write(http, "POST", f"{a.url}/api/v1/pods", pod(f"p{i}"))
        assert status == 201
        listed = await (await http.get(f"{a.url}/api/v1/pods")).json()
        assert int(listed["metadata"]["resourceVersion"]) >= int(
            made["metadata"]["resourceVersion"]
        )
        assert f"p{i}" in {item["metadata"]["name"] for item in listed["items"]}


async def test_racing_writes_on_two_replicas_give_one_winner(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """Two replicas racing on one object give one success and one 409."""
    a = await replica(replicas, nats_server.url)
    b = await replica(replicas, nats_server.url)

    results = await asyncio.gather(
        write(http, "POST", f"{a.url}/api/v1/pods", pod("web")),
        write(http, "POST", f"{b.url}/api/v1/pods", pod("web")),
    )
    assert sorted(status for status, _ in results) == [201, 409]
    made = next(body for status, body in results if status == 201)
    loser = next(body for status, body in results if status == 409)
    assert loser["reason"] == "AlreadyExists"

    rv = made["metadata"]["resourceVersion"]
    await eventually(lambda: b.hub.resource_version >= int(rv))
    bodies = [dict(made, spec={"n": n}) for n in (1, 2)]
    results = await asyncio.gather(
        write(http, "PUT", f"{a.url}/api/v1/pods/web", bodies[0]),
        write(http, "PUT", f"{b.url}/api/v1/pods/web", bodies[1]),
    )
    assert sorted(status for status, _ in results) == [200, 409]
    loser = next(body for status, body in results if status == 409)
    assert loser["reason"] == "Conflict"

    # A replica that has not seen the newest revision still writes the truth.
    status, current = await write(http, "GET", f"{a.url}/api/v1/pods/web")
    rv = current["metadata"]["resourceVersion"]
    status, deleted = await write(
        http, "DELETE", f"{b.url}/api/v1/pods/web?resourceVersion={rv}"
    )
    assert status == 200, deleted
    status, again = await write(http, "POST", f"{a.url}/api/v1/pods", pod("web"))
    assert status == 201, again


async def test_watch_resumes_on_another_replica(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """A resourceVersion from replica A resumes a watch on replica B."""
    a = await replica(replicas, nats_server.url)
    b = await replica(replicas, nats_server.url)
    for i in range(3):
        status, made = await write(http, "POST", f"{a.url}/api/v1/pods", pod(f"p{i}"))
    since = made["metadata"]["resourceVersion"]
    status, later = await write(http, "POST", f"{a.url}/api/v1/pods", pod("p3"))

    resumed = await watch(http, b.url, "pods", rv=since)
    await write(http, "DELETE", f"{a.url}/api/v1/pods/p0")
    await eventually(lambda: len(resumed.seen) >= 2)
    assert [(kind, name) for kind, name, _ in resumed.seen] == [
        ("ADDED", "p3"),
        ("DELETED", "p0"),
    ]
    assert resumed.seen[0][2] == int(later["metadata"]["resourceVersion"])
    resumed.close()


async def test_replica_started_late_answers_410_where_the_bucket_dropped_history(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """A replica that finds a key's old revisions gone answers 410 before them."""
    a = await replica(replicas, nats_server.url, key_history=2)
    status, quiet = await write(http, "POST", f"{a.url}/api/v1/quiet", pod("q"))
    status, made = await write(http, "POST", f"{a.url}/api/v1/busy", pod("x"))
    rvs = [int(made["metadata"]["resourceVersion"])]
    for n in range(1, 5):
        status, made = await write(
            http, "PUT", f"{a.url}/api/v1/busy/x", dict(made, spec={"n": n})
        )
        assert status == 200
        rvs.append(int(made["metadata"]["resourceVersion"]))

    # A replica that started late loads only what the bucket kept: the last
    # two revisions of busy/x.
    late = await replica(replicas, nats_server.url, key_history=2)
    expired = await watch(http, late.url, "busy", rv=str(rvs[0]))
    await eventually(lambda: bool(expired.events))
    event = expired.events[0]
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    expired.close()

    # From the dropped revision on, the history is complete.
    resumed = await watch(http, late.url, "busy", rv=str(rvs[2]))
    await eventually(lambda: len(resumed.seen) >= 2)
    assert [rv for _, _, rv in resumed.seen] == rvs[3:]
    resumed.close()

    # Another collection's watchers are not sent away.
    calm = await watch(http, late.url, "quiet", rv=quiet["metadata"]["resourceVersion"])
    await write(http, "DELETE", f"{late.url}/api/v1/quiet/q")
    await eventually(lambda: bool(calm.events))
    assert calm.seen[0][:2] == ("DELETED", "q")
    calm.close()

    # The replica that saw every change itself keeps its own history.
    kept = await watch(http, a.url, "busy", rv=str(rvs[0]))
    await eventually(lambda: len(kept.seen) >= 4)
    assert [rv for _, _, rv in kept.seen] == rvs[1:]
    kept.close()


async def test_nats_restart_loses_no_acknowledged_write(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """Writes fail with 503 while NATS is away; watchers resume without loss."""
    a = await replica(replicas, nats_server.url, write_timeout=0.5)
    b = await replica(replicas, nats_server.url, write_timeout=0.5)
    watches = [await watch(http, a.url, "pods"), await watch(http, b.url, "pods")]
    acknowledged = []
    for i in range(5):
        status, made = await write(http, "POST", f"{a.url}/api/v1/pods", pod(f"p{i}"))
        assert status == 201
        acknowledged.append(int(made["metadata"]["resourceVersion"]))

    nats_server.stop()
    status, refused = await write(http, "POST", f"{b.url}/api/v1/pods", pod("down"))
    assert status == 503, refused
    assert refused["reason"] == "ServiceUnavailable"
    listed = await (await http.get(f"{a.url}/api/v1/pods")).json()
    assert len(listed["items"]) == 5

    nats_server.start()

    # A write refused while the connection came back may still have been
    # stored: each attempt takes a new name, and only acknowledged ones count.
    attempts = iter(range(1000))

    async def written(url: str) -> bool:
        name = f"q{next(attempts)}"
        status, made = await write(http, "POST", f"{url}/api/v1/pods", pod(name))
        if status == 201:
            acknowledged.append(int(made["metadata"]["resourceVersion"]))
        return status == 201

    for url in [a.url, b.url] * 3:
        await eventually(lambda url=url: written(url))

    last = acknowledged[-1]
    await eventually(lambda: all(w.seen and w.seen[-1][2] >= last for w in watches))
    assert watches[0].seen == watches[1].seen
    rvs = [rv for _, _, rv in watches[0].seen]
    assert rvs == sorted(set(rvs))
    assert set(acknowledged) <= set(rvs)
    for w in watches:
        assert not w.task.done()
        w.close()


class Proxy:
    """A TCP relay to a NATS server, which a test cuts off and restores."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._links: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (again, on the same port once it has one) and relay."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream = await asyncio.open_connection(
            "127.0.0.1", self.target
        )
        self._links += [writer, upstream]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                _drop(dst)

        await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))

    async def cut_off(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._links:
            _drop(writer)
        self._links.clear()


def _drop(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()
    writer.close()


async def test_replica_cut_off_while_the_bucket_drops_history_answers_410(
    nats_server: NATSServer, replicas: list[RunningHub], http: aiohttp.ClientSession
) -> None:
    """A replica that reconnects to find unread revisions gone answers 410."""
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        a = await replica(replicas, nats_server.url, key_history=2)
        b = await replica(
            replicas,
            f"nats://127.0.0.1:{proxy.port}",
            key_history=2,
            write_timeout=0.5,
        )
        status, made = await write(http, "POST", f"{a.url}/api/v1/busy", pod("x"))
        status, calm = await write(http, "POST", f"{a.url}/api/v1/calm", pod("y"))
        calm_rv = calm["metadata"]["resourceVersion"]
        await eventually(lambda: b.hub.resource_version >= int(calm_rv))
        busy_watch = await watch(http, b.url, "busy", rv=calm_rv)
        calm_watch = await watch(http, b.url, "calm", rv=calm_rv)

        await proxy.cut_off()
        status, refused = await write(http, "POST", f"{b.url}/api/v1/calm", pod("z"))
        assert status == 503, refused
        for n in range(1, 5):
            status, made = await write(
                http, "PUT", f"{a.url}/api/v1/busy/x", dict(made, spec={"n": n})
            )
            assert status == 200, made
        await proxy.start()

        last = int(made["metadata"]["resourceVersion"])
        await eventually(lambda: b.hub.resource_version >= last)
        await eventually(lambda: bool(busy_watch.events))
        assert busy_watch.events[0]["type"] == "ERROR"
        assert busy_watch.events[0]["object"]["code"] == 410
        status, got = await write(http, "GET", f"{b.url}/api/v1/busy/x")
        assert got["metadata"]["resourceVersion"] == str(last)

        # The other collection's watcher goes on.
        status, _ = await write(http, "POST", f"{b.url}/api/v1/calm", pod("w"))
        assert status == 201
        await eventually(lambda: bool(calm_watch.seen))
        assert calm_watch.seen[0][:2] == ("ADDED", "w")
        assert not calm_watch.task.done()
        busy_watch.close()
        calm_watch.close()
    finally:
        await proxy.cut_off()


async def wait_for_meta_leader(servers: list[str]) -> None:
    """Wait until the cluster's JetStream answers: it has elected a meta leader."""
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream(timeout=1.0)

        async def answers() -> bool:
            try:
                await js.account_info()
            except Exception:
                return False
            return True

        await eventually(answers, timeout=3 * TIMEOUT)
    finally:
        await nc.close()


async def test_cluster_keeps_serving_with_one_node_killed(
    tmp_path: Path,
    nats_servers: list[NATSServer],
    replicas: list[RunningHub],
    http: aiohttp.ClientSession,
) -> None:
    """On a three-node cluster with replicas 3, the hub outlives one node."""
    cluster_ports = [free_port() for _ in range(3)]
    for i in range(3):
        routes = tuple(port for j, port in enumerate(cluster_ports) if j != i)
        server = NATSServer(
            tmp_path, f"n{i + 1}", cluster_port=cluster_ports[i], routes=routes
        )
        nats_servers.append(server)
    for server in nats_servers:
        server.start()
    urls = [server.url for server in nats_servers]
    await wait_for_meta_leader(urls)

    a = await replica(replicas, urls, replicas=3)
    b = await replica(replicas, urls, replicas=3)
    watcher = await watch(http, b.url, "pods")
    status, made = await write(http, "POST", f"{a.url}/api/v1/pods", pod("before"))
    assert status == 201, made

    # Kill the node replica A is connected to: it fails over to another one.
    store = a.hub.store
    assert isinstance(store, NATSStore)
    connected = store._nc.connected_url.port if store._nc else None
    victim = next(server for server in nats_servers if server.port == connected)
    victim.stop(kill=True)

    async def written(name: str) -> bool:
        status, _ = await write(http, "POST", f"{a.url}/api/v1/pods", pod(name))
        return status == 201

    await eventually(lambda: written("after"), timeout=3 * TIMEOUT)
    await eventually(lambda: written("again"), timeout=3 * TIMEOUT)
    listed = await (await http.get(f"{b.url}/api/v1/pods")).json()
    await eventually(lambda: [name for _, name, _ in watcher.seen][-1:] == ["again"])
    assert [name for _, name, _ in watcher.seen] == ["before", "after", "again"]
    status, got = await write(http, "GET", f"{a.url}/api/v1/pods/after")
    assert status == 200, got
    assert {item["metadata"]["name"] for item in listed["items"]} >= {"before"}
    watcher.close()
