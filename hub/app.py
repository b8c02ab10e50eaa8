"""Running the hub as a server: the store, the HTTP API, signals, logging."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from .api.app import ServerConfig, create_app
from .api.auth import AccessLogger
from .api.security import GUARD_KEY
from .hub import Hub, HubConfig
from .store import open_store

__all__ = ["ServeOptions", "run", "serve", "tls_context"]

logger = logging.getLogger("watchhub.http")


@dataclass
class ServeOptions:
    """
    Where and how the hub serves.

    Attributes:
        host: The address to listen on.
        port: The port; 0 picks a free one.
        store: ``sqlite`` (default), ``memory`` or ``nats://HOST:PORT`` (several
            servers of one cluster separated by commas).
        data: The SQLite file.
        nats_bucket: The JetStream key-value bucket of a ``nats://`` store.
        nats_replicas: JetStream replicas of that bucket, when the hub makes it.
        nats_key_history: Revisions that bucket keeps per key (1 to 64).
        hub: The hub's tunables.
        server: The HTTP side's tunables.
        tls_cert: A PEM certificate chain; with ``tls_key``, serve HTTPS.
        tls_key: The PEM private key of ``tls_cert``.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    store: str = "sqlite"
    data: str = "watchhub.db"
    nats_bucket: str = "watchhub"
    nats_replicas: int = 1
    nats_key_history: int = 64
    hub: HubConfig = field(default_factory=HubConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    tls_cert: str | None = None
    tls_key: str | None = None


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

    store = open_store(
        options.store,
        data=options.data,
        history=options.hub.history,
        nats_bucket=options.nats_bucket,
        nats_replicas=options.nats_replicas,
        nats_key_history=options.nats_key_history,
    )
    hub = Hub(store, options.hub)
    app = create_app(hub, options.server)
    # Handlers are cancelled when their client goes away, so that a watcher
    # whose client vanished is freed at once, not at its next write.
    # keepalive_timeout also bounds how long a new connection may take to send
    # its first complete request head: aiohttp arms it when the connection
    # opens, so a client that trickles a request in (slowloris) is cut off.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        keepalive_timeout=options.server.header_timeout,
        access_log_class=AccessLogger,
    )
    await runner.setup()
    try:
        context = tls_context(options.tls_cert, options.tls_key)
        site = web.TCPSite(runner, options.host, options.port, ssl_context=context)
        await site.start()
        scheme = "https" if context else "http"
        for address in _addresses(runner):
            logger.info(
                "watchhub listening on %s://%s, %s store at %s",
                scheme,
                address,
                store.kind,
                store.location,
                extra={"address": address, "store": store.kind, "data": store.location},
            )
        logger.info(
            "authentication: %s; authorization: %s",
            app[GUARD_KEY].auth.describe(),
            app[GUARD_KEY].describe_rules(),
        )
        await stop.wait()
        logger.info("shutting down", extra={"watchers": hub.watchers})
    finally:
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    logger.info("stopped")


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """
    Return the server's TLS context for a certificate and key, or ``None``.

    TLS 1.2 is the oldest version offered.

    Raises:
        ValueError: only one of the two is given.
        OSError, ssl.SSLError: a file cannot be read or does not hold a PEM
            certificate or key.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key must be given together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


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
