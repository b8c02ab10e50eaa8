"""The embedded hub: operations and watches in process."""

from __future__ import annotations

import asyncio

import pytest

from clients import Client
from hub import Hub, HubConfig, StreamWatcher
from hub.core.errors import AlreadyExists, BadRequest, Conflict, Invalid, NotFound
from hub.store import MemoryStore

from .conftest import TIMEOUT, start_hub


async def test_embedded_watcher_is_the_client_type() -> None:
    """The in-process watcher and the network client's are the same type."""
    async with Hub() as hub:
        running = await start_hub(hub)
        try:
            async with Client(running.url) as client:
                remote = await client.watch("pods")
                local = await hub.collection("pods").watch_all()
                assert type(remote) is type(local) is StreamWatcher
                remote.stop()
                local.stop()
        finally:
            await running.runner.cleanup()


async def test_embedded_operations_and_errors() -> None:
    """The embedded collection gives the same results and errors as the API."""
    async with Hub() as hub:
        pods = hub.collection("pods")
        created = await pods.create({"metadata": {"name": "a"}, "spec": {"x": 1}})
        assert created["metadata"]["resourceVersion"] == "1"
        with pytest.raises(AlreadyExists):
            await pods.create({"metadata": {"name": "a"}})
        with pytest.raises(Invalid):
            await pods.create({"metadata": {"name": "A"}})
        created["spec"]["x"] = 99  # a copy: the hub's state is untouched
        assert (await pods.get("a"))["spec"] == {"x": 1}
        patched = await pods.patch("a", {"spec": {"y": 2}})
        assert patched["spec"] == {"x": 1, "y": 2}
        with pytest.raises(Conflict):
            stale = {"metadata": {"name": "a", "resourceVersion": "1"}}
            await pods.replace(stale)
        listed = await pods.list(label_selector="")
        assert [item["metadata"]["name"] for item in listed["items"]] == ["a"]
        with pytest.raises(BadRequest):
            await pods.list(label_selector="a in (")
        await pods.delete("a")
        with pytest.raises(NotFound):
            await pods.get("a")


async def test_stop_unblocks_a_waiting_reader() -> None:
    """stop() is idempotent and ends an iteration that waits for an event."""
    async with Hub() as hub:
        watcher = await hub.collection("pods").watch_all()
        seen = []

        async def consume() -> None:
            async for event in watcher:
                seen.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        watcher.stop()
        watcher.stop()
        await asyncio.wait_for(task, TIMEOUT)
        assert seen == []
        await watcher.wait_closed()
        assert hub.watchers == 0


async def test_watch_single_waits_for_creation() -> None:
    """Watching a name that does not exist yet waits for it to be created."""
    async with Hub() as hub:
        pods = hub.collection("pods")
        watcher = await pods.watch_single("later")
        await pods.create({"metadata": {"name": "other"}})
        await pods.create({"metadata": {"name": "later"}})
        async with watcher:
            event = await asyncio.wait_for(anext(watcher), TIMEOUT)
        assert (event.type.value, event.name) == ("ADDED", "later")


async def test_selector_transitions_embedded() -> None:
    """Relabelling into, within and out of a selector: ADDED, MODIFIED, DELETED."""
    async with Hub() as hub:
        pods = hub.collection("pods")
        await pods.create({"metadata": {"name": "a", "labels": {"app": "db"}}})
        watcher = await pods.watch_all(label_selector="app=web", resource_version="1")
        await pods.patch("a", {"spec": {"outside": True}})
        await pods.patch("a", {"metadata": {"labels": {"app": "web"}}})
        await pods.patch("a", {"spec": {"inside": True}})
        await pods.patch("a", {"metadata": {"labels": {"app": "cache"}}})
        await pods.patch("a", {"spec": {"outside": 2}})
        await pods.create({"metadata": {"name": "end", "labels": {"app": "web"}}})
        found = []
        async with watcher:
            async for event in watcher:
                found.append((event.type.value, event.name, event.resource_version))
                if event.name == "end":
                    break
        assert found == [
            ("ADDED", "a", "3"),
            ("MODIFIED", "a", "4"),
            ("DELETED", "a", "5"),
            ("ADDED", "end", "7"),
        ]
        # the DELETED event carries the object's new state
        assert (await pods.get("a"))["metadata"]["labels"] == {"app": "cache"}


async def test_expired_start_is_an_error_event() -> None:
    """A watch from before the kept history yields one ERROR event, then ends."""
    async with Hub(MemoryStore(history=5), HubConfig(history=5)) as hub:
        pods = hub.collection("pods")
        for index in range(20):
            await pods.create({"metadata": {"name": f"p{index}"}})
        watcher = await pods.watch_all(resource_version="2")
        events = [event async for event in watcher]
        assert [event.type.value for event in events] == ["ERROR"]
        assert events[0].object["code"] == 410
        assert events[0].object["reason"] == "Expired"
