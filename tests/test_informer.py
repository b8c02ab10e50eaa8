"""The informer against real hubs: cuts, restarts, compaction, selectors, resyncs."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clients import Client
from clients.backoff import Backoff
from clients.informer import Informer
from hub import Hub, HubConfig
from hub.core.errors import AlreadyExists, NotFound
from hub.core.selectors import LabelSelector
from hub.store import MemoryStore

from .conftest import TIMEOUT, HubProcess, RunningHub, eventually, spawn_hub, start_hub

NAMES = [f"thing-{i}" for i in range(12)]
APPS = ["web", "db", "cache"]


def fast_backoff(seed: int = 0) -> Backoff:
    """A backoff short enough for tests, with seeded jitter."""
    return Backoff(initial=0.02, maximum=0.2, rng=random.Random(seed))


class Proxy:
    """A TCP proxy in front of a hub whose connections a test cuts at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = ""
        self.accepting = True
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free port; return the proxy's URL."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def cut(self) -> None:
        """Reset every connection through the proxy, as a broken network would."""
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        """Stop listening and cut what is open."""
        self.accepting = False
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer)
            )
        finally:
            self._writers -= {writer, up_writer}
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()


class Mirror:
    """A copy of the cache built only from handler calls, noting wrong ones."""

    def __init__(self, informer: Informer) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.calls = {"add": 0, "update": 0, "delete": 0}
        self.log: list[tuple[str, str]] = []
        informer.add_handler(self.on_add, self.on_update, self.on_delete)

    def on_add(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        self.calls["add"] += 1
        self.log.append(("add", name))
        if name in self.objects:
            self.problems.append(f"add of {name} which is there")
        self.objects[name] = obj

    async def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        name = new["metadata"]["name"]
        self.calls["update"] += 1
        self.log.append(("update", name))
        if self.objects.get(name) is not old:
            self.problems.append(f"update of {name} from a state it was not in")
        self.objects[name] = new

    def on_delete(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        self.calls["delete"] += 1
        self.log.append(("delete", name))
        if self.objects.pop(name, None) is None:
            self.problems.append(f"delete of {name} which is not there")


async def churn(
    client: Client,
    rng: random.Random,
    steps: int,
    between: Callable[[int], Awaitable[None] | None] | None = None,
) -> None:
    """Make ``steps`` random creates, label and spec changes, and deletes."""
    for step in range(steps):
        name = rng.choice(NAMES)
        roll = rng.random()
        try:
            if roll < 0.4:
                labels = {"app": rng.choice(APPS)}
                obj = {
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"n": step},
                }
                await client.create("things", obj)
            elif roll < 0.8:
                patch = {"metadata": {"labels": {"app": rng.choice(APPS)}}}
                await client.patch("things", name, {**patch, "spec": {"n": step}})
            else:
                await client.delete("things", name)
        except (AlreadyExists, NotFound):
            pass
        if between is not None:
            result = between(step)
            if result is not None:
                await result


async def matches_list(
    informer: Informer, client: Client, selector: str | None = None
) -> bool:
    """Tell whether the informer's cache is exactly what a fresh list says."""
    listed = await client.list("things", label_selector=selector)
    want = {item["metadata"]["name"]: item for item in listed["items"]}
    have = {obj["metadata"]["name"]: obj for obj in informer.list()}
    return want == have


@pytest.fixture
async def hub() -> AsyncIterator[RunningHub]:
    """A memory hub on a free port, with a history that covers every test here."""
    running = await start_hub(
        Hub(MemoryStore(history=10_000), HubConfig(history=10_000))
    )
    yield running
    await running.runner.cleanup()


@pytest.fixture
async def proxy(hub: RunningHub) -> AsyncIterator[Proxy]:
    """A cuttable proxy in front of the hub."""
    port = int(hub.url.rsplit(":", 1)[1])
    proxy = Proxy(port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.mark.parametrize("transport", ["chunked", "websocket", "sse"])
async def test_informer_cache_matches_a_list_after_random_cuts(
    hub: RunningHub, proxy: Proxy, transport: Any
) -> None:
    """Random writes while the informer's connections are cut leave a right cache."""
    rng = random.Random(f"cuts-{transport}")
    async with Client(hub.url) as writer, Client(proxy.url) as reader:
        informer = Informer(
            reader, "things", transport=transport, backoff=fast_backoff()
        )
        mirror = Mirror(informer)
        async with informer:
            await informer.wait_for_sync()

            async def maybe_cut(step: int) -> None:
                if rng.random() < 0.08:
                    proxy.cut()
                    # Let the informer notice at a random later point.
                    for _ in range(rng.randrange(4)):
                        await asyncio.sleep(0)

            await churn(writer, rng, 200, maybe_cut)
            await eventually(lambda: matches_list(informer, writer))
            stats = informer.statistics()
    assert proxy.cuts > 5
    assert stats.watches > 1 and stats.breaks > 0
    # A big history: every break was mended by resuming, never by a relist.
    assert stats.relists == 0 and stats.lists == 1
    assert mirror.problems == []
    assert mirror.objects == {obj["metadata"]["name"]: obj for obj in informer.list()}


async def test_informer_survives_a_hub_restart_with_sqlite(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """The cache is right across a restart of a hub process on the same file."""
    rng = random.Random("restart")
    data = str(tmp_path / "hub.db")
    first = spawn_hub(tmp_path, "--store", "sqlite", "--data", data)
    hub_processes.append(first)
    port = int(first.url.rsplit(":", 1)[1])
    async with Client(first.url) as client:
        informer = Informer(client, "things", backoff=fast_backoff())
        mirror = Mirror(informer)
        async with informer:
            await informer.wait_for_sync()
            await churn(client, rng, 60)
            await eventually(lambda: matches_list(informer, client))

            first.process.terminate()
            await asyncio.to_thread(first.process.wait, TIMEOUT)
            second = spawn_hub(tmp_path, "--store", "sqlite", "--data", data, port=port)
            hub_processes.append(second)
            await churn(client, rng, 60)
            await eventually(lambda: matches_list(informer, client))
            stats = informer.statistics()
    assert stats.watches >= 2 and stats.breaks >= 1
    assert mirror.problems == []
    assert mirror.objects == {obj["metadata"]["name"]: obj for obj in informer.list()}


async def test_informer_lists_again_on_410_and_delivers_the_differences() -> None:
    """After a 410 the informer relists and delivers the missed changes as calls."""
    small = await start_hub(Hub(MemoryStore(history=5), HubConfig(history=5)))
    proxy = Proxy(int(small.url.rsplit(":", 1)[1]))
    url = await proxy.start()
    rng = random.Random("expired")
    try:
        async with Client(small.url) as writer, Client(url) as reader:
            await churn(writer, rng, 30)
            informer = Informer(reader, "things", backoff=fast_backoff())
            mirror = Mirror(informer)
            async with informer:
                await informer.wait_for_sync()
                gone, changed = sorted(mirror.objects)[:2]

                # The hub is unreachable while more changes than it keeps happen:
                # one object goes, one changes, one is new, and a filler churns.
                proxy.accepting = False
                proxy.cut()
                await eventually(lambda: informer.statistics().breaks >= 1)
                await writer.delete("things", gone)
                await writer.patch("things", changed, {"spec": {"changed": True}})
                await writer.create("things", {"metadata": {"name": "new"}})
                await writer.create("things", {"metadata": {"name": "filler"}})
                for n in range(10):
                    await writer.patch("things", "filler", {"spec": {"n": n}})
                mirror.log.clear()
                proxy.accepting = True

                await eventually(lambda: matches_list(informer, writer))
                stats = informer.statistics()
    finally:
        await proxy.close()
        await small.runner.cleanup()
    assert stats.relists >= 1 and stats.lists >= 2
    assert mirror.problems == []
    assert mirror.objects == {obj["metadata"]["name"]: obj for obj in informer.list()}
    # The differences came as the right calls, and only those.
    assert sorted(mirror.log) == sorted(
        [("delete", gone), ("update", changed), ("add", "new"), ("add", "filler")]
    )


async def test_informer_with_a_selector_keeps_only_what_matches(
    hub: RunningHub, proxy: Proxy
) -> None:
    """A selector-filtered informer's cache equals the filtered list, through cuts."""
    rng = random.Random("selector")
    async with Client(hub.url) as writer, Client(proxy.url) as reader:
        informer = Informer(
            reader, "things", label_selector="app=web", backoff=fast_backoff()
        )
        mirror = Mirror(informer)
        async with informer:
            await informer.wait_for_sync()

            async def maybe_cut(step: int) -> None:
                if rng.random() < 0.05:
                    proxy.cut()

            await churn(writer, rng, 150, maybe_cut)
            await eventually(lambda: matches_list(informer, writer, "app=web"))
    assert all(obj["metadata"]["labels"]["app"] == "web" for obj in informer.list())
    assert mirror.problems == []
    # Relabelled objects left and came back: more adds than objects created.
    assert mirror.calls["delete"] > 0


async def test_informer_cache_reads_by_label_selector(hub: RunningHub) -> None:
    """get, list with a selector, names and membership read the cache."""
    async with Client(hub.url) as client:
        for name, app in [("a", "web"), ("b", "db"), ("c", "web")]:
            obj = {"metadata": {"name": name, "labels": {"app": app}}}
            await client.create("things", obj)
        async with Informer(client, "things") as informer:
            await informer.wait_for_sync()
            assert informer.has_synced()
            web = informer.list("app=web")
            assert [o["metadata"]["name"] for o in web] == ["a", "c"]
            others = informer.list(LabelSelector.parse("app!=web"))
            assert [o["metadata"]["name"] for o in others] == ["b"]
            assert informer.names() == ["a", "b", "c"] and len(informer) == 3
            assert "b" in informer and informer.get("z") is None
            assert (informer.get("b") or {})["metadata"]["labels"] == {"app": "db"}
            await client.delete("things", "b")
            await eventually(lambda: "b" not in informer)


async def test_informer_renews_a_watch_that_ends_on_timeout(hub: RunningHub) -> None:
    """A watch the hub ends on its timeout is renewed from the last resourceVersion."""
    async with Client(hub.url) as client:
        informer = Informer(client, "things", watch_timeout=1)
        async with informer:
            await informer.wait_for_sync()
            await client.create("things", {"metadata": {"name": "before"}})
            await eventually(lambda: informer.statistics().watches >= 2)
            await client.create("things", {"metadata": {"name": "after"}})
            await eventually(lambda: matches_list(informer, client))
            stats = informer.statistics()
    assert stats.lists == 1 and stats.relists == 0 and stats.breaks == 0
    assert informer.names() == ["after", "before"]


async def test_informer_resync_redelivers_cached_objects(hub: RunningHub) -> None:
    """With a resync period, each cached object comes again as an update to itself."""
    async with Client(hub.url) as client:
        await client.create("things", {"metadata": {"name": "a"}})
        informer = Informer(client, "things", resync_period=0.05)
        resynced: list[str] = []

        def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            if old is new:
                resynced.append(new["metadata"]["name"])

        informer.add_handler(on_update=on_update)
        async with informer:
            await eventually(lambda: len(resynced) >= 2)
    assert set(resynced) == {"a"}
    assert informer.statistics().resyncs >= 2


async def test_informer_waits_for_a_hub_that_is_away(
    hub: RunningHub, proxy: Proxy
) -> None:
    """wait_for_sync returns once a hub that was away answers; it retries meanwhile."""
    proxy.accepting = False
    async with Client(proxy.url) as client:
        informer = Informer(client, "things", backoff=fast_backoff())
        async with informer:
            await eventually(lambda: informer.statistics().breaks >= 3)
            assert not informer.has_synced()
            proxy.accepting = True
            async with asyncio.timeout(TIMEOUT):
                await informer.wait_for_sync()
    assert informer.has_synced()


async def test_informer_handler_failure_is_logged_and_survived(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises is logged on watchhub.client; later changes still come."""
    seen: list[str] = []

    def on_add(obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("handler broke")

    async with Client(hub.url) as client:
        informer = Informer(client, "things")
        informer.add_handler(on_add=on_add)
        with caplog.at_level(logging.ERROR, logger="watchhub.client"):
            async with informer:
                await informer.wait_for_sync()
                await client.create("things", {"metadata": {"name": "bad"}})
                await client.create("things", {"metadata": {"name": "good"}})
                await eventually(lambda: seen == ["bad", "good"])
    failures = [r for r in caplog.records if r.message.startswith("informer handler")]
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_informer_refuses_misuse(hub: RunningHub) -> None:
    """Handlers after start, a second start, and waiting unstarted are errors."""
    async with Client(hub.url) as client:
        informer = Informer(client, "things")
        with pytest.raises(RuntimeError):
            await informer.wait_for_sync()
        async with informer:
            with pytest.raises(RuntimeError):
                informer.add_handler(on_add=print)
            with pytest.raises(RuntimeError):
                await informer.start()
        await informer.stop()  # idempotent
        with pytest.raises(ValueError):
            Informer(client, "things", resync_period=0)


async def test_informer_lists_again_when_a_new_hub_has_not_reached_its_version() -> (
    None
):
    """A hub restarted without its history answers 504; the cache follows it."""
    config = HubConfig(future_version_wait=0.1)
    first = await start_hub(Hub(MemoryStore(), config))
    port = int(first.url.rsplit(":", 1)[1])
    async with Client(first.url) as client:
        informer = Informer(client, "things", backoff=fast_backoff())
        mirror = Mirror(informer)
        async with informer:
            for name in ("a", "b", "c", "d"):
                await client.create("things", {"metadata": {"name": name}})
            await eventually(lambda: informer.names() == ["a", "b", "c", "d"])

            # A memory hub starts again from nothing, on the same port.
            await first.runner.cleanup()
            second = await start_hub(Hub(MemoryStore(), config), port=port)
            try:
                await client.create("things", {"metadata": {"name": "z"}})
                await eventually(lambda: matches_list(informer, client))
                stats = informer.statistics()
            finally:
                await second.runner.cleanup()
    assert stats.relists >= 1
    assert informer.names() == ["z"] and mirror.problems == []
    assert sorted(mirror.log[-5:]) == sorted(
        [
            ("delete", "a"),
            ("delete", "b"),
            ("delete", "c"),
            ("delete", "d"),
            ("add", "z"),
        ]
    )
