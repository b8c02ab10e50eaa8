"""Watch a collection with the Python client, over any of the three transports."""

import asyncio
import os
import sys

from clients import Client


async def main(transport: str) -> None:
    async with Client(
        os.environ.get("WATCHHUB_URL", "http://127.0.0.1:8080")
    ) as client:
        watcher = await client.watch("pods", transport=transport)
        async with watcher:
            async for event in watcher:
                print(event.type.value, event.name, event.resource_version)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "chunked"))
