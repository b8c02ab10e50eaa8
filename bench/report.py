"""Tables, target checks and plots from a list of results."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "check_targets",
    "plot",
    "ratio_table",
    "results_table",
    "store_table",
    "write_docs",
]

Result = dict[str, Any]

_DOC_START = "<!-- bench:results:start -->"
_DOC_END = "<!-- bench:results:end -->"


def _rate(result: Result) -> str:
    rate = result["rate"]
    return "max" if rate == "max" else f"{rate:g}/s"


def _find(results: Iterable[Result], **keys: Any) -> Result | None:
    for result in results:
        if all(result.get(key) == value for key, value in keys.items()):
            return result
    return None


def results_table(results: list[Result]) -> str:
    """Return every result as one Markdown table."""
    lines = [
        "| scenario | watchers | writes | target | events/s | p50 ms | p99 ms | max ms"
        " | server CPU s/100k | server RSS MB | all delivered | client core |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        " ---: |",
    ]
    for r in results:
        lat = r["latency_ms"] if r["mode"] != "writes" else r["write_latency_ms"]
        scenario = r["scenario"]
        if r["mode"] == "writes":
            scenario = f"writes ({r.get('op', 'update')})"
            rate = f"{r['write_rate']:,.0f}/s acked"
            events = "-"
        elif r["mode"] == "idle":
            rate, events = "-", "-"
        else:
            rate = _rate(r) + (
                f" ({r['write_rate']:,.0f}/s)" if r["rate"] == "max" else ""
            )
            events = f"{r['events_per_s']:,.0f}"
        client = f"{r['client_cpu']:.0%}" + (
            " (client-bound)" if r["client_bound"] else ""
        )
        complete = (
            "-"
            if r["mode"] in ("idle", "writes")
            else (
                "yes" if r["complete"] else f"no ({r['delivered']:,}/{r['expected']:,})"
            )
        )
        rss = f"{r['rss_mb']:.0f}"
        if r["mode"] == "idle":
            rss += f" ({r['rss_per_watcher_kb']:.1f} KB/watch)"
        lines.append(
            f"| {scenario} | {r['watchers']:,} | {rate} | {r['label']} | {events}"
            f" | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f}"
            f" | {r['cpu_per_100k']:.2f} | {rss} | {complete} | {client} |"
        )
    return "\n".join(lines)


def ratio_table(results: list[Result]) -> str:
    """
    Return the hub against the ceiling and etcd, as ratios, run by run.

    ``events/s`` is higher-is-better; ``CPU/delivery`` and ``p99`` are
    lower-is-better, so a ratio below 1 means the hub does better there.
    """
    lines = [
        "| scenario | watchers | writes | hub | events/s vs ceiling | CPU/delivery vs"
        " ceiling | p99 vs ceiling | events/s vs etcd | events per CPU-s vs etcd |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for hub in results:
        if hub["target"] != "hub" or hub["mode"] in ("idle", "writes"):
            continue
        keys = {
            "scenario": hub["scenario"],
            "watchers": hub["watchers"],
            "rate": hub["rate"],
        }
        ceiling = _find(results, target="ceiling", **keys)
        etcd = _find(results, target="etcd", **keys)
        cells = []
        if ceiling:
            cells += [
                _ratio(hub["events_per_s"], ceiling["events_per_s"]),
                _ratio(hub["cpu_per_100k"], ceiling["cpu_per_100k"]),
                _ratio(hub["latency_ms"]["p99"], ceiling["latency_ms"]["p99"]),
            ]
        else:
            cells += ["-", "-", "-"]
        if etcd:
            cells += [
                _ratio(hub["events_per_s"], etcd["events_per_s"]),
                _ratio(etcd["cpu_per_100k"], hub["cpu_per_100k"]),
            ]
        else:
            cells += ["-", "-"]
        lines.append(
            f"| {hub['scenario']} | {hub['watchers']:,} | {_rate(hub)} "
            f"| {hub['label']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def store_table(results: list[Result]) -> str:
    """
    Return the hub on NATS replicas against the memory-store hub of the same run.

    Throughput (events/s, or writes/s for ``writes``) is higher-is-better; CPU
    (all processes, nats-server included) and p99 latency are lower-is-better.
    Empty when no run used the nats store.
    """
    lines = [
        "| scenario | watchers | writes | op | hub | throughput vs memory |"
        " CPU/op vs memory | p99 vs memory |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for hub in results:
        if hub["target"] != "hub" or hub.get("store") != "nats":
            continue
        memory = _find(
            results,
            target="hub",
            store="memory",
            scenario=hub["scenario"],
            watchers=hub["watchers"],
            rate=hub["rate"],
            transport=hub["transport"],
            op=hub["op"],
        )
        if memory is None:
            continue
        writes = hub["mode"] == "writes"
        speed = "write_rate" if writes else "events_per_s"
        latency = "write_latency_ms" if writes else "latency_ms"
        cells = [
            _ratio(hub[speed], memory[speed]),
            _ratio(hub["cpu_per_100k"], memory["cpu_per_100k"]),
            _ratio(hub[latency]["p99"], memory[latency]["p99"]),
        ]
        lines.append(
            f"| {hub['scenario']} | {hub['watchers']:,} | {_rate(hub)} "
            f"| {hub['op'] if writes else '-'} | {hub['label']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def check_targets(results: list[Result]) -> list[tuple[str, str, bool | None]]:
    """Return each target of the issue: what was reached, and whether it was met."""
    checks: list[tuple[str, str, bool | None]] = []
    base = {"scenario": "fanout", "watchers": 1000, "rate": 100.0}
    hub = _find(results, label="hub/chunked", **base)
    ws = _find(results, label="hub/websocket", **base)
    ceiling = _find(results, target="ceiling", **base)
    etcd = _find(results, target="etcd", **base)
    if hub and ceiling:
        cpu = hub["cpu_per_100k"] / ceiling["cpu_per_100k"]
        p99 = hub["latency_ms"]["p99"] / max(ceiling["latency_ms"]["p99"], 1e-9)
        checks.append((
            "1,000 chunked watchers at 100 writes/s: all delivered, CPU/delivery "
            "<= 1.3x ceiling, p99 <= 1.5x ceiling",
            f"all delivered: {'yes' if hub['complete'] else 'no'}; CPU {cpu:.2f}x; "
            f"p99 {p99:.2f}x",
            hub["complete"] and cpu <= 1.3 and p99 <= 1.5,
        ))  # fmt: skip
    over = {"scenario": "overload", "watchers": 1000, "rate": 300.0}
    hub_o = _find(results, label="hub/chunked", **over)
    ceiling_o = _find(results, target="ceiling", **over)
    if hub_o and ceiling_o:
        ratio = hub_o["events_per_s"] / max(ceiling_o["events_per_s"], 1e-9)
        checks.append((
            "overload (1,000 watchers, 300 writes/s): >= 1.5x the ceiling's "
            "deliveries/s, all delivered in order",
            f"{ratio:.2f}x; all delivered in order: "
            f"{'yes' if hub_o['complete'] else 'no'}",
            hub_o["complete"] and ratio >= 1.5,
        ))  # fmt: skip
    if hub and etcd:
        ratio = etcd["cpu_per_100k"] / max(hub["cpu_per_100k"], 1e-9)
        checks.append((
            ">= 4x the delivered events per CPU-second of etcd's gateway at 1,000 "
            "watchers",
            f"{ratio:.2f}x",
            ratio >= 4,
        ))  # fmt: skip
    if hub and ws:
        cpu = ws["cpu_per_100k"] / max(hub["cpu_per_100k"], 1e-9)
        p99 = ws["latency_ms"]["p99"] / max(hub["latency_ms"]["p99"], 1e-9)
        checks.append((
            "WebSocket within 1.3x of chunked HTTP (1,000 watchers, 100 writes/s)",
            f"CPU/delivery {cpu:.2f}x, p99 {p99:.2f}x",
            cpu <= 1.3 and ws["complete"],
        ))  # fmt: skip
    idle = _find(results, scenario="idle", label="hub/chunked")
    if idle:
        kb = idle["rss_per_watcher_kb"]
        checks.append((
            f"{idle['watchers']:,} idle watches under 30 KB of hub RSS each",
            f"{kb:.1f} KB",
            kb < 30,
        ))  # fmt: skip
    sqlite = [
        r for r in results if r["scenario"] == "writes" and r["label"] == "hub/sqlite"
    ]
    if sqlite:
        best = max(r["write_rate"] for r in sqlite)
        checks.append((
            ">= 5,000 acknowledged writes/s on the SQLite store, concurrent writers",
            f"{best:,.0f}/s",
            best >= 5000,
        ))  # fmt: skip
    return checks


def targets_table(results: list[Result]) -> str:
    """Return the target checks as a Markdown table."""
    lines = ["| target | reached | met |", "| --- | --- | --- |"]
    for target, reached, met in check_targets(results):
        lines.append(f"| {target} | {reached} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def plot(results: list[Result], directory: Path) -> list[Path]:
    """Write the PNG plots: events/s against watchers, and the latency CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = sorted({r["label"] for r in results if r["mode"] == "fanout"})
    for rate_key, title, name in (
        ("max", "highest write rate", "fanout-max.png"),
        (100.0, "100 writes/s", "fanout-100.png"),
    ):
        rows = [
            r for r in results if r["scenario"] == "fanout" and r["rate"] == rate_key
        ]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label in labels:
            points = sorted(
                (r["watchers"], r["events_per_s"]) for r in rows if r["label"] == label
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("watchers of one collection")
        ax.set_ylabel("delivered events/s")
        ax.set_title(f"Fan-out, {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = directory / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    rows = [
        r for r in results
        if r["scenario"] == "fanout" and r["watchers"] == 1000 and r["rate"] == 100.0
        and r["latency_cdf"]
    ]  # fmt: skip
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            qs = [q for q, _ in r["latency_cdf"]]
            ms = [m for _, m in r["latency_cdf"]]
            ax.plot(ms, qs, label=r["label"])
        ax.set_xscale("log")
        ax.set_xlabel("write-to-receive latency (ms)")
        ax.set_ylabel("fraction of sampled events")
        ax.set_title("Latency CDF, 1,000 watchers, 100 writes/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = directory / "latency-cdf.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_docs(doc: Path, results: list[Result], header: str) -> bool:
    """Replace the results section of the performance doc; False if it has none."""
    if not doc.exists():
        return False
    text = doc.read_text()
    start, end = text.find(_DOC_START), text.find(_DOC_END)
    if start < 0 or end < 0:
        return False
    body = "\n\n".join([
        header,
        "### Targets\n\n" + targets_table(results),
        "### Hub against the ceiling and etcd (ratios)\n\n" + ratio_table(results),
        "### Every run\n\n" + results_table(results),
    ])  # fmt: skip
    doc.write_text(text[: start + len(_DOC_START)] + "\n" + body + "\n" + text[end:])
    return True
