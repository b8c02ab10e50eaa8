"""Running the hub as a server: the store, the HTTP API, signals, logging."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web

from .api.app import ServerConfig, create_app
from .hub import Hub, HubConfig
from .store import open_store

__all__ = ["ServeOptions", "run", "serve"]

logger = logging.getLogger("watchhub.http")


@dataclass
class ServeOptions:
    """
    Where and how the hub serves.

    Attributes:
        host: The address to listen on.
        port: The port; 0 picks a free one.
        store: ``sqlite`` (default) or ``memory``.
        data: The SQLite file.
        hub: The hub's tunables.
        server: The HTTP side's tunables.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    store: str = "sqlite"
    data: str = "watchhub.db"
    hub: HubConfig = field(default_factory=HubConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


async def run(options: ServeOptions, stop: asyncio.Event | None = None) -> None:
    """
    Serve until ``stop`` is set, or until SIGINT or SIGTERM.

    On the way out every watch ends (WebSockets close with 1001) and the store
    closes.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    store = open_store(options.store, data=options.data, history=options.hub.history)
    hub = Hub(store, options.hub)
    app = create_app(hub, options.server)
    # Handlers are cancelled when their client goes away, so that a watcher
    # whose client vanished is freed at once, not at its next write.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        for address in _addresses(runner):
            logger.info(
                "watchhub listening on http://%s, %s store at %s",
                address,
                store.kind,
                store.location,
                extra={"address": address, "store": store.kind, "data": store.location},
            )
        await stop.wait()
        logger.info("shutting down", extra={"watchers": hub.watchers})
    finally:
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    logger.info("stopped")


def _addresses(runner: web.AppRunner) -> list[str]:
    found = []
    for server in runner.sites:
        sockets = getattr(getattr(server, "_server", None), "sockets", None) or []
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return found


def serve(options: ServeOptions) -> None:
    """Serve in a new event loop (uvloop where installed) until a signal."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional: the standard loop serves too
        asyncio.run(run(options))
    else:
        uvloop.run(run(options))
