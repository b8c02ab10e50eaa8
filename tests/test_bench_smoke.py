"""The benchmark harness runs end to end (tiny parameters, no etcd)."""

from __future__ import annotations

from pathlib import Path

from bench import report
from bench.runner import Run, execute


def test_bench_fanout_delivers_every_event(tmp_path: Path) -> None:
    """A tiny fan-out run against the hub reports every event delivered, in order."""
    run = Run(
        "fanout", "hub", "fanout", watchers=5, rate=40.0, duration=0.5, warmup=0.2
    )
    result = execute(run, tmp_path)
    assert result["writes"] == 20
    assert result["expected"] == 20 * 5
    assert result["delivered"] == result["expected"]
    assert result["complete"] and result["disorder"] == 0
    assert result["latency_samples"] > 0
    assert "hub/chunked" in report.results_table([result])


def test_bench_websocket_and_ceiling_runs_complete(tmp_path: Path) -> None:
    """The same harness drives the hub over WebSocket and the ceiling program."""
    for run in (
        Run("fanout", "hub", "fanout", watchers=3, rate=40.0, duration=0.3,
            warmup=0.0, transport="websocket"),
        Run("fanout", "ceiling", "fanout", watchers=3, rate=40.0, duration=0.3,
            warmup=0.0),
    ):  # fmt: skip
        result = execute(run, tmp_path)
        assert result["delivered"] == result["expected"] == 12 * 3
        assert result["complete"]


def test_bench_nats_replicas_deliver_across_replicas(tmp_path: Path) -> None:
    """Two hub replicas on a nats-server deliver each write to every watcher of both."""
    run = Run(
        "fanout", "hub", "fanout", watchers=4, rate=40.0, duration=0.5, warmup=0.2,
        store="nats", replicas=2,
    )  # fmt: skip
    result = execute(run, tmp_path)
    assert result["label"] == "hub/chunked/nats-r2"
    assert result["delivered"] == result["expected"] == 20 * 4
    assert result["complete"] and result["disorder"] == 0
    assert not list(tmp_path.glob("nats-*")), "the nats-server directory is left"
