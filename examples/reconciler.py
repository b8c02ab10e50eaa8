"""The service-to-endpoints controller: a reconciler that uses only the hub's API.

::

    python examples/reconciler.py --server http://127.0.0.1:8080

A service names the pods it sends traffic to with ``spec.selector``, a map of
labels; a pod has labels and, once it runs, ``status.podIP``. For every service
the controller keeps the object ``endpoints/{service}`` equal to::

    {"metadata": {"name": SERVICE}, "ips": [the IPs of its pods, sorted]}

It follows services and pods with informers and reads only their caches; it
writes endpoints through the hub's REST API. Each change (a pod that comes,
goes, changes IP or labels; a service that comes, changes selector or goes)
puts the names of the services it concerns on a work queue, which holds each
name once however often it is added; workers take names off it and make the
endpoints right, which makes a burst of changes cost one write per service.

Choices where Kubernetes offers several: a service without a selector (or an
empty one) selects no pods and gets endpoints with no IPs; a pod whose podIP is
missing or not an IP address is left out; IPs are sorted as addresses, not as
text, and listed once. A third informer follows the endpoints themselves, so
that a write happens only when the endpoints differ, is made with the
resourceVersion the cache holds (a Conflict means the cache was behind: the
name is retried later), and so that endpoints whose service went away while the
controller was down are deleted, and endpoints changed by anyone else are
put back.

Logs go to the ``watchhub.reconciler`` logger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import sys
from collections.abc import Iterable
from typing import Any

from clients import ApiError, Client, Informer, TransportError
from hub.core.errors import Conflict, NotFound

logger = logging.getLogger("watchhub.reconciler")

Object = dict[str, Any]


# The computation, without I/O.


def selector_of(service: Object) -> dict[str, str]:
    """Return a service's ``spec.selector``; an absent or malformed one is empty."""
    spec = service.get("spec")
    selector = spec.get("selector") if isinstance(spec, dict) else None
    if not isinstance(selector, dict):
        return {}
    return {str(key): str(value) for key, value in selector.items()}


def selects(selector: dict[str, str], pod: Object) -> bool:
    """Tell whether a non-empty selector selects ``pod`` (every label matches)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_ip(pod: Object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return a pod's ``status.podIP``, or ``None`` if it has no valid one."""
    status = pod.get("status")
    ip = status.get("podIP") if isinstance(status, dict) else None
    if not isinstance(ip, str) or not ip:
        return None
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def endpoint_ips(service: Object, pods: Iterable[Object]) -> list[str]:
    """Return the IPs of the pods that ``service`` selects, sorted, each once."""
    selector = selector_of(service)
    ips = {ip for pod in pods if selects(selector, pod) and (ip := pod_ip(pod))}
    return [str(ip) for ip in sorted(ips, key=lambda ip: (ip.version, ip))]


# The work queue.


class WorkQueue:
    """
    Names to reconcile, after client-go's workqueue.

    A name is in the queue at most once, and is never handed to two workers at
    once: a name added while a worker holds it is handed out again after
    :meth:`done`. :meth:`retry` adds a name again after a delay that doubles
    with each consecutive failure of that name (5 ms to 5 s, with jitter), and
    :meth:`forget` resets it after a success.
    """

    # A conflict is usually mended by the next event, within milliseconds; a
    # hub that is away needs seconds. Doubling from 5 ms reaches 5 s after ten
    # failures in a row, so a retry storm cannot outpace the hub.
    BASE_DELAY = 0.005
    MAX_DELAY = 5.0

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._rng = random.Random()

    def add(self, name: str) -> None:
        """Ask for ``name`` to be reconciled."""
        if name in self._dirty:
            return
        self._dirty.add(name)
        if name not in self._processing:
            self._queue.put_nowait(name)

    async def get(self) -> str:
        """Wait for a name to reconcile; call :meth:`done` with it afterwards."""
        name = await self._queue.get()
        self._dirty.discard(name)
        self._processing.add(name)
        return name

    def done(self, name: str) -> None:
        """Say that ``name`` is reconciled, or failed and was retried."""
        self._processing.discard(name)
        if name in self._dirty:
            self._queue.put_nowait(name)

    def retry(self, name: str) -> float:
        """Add ``name`` again after a growing delay; return the delay."""
        failures = self._failures.get(name, 0)
        self._failures[name] = failures + 1
        step = min(self.BASE_DELAY * 2**failures, self.MAX_DELAY)
        delay = step / 2 + self._rng.random() * step / 2
        asyncio.get_running_loop().call_later(delay, self.add, name)
        return delay

    def forget(self, name: str) -> None:
        """Reset the retry delay of ``name`` after a success."""
        self._failures.pop(name, None)

    def __len__(self) -> int:
        return self._queue.qsize()


# The controller.


class EndpointsController:
    """
    Keep ``endpoints/{service}`` listing the IPs of the pods each service selects.

    Args:
        client: The client to the hub; the caller closes it.
        workers: How many names are reconciled at once.
        resync_period: Seconds between re-deliveries of every service, as a
            safety net; ``None`` for none.
    """

    def __init__(
        self, client: Client, *, workers: int = 2, resync_period: float | None = None
    ) -> None:
        self.client = client
        self.workers = workers
        self.queue = WorkQueue()
        self.services = Informer(client, "services", resync_period=resync_period)
        self.pods = Informer(client, "pods")
        self.endpoints = Informer(client, "endpoints")
        self.writes = 0

        self.services.add_handler(
            on_add=self._named,
            on_update=lambda old, new: self._named(new),
            on_delete=self._named,
        )
        self.pods.add_handler(
            on_add=self._pods_changed,
            on_update=self._pods_changed,
            on_delete=self._pods_changed,
        )
        # Endpoints changed or deleted by anyone, or left without a service,
        # are put right; the controller's own writes come back here too, and
        # cost a comparison with the cache, not a write.
        self.endpoints.add_handler(
            on_add=self._named,
            on_update=lambda old, new: self._named(new),
            on_delete=self._named,
        )

    async def run(self) -> None:
        """Follow the hub and reconcile until cancelled."""
        informers = (self.services, self.pods, self.endpoints)
        async with contextlib.AsyncExitStack() as stack:
            for informer in informers:
                await stack.enter_async_context(informer)
            for informer in informers:
                await informer.wait_for_sync()
            logger.info(
                "caches synced: %d services, %d pods, %d endpoints",
                len(self.services),
                len(self.pods),
                len(self.endpoints),
            )
            async with asyncio.TaskGroup() as workers:
                for _ in range(self.workers):
                    workers.create_task(self._work())

    # Handlers: from a change to the names it concerns.

    def _named(self, obj: Object) -> None:
        self.queue.add(obj["metadata"]["name"])

    def _pods_changed(self, *versions: Object) -> None:
        # A pod's old and new versions may concern different services (it was
        # relabelled): both sets are reconciled.
        for service in self.services.list():
            selector = selector_of(service)
            if any(selects(selector, pod) for pod in versions):
                self.queue.add(service["metadata"]["name"])

    # Workers.

    async def _work(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                await self.reconcile(name)
            except (Conflict, NotFound, TransportError) as exc:
                delay = self.queue.retry(name)
                logger.info("retrying %s in %.3f s: %r", name, delay, exc)
            except ApiError as exc:
                delay = self.queue.retry(name)
                logger.warning("retrying %s in %.3f s: %r", name, delay, exc)
            except Exception:
                delay = self.queue.retry(name)
                logger.exception("reconciling %s failed; retrying", name)
            else:
                self.queue.forget(name)
            finally:
                self.queue.done(name)

    async def reconcile(self, name: str) -> None:
        """
        Make ``endpoints/{name}`` what service ``name`` and the pods call for.

        Reads only the caches; writes with the cached resourceVersion.

        Raises:
            Conflict: the endpoints changed since the cache saw them.
            NotFound: the endpoints went away since the cache saw them.
            TransportError: the hub is away.
        """
        service = self.services.get(name)
        current = self.endpoints.get(name)
        if service is None:
            if current is not None:
                version = current["metadata"]["resourceVersion"]
                with contextlib.suppress(NotFound):
                    await self.client.delete(
                        "endpoints", name, resource_version=version
                    )
                    self.writes += 1
                    logger.info("deleted endpoints %s", name)
            return

        ips = endpoint_ips(service, self.pods.list())
        if current is not None and current.get("ips") == ips:
            return
        desired: Object = {"metadata": {"name": name}, "ips": ips}
        if current is None:
            await self.client.create("endpoints", desired)
        else:
            desired["metadata"]["resourceVersion"] = current["metadata"][
                "resourceVersion"
            ]
            await self.client.replace("endpoints", desired)
        self.writes += 1
        logger.info("endpoints %s: %s", name, " ".join(ips) or "(none)")


# The program.


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Client(args.server, token=args.token) as client:
        controller = EndpointsController(
            client, workers=args.workers, resync_period=args.resync or None
        )
        running = asyncio.create_task(controller.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        running.cancel()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    logger.info("stopped after %d writes", controller.writes)


def main(argv: list[str] | None = None) -> int:
    """Run the controller until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("WATCHHUB_URL", "http://127.0.0.1:8080"),
        help="the hub's URL (default $WATCHHUB_URL or %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("WATCHHUB_TOKEN"))
    parser.add_argument("--workers", type=int, default=2, help="names at once")
    parser.add_argument(
        "--resync",
        type=float,
        default=60.0,
        help="seconds between re-deliveries of every service; 0 for none",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
