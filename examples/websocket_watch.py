"""Watch a collection over WebSocket with nothing but the websockets library."""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url: str) -> None:
    async with connect(url) as ws:
        async for message in ws:
            event = json.loads(message)
            meta = event["object"].get("metadata", {})
            print(event["type"], meta.get("name"), meta.get("resourceVersion"))


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1]
            if len(sys.argv) > 1
            else "ws://127.0.0.1:8080/api/v1/watch/pods"
        )
    )
