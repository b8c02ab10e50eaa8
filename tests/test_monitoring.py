"""Metrics, readiness, the hub summary, request ids and log output."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub import Hub, HubConfig
from hub.logs import RequestIdFilter, TextFormatter, json_formatter
from hub.store.nats import NATSStore

from .conftest import (
    TIMEOUT,
    HubProcess,
    RunningHub,
    eventually,
    read_lines,
    spawn_hub,
    start_hub,
)
from .test_nats import NATSServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    """Return every sample at ``url``/metrics, keyed by name and sorted labels."""
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value, 0 where it is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pod(name: str, **labels: str) -> dict[str, Any]:
    """Return a pod named ``name``."""
    return {"metadata": {"name": name, "labels": labels}}


async def test_metrics_count_requests_by_verb_and_code(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Requests are counted by Kubernetes-style verb and status code."""
    base = f"{served.url}/api/v1/pods"
    for name in ("a", "b"):
        async with http.post(base, json=pod(name)) as response:
            assert response.status == 201
    async with http.post(base, json=pod("a")) as response:
        assert response.status == 409
    async with http.get(f"{base}/missing") as response:
        assert response.status == 404
    async with http.get(base) as response:
        assert response.status == 200
    async with http.put(f"{base}/a", json=pod("a", x="y")) as response:
        assert response.status == 200
    headers = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(f"{base}/b", data=b"{}", headers=headers) as response:
        assert response.status == 200
    async with http.delete(f"{base}/b") as response:
        assert response.status == 200
    async with http.get(f"{base}?watch=true&timeoutSeconds=1") as response:
        assert response.status == 200
        await response.read()

    samples = await scrape(http, served.url)
    total = "watchhub_http_requests_total"
    assert value(samples, total, verb="create", code="201") == 2
    assert value(samples, total, verb="create", code="409") == 1
    assert value(samples, total, verb="get", code="404") == 1
    assert value(samples, total, verb="list", code="200") == 1
    assert value(samples, total, verb="update", code="200") == 1
    assert value(samples, total, verb="patch", code="200") == 1
    assert value(samples, total, verb="delete", code="200") == 1
    assert value(samples, total, verb="watch", code="200") == 1


async def test_metrics_follow_watchers_and_events(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Open watchers by transport, events written and delivered, and latencies move."""
    base = f"{served.url}/api/v1/pods"
    chunked = await http.get(f"{served.url}/api/v1/watch/pods")
    ws = await http.ws_connect(f"{served.ws_url}/api/v1/watch/pods")
    sse = await http.get(
        f"{served.url}/api/v1/watch/pods", headers={"Accept": "text/event-stream"}
    )
    await eventually(lambda: served.hub.watchers == 3)
    samples = await scrape(http, served.url)
    for transport in ("chunked", "websocket", "sse"):
        assert value(samples, "watchhub_watchers", transport=transport) == 1

    for name in ("a", "b", "c"):
        async with http.post(base, json=pod(name)) as response:
            assert response.status == 201
    assert len(await read_lines(chunked, 3)) == 3
    for _ in range(3):
        message = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert json.loads(message.data)["type"] == "ADDED"

    async def delivered() -> bool:
        samples = await scrape(http, served.url)
        return all(
            value(samples, "watchhub_events_delivered_total", transport=t) == 3
            for t in ("chunked", "websocket", "sse")
        )

    await eventually(delivered)
    samples = await scrape(http, served.url)
    assert value(samples, "watchhub_events_written_total") == 3
    assert value(samples, "watchhub_store_write_seconds_count") == 3
    assert 1 <= value(samples, "watchhub_watch_latency_seconds_count") <= 9
    assert value(samples, "watchhub_watch_latency_seconds_sum") < TIMEOUT

    chunked.close()
    await ws.close()
    sse.close()
    await eventually(lambda: served.hub.watchers == 0)
    samples = await scrape(http, served.url)
    assert value(samples, "watchhub_watchers", transport="websocket") == 0


async def test_metrics_show_event_log_size_and_oldest_version(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """The event log's size and oldest kept resourceVersion are read when scraped."""
    base = f"{served.url}/api/v1/pods"
    for index in range(100):  # the served hub keeps 50 changes per collection
        async with http.post(base, json=pod(f"p{index}")) as response:
            assert response.status == 201
    async with http.post(f"{served.url}/api/v1/nodes", json=pod("n")) as response:
        assert response.status == 201

    samples = await scrape(http, served.url)
    assert value(samples, "watchhub_resource_version") == 101
    kept = value(samples, "watchhub_event_log_changes", collection="pods")
    oldest = value(
        samples, "watchhub_event_log_oldest_resource_version", collection="pods"
    )
    assert 50 <= kept < 100
    assert oldest == 100 - kept + 1
    assert value(samples, "watchhub_event_log_objects", collection="pods") == 100
    assert value(samples, "watchhub_event_log_changes", collection="nodes") == 1
    assert (
        value(samples, "watchhub_event_log_oldest_resource_version", collection="nodes")
        == 101
    )


async def test_metrics_count_watchers_ended_for_being_slow(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A watcher that falls out of the kept history is counted as slow."""
    pods = served.hub.collection("pods")
    watcher = await pods.watch_all(resource_version=str(served.hub.resource_version))
    for index in range(100):  # twice the served hub's history, while nobody reads
        await pods.create(pod(f"p{index}"))
    events = [event async for event in watcher]
    assert events[-1].type == "ERROR"
    assert events[-1].object["code"] == 410

    samples = await scrape(http, served.url)
    assert value(samples, "watchhub_watchers_slow_ended_total") == 1
    assert value(samples, "watchhub_events_delivered_total", transport="inprocess") >= 1


async def test_metrics_are_kept_per_hub(http: aiohttp.ClientSession) -> None:
    """Two hubs in one process count apart: each app has a registry of its own."""
    first, second = await start_hub(), await start_hub()
    try:
        async with http.post(f"{first.url}/api/v1/pods", json=pod("a")) as response:
            assert response.status == 201
        assert (
            value(await scrape(http, first.url), "watchhub_events_written_total") == 1
        )
        assert (
            value(await scrape(http, second.url), "watchhub_events_written_total") == 0
        )
    finally:
        await first.runner.cleanup()
        await second.runner.cleanup()


async def test_hubinfo_summarizes_the_hub(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """/hubinfo gives the resourceVersion, open watchers and collections."""
    for collection in ("pods", "nodes"):
        url = f"{served.url}/api/v1/{collection}"
        async with http.post(url, json=pod("a")) as response:
            assert response.status == 201
    async with http.get(f"{served.url}/api/v1/watch/pods") as watch:
        await eventually(lambda: served.hub.watchers == 1)
        async with http.get(f"{served.url}/hubinfo") as response:
            assert response.status == 200
            info = await response.json()
    assert info == {
        "kind": "HubInfo",
        "apiVersion": "v1",
        "resourceVersion": "2",
        "watchers": 1,
        "collections": ["nodes", "pods"],
        "store": "memory",
    }
    assert watch.status == 200


async def test_page_and_its_files_are_served(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """The page is served at / with its script and style, from the package."""
    async with http.get(f"{served.url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        async with http.get(f"{served.url}{path}") as response:
            assert response.status == 200, path
    async with http.get(f"{served.url}/static/missing.js") as response:
        assert response.status == 404
        assert (await response.json())["kind"] == "Status"


@pytest.fixture
async def nats_hub(tmp_path: Path) -> AsyncIterator[tuple[RunningHub, NATSServer]]:
    """A hub on a real nats-server's JetStream."""
    server = NATSServer(tmp_path)
    server.start()
    running = await start_hub(Hub(NATSStore(server.url), HubConfig()))
    try:
        yield running, server
    finally:
        await running.runner.cleanup()
        server.stop(kill=True)


async def test_readyz_follows_the_store(
    nats_hub: tuple[RunningHub, NATSServer], http: aiohttp.ClientSession
) -> None:
    """/readyz says ok while NATS is reachable and 503 while it is down."""
    running, server = nats_hub
    async with http.get(f"{running.url}/readyz") as response:
        assert response.status == 200
        assert await response.text() == "ok"

    server.stop(kill=True)

    async def unready() -> bool:
        async with http.get(f"{running.url}/readyz") as response:
            if response.status != 503:
                return False
            return bool((await response.json())["reason"] == "ServiceUnavailable")

    await eventually(unready)
    # Alive all the same: a restart would not bring the store back.
    async with http.get(f"{running.url}/healthz") as response:
        assert response.status == 200


async def test_request_ids_are_echoed_or_made(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A sane X-Request-Id is echoed; a missing or unsafe one is replaced."""
    url = f"{served.url}/api/v1/pods"
    async with http.get(url, headers={"X-Request-Id": "req-42"}) as response:
        assert response.headers["X-Request-Id"] == "req-42"
    async with http.get(url) as response:
        made = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    async with http.get(url, headers={"X-Request-Id": "a b\tc"}) as response:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    async with http.get(f"{url}/missing", headers={"X-Request-Id": "r-404"}) as r:
        assert r.status == 404
        assert r.headers["X-Request-Id"] == "r-404"
    watch_url = f"{served.url}/api/v1/watch/pods"
    async with http.get(watch_url, headers={"X-Request-Id": "w-1"}) as response:
        assert response.headers["X-Request-Id"] == "w-1"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_request_id_is_on_the_log_records_of_its_request(
    served: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Records logged while a request is handled carry its request id."""
    handler = _Records()
    watch_logger = logging.getLogger("watchhub.watch")
    level = watch_logger.level
    watch_logger.addHandler(handler)
    watch_logger.setLevel(logging.DEBUG)
    try:
        url = f"{served.url}/api/v1/watch/pods?timeoutSeconds=1"
        async with http.get(url, headers={"X-Request-Id": "trace-9"}) as response:
            await response.read()
        async with http.get(url) as response:
            await response.read()
            other = response.headers["X-Request-Id"]
    finally:
        watch_logger.removeHandler(handler)
        watch_logger.setLevel(level)
    started = [r for r in handler.records if r.getMessage() == "watch started"]
    assert [getattr(r, "request_id", None) for r in started] == ["trace-9", other]
    assert all(hasattr(r, "collection") for r in started)


def test_formatters_write_extra_fields() -> None:
    """Text lines end with the extra fields; JSON lines hold them as keys."""
    record = logging.LogRecord(
        "watchhub.watch", logging.INFO, __file__, 1, "watch %s", ("started",), None
    )
    record.watch_id = 7
    record.collection = "pods"
    text = TextFormatter().format(record)
    assert text.endswith(
        "INFO watchhub.watch: watch started watch_id=7 collection=pods"
    )
    line = json.loads(json_formatter().format(record))
    assert line["level"] == "INFO"
    assert line["logger"] == "watchhub.watch"
    assert line["message"] == "watch started"
    assert line["watch_id"] == 7
    assert line["collection"] == "pods"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*\+00:00", line["time"])


async def _stop(proc: HubProcess) -> str:
    proc.process.terminate()
    await asyncio.to_thread(proc.process.wait, TIMEOUT)
    return proc.output()


async def test_serve_logs_one_json_object_per_line(
    tmp_path: Path, hub_processes: list[HubProcess], http: aiohttp.ClientSession
) -> None:
    """`watchhub serve --log-format json` writes only JSON lines, extras included."""
    proc = spawn_hub(tmp_path, "--store", "memory", "--log-format", "json")
    hub_processes.append(proc)
    async with http.post(f"{proc.url}/api/v1/pods", json=pod("a")) as response:
        assert response.status == 201
    output = await _stop(proc)

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
    listening = [line for line in lines if "listening" in line["message"]]
    assert listening[0]["logger"] == "watchhub.http"
    assert listening[0]["address"] == proc.url.removeprefix("http://")
    assert listening[0]["store"] == "memory"
    assert any(line["message"] == "stopped" for line in lines)


async def test_serve_logs_readable_text_by_default(
    tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    """`watchhub serve` writes readable lines with the extra fields at the end."""
    proc = spawn_hub(tmp_path, "--store", "memory")
    hub_processes.append(proc)
    output = await _stop(proc)
    line = next(line for line in output.splitlines() if "listening" in line)
    assert " INFO watchhub.http: watchhub listening on " in line
    assert f"address={proc.url.removeprefix('http://')}" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
