"""What monitoring systems read: Prometheus metrics, readiness, request ids.

:func:`setup` adds to an application:

- ``GET /metrics``: the metrics below, in Prometheus' text format, from a
  registry of this application's own (a process may serve several hubs).
- ``GET /readyz``: 200 once the store answers and the event log is loaded from
  it and caught up with it; 503 with a Status otherwise. ``/healthz`` (alive)
  is the API's own.
- A request id per HTTP request: the client's ``X-Request-Id`` when it sends a
  sane one, a new one otherwise. It is echoed in the response's
  ``X-Request-Id`` header and put on every log record of that request.

The watch delivery path stays cheap: counters move once per batch a watcher
is handed, not once per event, with their label children bound in advance;
the write-to-send latency is sampled once per batch, from its newest change;
and gauges that the hub's state already holds (open watchers, log sizes) are
read when scraped, not kept up to date on every event.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import logs
from ..core.errors import BadRequest, StoreUnavailable
from ..core.events import Change
from ..hub import Hub
from ..watch.stream import Item, WatchStream
from .params import is_watch

__all__ = ["METRICS_KEY", "TRANSPORTS", "HubMetrics", "setup"]

#: The transports a watch can take; ``inprocess`` is an embedded watcher.
TRANSPORTS = ("chunked", "websocket", "sse", "inprocess")

#: The request header that carries a request id, both ways.
REQUEST_ID_HEADER = "X-Request-Id"

# A client's request id is taken as is only when it is short and plain, so
# that it cannot forge log lines or bloat them.
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

# Latencies from a fraction of a millisecond (memory store, idle hub) to
# seconds (a hub under load, or a slow disk).
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HubMetrics:
    """
    The metrics of one hub, in a registry of their own.

    Args:
        hub: The hub whose state and watch streams are measured.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "watchhub_http_requests",
            "HTTP requests answered, by Kubernetes-style verb and status code; a "
            "watch counts when its response starts.",
            ["verb", "code"],
            registry=registry,
        )
        self.events_written = Counter(
            "watchhub_events_written",
            "Changes committed by the store and appended to the event log.",
            registry=registry,
        )
        self.events_delivered = Counter(
            "watchhub_events_delivered",
            "Events handed to watchers (bookmarks and errors included), by transport.",
            ["transport"],
            registry=registry,
        )
        self.watchers_slow = Counter(
            "watchhub_watchers_slow_ended",
            "Watchers ended with a 410 for being slow: they fell out of the kept "
            "history, or their connection took nothing for the write timeout.",
            registry=registry,
        )
        self.watch_latency = Histogram(
            "watchhub_watch_latency_seconds",
            "From a change being made in the store to its event being handed to a "
            "watcher's transport; one sample per batch, from its newest change.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_latency = Histogram(
            "watchhub_store_write_seconds",
            "From a change being made inside the store's write to its commit "
            "being published (persisting included).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(_StateCollector(hub))
        # Label children bound once, so the hot path does no label lookup.
        self._delivered = {t: self.events_delivered.labels(t) for t in TRANSPORTS}
        self._requests: dict[tuple[str, int], Counter] = {}

    # Hooks

    def on_change(self, change: Change) -> None:
        """Count one committed change; a store listener."""
        self.events_written.inc()
        self.store_latency.observe(time.monotonic() - change.created_at)

    def on_batch(self, stream: WatchStream, batch: list[Item]) -> None:
        """Count one batch handed to a watcher; the hub's ``on_batch`` hook."""
        delivered = self._delivered.get(stream.transport)
        if delivered is None:
            delivered = self.events_delivered.labels(stream.transport)
        delivered.inc(len(batch))
        last = batch[-1]
        if type(last) is tuple:
            # Only changes made after the watch opened measure delivery: the
            # initial state and a resumed backlog are older by design.
            made = last[0].created_at
            if made >= stream.opened_at:
                self.watch_latency.observe(time.monotonic() - made)

    def on_stream_end(self, stream: WatchStream) -> None:
        """Count a watcher ended for being slow; the hub's ``on_stream_end`` hook."""
        if stream.end_reason == "slow":
            self.watchers_slow.inc()

    def on_response(self, request: web.Request, status: int) -> None:
        """Count one answered request."""
        key = (_verb(request), status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(key[0], str(status))
        child.inc()

    def exposition(self) -> bytes:
        """Return every metric in Prometheus' text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read from the hub's state when scraped."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        watchers = GaugeMetricFamily(
            "watchhub_watchers", "Watches open now, by transport.", labels=["transport"]
        )
        counts = dict.fromkeys(TRANSPORTS, 0)
        for stream in hub.streams():
            counts[stream.transport] = counts.get(stream.transport, 0) + 1
        for transport, count in counts.items():
            watchers.add_metric([transport], count)
        yield watchers

        yield GaugeMetricFamily(
            "watchhub_resource_version",
            "The newest resourceVersion the hub has applied.",
            value=hub.resource_version,
        )
        changes = GaugeMetricFamily(
            "watchhub_event_log_changes",
            "Changes kept in the event log, by collection.",
            labels=["collection"],
        )
        objects = GaugeMetricFamily(
            "watchhub_event_log_objects",
            "Live objects, by collection.",
            labels=["collection"],
        )
        oldest = GaugeMetricFamily(
            "watchhub_event_log_oldest_resource_version",
            "The resourceVersion of the oldest change kept, by collection (0: none).",
            labels=["collection"],
        )
        horizon = GaugeMetricFamily(
            "watchhub_event_log_horizon",
            "The oldest resourceVersion a watch can resume from, by collection.",
            labels=["collection"],
        )
        for stats in hub.log.statistics():
            changes.add_metric([stats.collection], stats.changes)
            objects.add_metric([stats.collection], stats.objects)
            oldest.add_metric([stats.collection], stats.oldest)
            horizon.add_metric([stats.collection], stats.horizon)
        yield from (changes, objects, oldest, horizon)


#: Where an application keeps its :class:`HubMetrics`.
METRICS_KEY = web.AppKey("metrics", HubMetrics)


def setup(app: web.Application, hub: Hub) -> HubMetrics:
    """Add metrics, readiness and request ids to ``app``, which serves ``hub``."""
    metrics = HubMetrics(hub)
    app[METRICS_KEY] = metrics
    hub.on_batch = metrics.on_batch
    hub.on_stream_end = metrics.on_stream_end
    hub.store.subscribe(metrics.on_change)
    # Outermost, so that the request id covers what every other middleware logs.
    app.middlewares.insert(0, _request_ids)
    app.on_response_prepare.append(_on_response_prepare)
    app.on_cleanup.append(_cleanup)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/readyz", _readyz)
    return metrics


# Request ids and counts


@web.middleware
async def _request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
    token = logs.request_id.set(rid)
    try:
        response = await handler(request)
        # A streamed response got its id when it was prepared, inside here.
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        # aiohttp serves the requests of one connection in one task: the id
        # must not leak into the next.
        logs.request_id.reset(token)


async def _on_response_prepare(
    request: web.Request, response: web.StreamResponse
) -> None:
    rid = logs.request_id.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
    request.app[METRICS_KEY].on_response(request, response.status)


def _verb(request: web.Request) -> str:
    # Kubernetes' verbs, from the method and the shape of the path; anything
    # outside the resource API is "other", so that labels stay few.
    parts = request.path.split("/")
    if len(parts) < 4 or parts[1] != "api" or parts[2] != "v1" or not parts[3]:
        return "other"
    method = request.method
    if parts[3] == "watch":
        return "watch" if method == "GET" else "other"
    named = len(parts) > 4
    if method == "GET":
        if named:
            return "get"
        try:
            return "watch" if is_watch(request.query) else "list"
        except BadRequest:
            return "list"
    if method == "POST":
        return "other" if named else "create"
    return _OBJECT_VERBS.get(method, "other") if named else "other"


_OBJECT_VERBS = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}


# Routes


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def _readyz(request: web.Request) -> web.Response:
    hub = request.app[METRICS_KEY].hub
    if not hub.started:
        raise StoreUnavailable("the event log is not loaded from the store yet")
    await hub.store.ping()
    if hub.resource_version < hub.store.resource_version:
        raise StoreUnavailable(
            f"the event log is at resourceVersion {hub.resource_version}, behind "
            f"the store at {hub.store.resource_version}"
        )
    return web.Response(text="ok")


async def _cleanup(app: web.Application) -> None:
    metrics = app[METRICS_KEY]
    hub = metrics.hub
    # Only this application's hooks: another may serve the same hub by now.
    if hub.on_batch == metrics.on_batch:
        hub.on_batch = None
    if hub.on_stream_end == metrics.on_stream_end:
        hub.on_stream_end = None
    hub.store.unsubscribe(metrics.on_change)
