"""
``python -m bench SCENARIO [options]``: run benchmarks, print and save the results.

Scenarios:

- ``fanout``: N watchers of one collection, writes at a fixed rate or ``max``.
- ``overload``: fan-out at a rate above what one core delivers (backlogs).
- ``watch-one``: N watchers each on its own object.
- ``idle``: N open watches and no writes (memory per watch).
- ``writes``: REST create/update throughput per store, concurrent writers.
- ``suite``: all of the above with the documented parameters; writes the plots
  and the results section of docs/performance.md.
- ``report FILE``: print the tables and draw the plots of saved results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report, servers
from .runner import Run, execute, pin_client

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
PEERS = ["hub/chunked", "hub/websocket", "ceiling", "etcd"]


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _rate(value: str) -> float | None:
    return None if value == "max" else float(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    def scenario(
        name: str, help: str, watchers: str, rate: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--watchers", default=watchers, help="comma-separated counts")
        sub.add_argument("--rate", default=rate, help="writes/s, or max")
        sub.add_argument(
            "--targets", default=",".join(PEERS),
            help=f"comma-separated, of {', '.join(PEERS)}",
        )  # fmt: skip
        sub.add_argument("--duration", type=float, default=5.0, help="measured seconds")
        sub.add_argument("--warmup", type=float, default=1.0, help="discarded seconds")
        sub.add_argument(
            "--budget",
            type=int,
            default=1_000_000,
            help="at max rate: stop writing once this many deliveries are due",
        )
        sub.add_argument(
            "--profile", type=Path, help="py-spy the hub into this directory"
        )
        _store_options(sub, "memory")
        return sub

    scenario("fanout", "watchers of one collection", "1,100,1000,5000", "100")
    scenario("overload", "fan-out above one core's capacity", "1000", "300")
    scenario("watch-one", "each watcher on its own object", "1000", "100")
    scenario("idle", "open watches, no writes", "10000", "0")
    writes = commands.add_parser("writes", help="REST write throughput per store")
    writes.add_argument("--targets", default="hub/memory,hub/sqlite,etcd")
    writes.add_argument("--ops", default="update,create")
    writes.add_argument(
        "--writers", type=int, default=32, help="concurrent connections"
    )
    writes.add_argument("--duration", type=float, default=4.0)
    _store_options(writes, "")
    suite = commands.add_parser("suite", help="every scenario, plots and the doc")
    suite.add_argument("--quick", action="store_true", help="short runs, fewer sizes")
    suite.add_argument("--no-etcd", action="store_true", help="leave etcd out")
    again = commands.add_parser("report", help="tables and plots of saved results")
    again.add_argument("file", type=Path)
    again.add_argument("--docs", action="store_true", help="update docs/performance.md")
    return parser


def _store_options(sub: argparse.ArgumentParser, default: str) -> None:
    sub.add_argument(
        "--store",
        default=default,
        help="comma-separated hub stores, of memory, sqlite, nats; with nats the"
        " memory hub is measured too, as the baseline"
        + ("" if default else " (replaces the stores of the hub/... targets)"),
    )
    sub.add_argument(
        "--replicas",
        default="1",
        help="comma-separated counts of hub replicas on one nats-server (nats only)",
    )


def _stores(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Return the (store, replicas) pairs the hub runs under, memory first."""
    stores = _csv(args.store)
    if "nats" in stores and "memory" not in stores:
        stores.insert(0, "memory")
    pairs = []
    for store in stores:
        if store == "nats":
            pairs += [("nats", int(n)) for n in _csv(args.replicas)]
        else:
            pairs.append((store, 1))
    return pairs


def _target(label: str) -> tuple[str, str]:
    if label.startswith("hub/"):
        return "hub", label.split("/", 1)[1]
    return label, "chunked"


def _scenario_runs(args: argparse.Namespace) -> list[Run]:
    mode = {
        "fanout": "fanout",
        "overload": "fanout",
        "watch-one": "one",
        "idle": "idle",
    }
    stores = _stores(args) if "store" in args else [("memory", 1)]
    runs = []
    for watchers in (int(n) for n in _csv(args.watchers)):
        for label in _csv(args.targets):
            target, transport = _target(label)
            for store, replicas in stores if target == "hub" else [("memory", 1)]:
                runs.append(Run(
                    args.scenario, target, mode[args.scenario], watchers=watchers,
                    rate=_rate(args.rate), transport=transport,
                    duration=args.duration, store=store, replicas=replicas,
                    warmup=args.warmup if args.scenario != "idle" else 0.0,
                    budget=args.budget,
                ))  # fmt: skip
    return runs


def _write_runs(
    targets: list[str],
    ops: list[str],
    writers: int,
    duration: float,
    stores: list[tuple[str, int]] | None = None,
) -> list[Run]:
    runs = []
    for op in ops:
        seen = set()
        for label in targets:
            target, store = _target(label)
            # --store replaces the store a hub/... target names.
            pairs = [("memory", 1)] if target != "hub" else stores or [(store, 1)]
            for name, replicas in pairs:
                if (target, name, replicas) in seen:
                    continue
                seen.add((target, name, replicas))
                runs.append(Run(
                    "writes", target, "writes", rate=None, store=name,
                    replicas=replicas, duration=duration, warmup=1.0,
                    writers=writers, window=1, create=op == "create",
                ))  # fmt: skip
    return runs


def _suite_runs(quick: bool, etcd: bool) -> list[Run]:
    peers = [p for p in PEERS if etcd or p != "etcd"]
    duration = 2.0 if quick else 5.0

    def runs(scenario: str, watchers: str, rate: str, labels: list[str]) -> list[Run]:
        args = argparse.Namespace(
            scenario=scenario,
            watchers=watchers,
            rate=rate,
            targets=",".join(labels),
            duration=duration,
            warmup=0.5 if quick else 1.0,
            budget=1_000_000,
        )
        return _scenario_runs(args)

    sizes = "1,100,1000" if quick else "1,100,1000,5000"
    plan = runs("fanout", sizes, "100", peers) + runs("fanout", sizes, "max", peers)
    plan += runs("overload", "1000", "300", peers)
    plan += runs("watch-one", "1000", "100", peers)
    plan += runs("idle", "2000" if quick else "10000", "0", peers)
    plan += _write_runs(
        ["hub/memory", "hub/sqlite"] + (["etcd"] if etcd else []),
        ["update", "create"],
        32,
        2.0 if quick else 4.0,
    )
    return plan


def _header(results: list[dict[str, Any]]) -> str:
    etcd = next((r.get("etcd_version") for r in results if r.get("etcd_version")), None)
    env = results[0].get("environment", {}) if results else {}
    return (
        f"Run on {env.get('date', '?')}: {env.get('cpu', '?')}, "
        f"{env.get('cores', '?')} "
        f"cores, Python {env.get('python', '?')}, load average at start "
        f"{env.get('load', '?')}" + (f", etcd {etcd}" if etcd else "") + "."
    )


def _environment() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load": f"{os.getloadavg()[0]:.1f}",
    }


def _run_all(plan: list[Run]) -> list[dict[str, Any]]:
    if not pin_client():
        print("warning: fewer than 2 cores; hub and client share one", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="watchhub-bench-"))
    results: list[dict[str, Any]] = []
    environment = _environment()
    etcd_missing = False
    for run in plan:
        if run.target == "etcd" and etcd_missing:
            continue
        started = time.monotonic()
        try:
            result = execute(run, scratch, run.profile)
        except servers.SetupError as error:
            print(f"skipped {run.label}: {error}", file=sys.stderr)
            etcd_missing = etcd_missing or run.target == "etcd"
            continue
        except RuntimeError as error:
            print(
                f"failed {run.scenario} {run.label} {run.watchers}: {error}",
                file=sys.stderr,
            )
            continue
        result["environment"] = environment
        result["load_at_start"] = environment["load"]
        results.append(result)
        print(
            f"{run.scenario:9} {run.label:14} watchers={run.watchers:<6} "
            f"rate={result['rate']!s:6} events/s={result['events_per_s']:>10,.0f} "
            f"writes/s={result['write_rate']:>8,.0f} "
            f"p99={result['latency_ms']['p99']:8.1f}ms "
            f"cpu/100k={result['cpu_per_100k']:6.2f}s complete={result['complete']} "
            f"client={result['client_cpu']:.0%} ({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
        )
    return results


def _save(name: str, results: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def _print(results: list[dict[str, Any]]) -> None:
    print(report.results_table(results))
    print()
    print(report.ratio_table(results))
    stores = report.store_table(results)
    if stores:
        print()
        print(stores)
    checks = report.check_targets(results)
    if checks:
        print()
        print(report.targets_table(results))
    bound = [r for r in results if r["client_bound"]]
    if bound:
        print(
            f"\n{len(bound)} run(s) used more than 70% of the client's core: they "
            "measure the load client, not the server."
        )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.scenario == "report":
        results = json.loads(args.file.read_text())
        _print(results)
        for path in report.plot(results, RESULTS):
            print(f"plot: {path}")
        if args.docs and report.write_docs(DOC, results, _header(results)):
            print(f"updated {DOC}")
        return 0
    if args.scenario == "suite":
        plan = _suite_runs(args.quick, not args.no_etcd)
    elif args.scenario == "writes":
        plan = _write_runs(
            _csv(args.targets), _csv(args.ops), args.writers, args.duration,
            _stores(args) if args.store else None,
        )  # fmt: skip
    else:
        plan = _scenario_runs(args)
        if args.profile is not None:
            for index, run in enumerate(plan):
                if run.target == "hub":
                    name = f"{run.scenario}-{run.label.replace('/', '-')}"
                    run.profile = args.profile / f"{name}-{run.watchers}-{index}.txt"
    results = _run_all(plan)
    if not results:
        print("no run completed", file=sys.stderr)
        return 1
    path = _save(args.scenario, results)
    _print(results)
    print(f"\nresults: {path}")
    if args.scenario == "suite":
        (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
        for plot in report.plot(results, RESULTS):
            print(f"plot: {plot}")
        if report.write_docs(DOC, results, _header(results)):
            print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
