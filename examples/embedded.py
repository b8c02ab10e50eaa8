"""Embed the hub in a Python program: the same operations and watcher type."""

import asyncio

from hub import Hub
from hub.store import MemoryStore


async def main() -> None:
    async with Hub(MemoryStore()) as hub:
        pods = hub.collection("pods")
        watcher = await pods.watch_all()

        await pods.create({"metadata": {"name": "web"}, "spec": {"replicas": 1}})
        await pods.patch("web", {"spec": {"replicas": 3}})
        await pods.delete("web")

        async with watcher:
            async for event in watcher:
                print(event.type.value, event.name, event.resource_version)
                if event.type.value == "DELETED":
                    break


if __name__ == "__main__":
    asyncio.run(main())
