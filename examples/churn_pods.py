"""Churn pods at random, for the reconciler demo: create, relabel, re-IP, delete.

::

    python examples/churn_pods.py --server http://127.0.0.1:8080 --seed 1

It first makes three services (``web``, ``api`` and ``front``, the last one
selecting two labels), then changes one pod at a time, printing each change.
Run ``examples/reconciler.py`` beside it and watch the endpoints follow:
``watchhub watch endpoints``. It uses the synchronous client.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

from clients import SyncClient
from hub.core.errors import AlreadyExists, Conflict, NotFound

SERVICES: dict[str, dict[str, str]] = {
    "web": {"app": "web"},
    "api": {"app": "api"},
    "front": {"app": "web", "tier": "front"},
}
APPS = ["web", "api", "db"]
TIERS = ["front", "back"]


def random_labels(rng: random.Random) -> dict[str, str]:
    """Labels a pod might have."""
    return {"app": rng.choice(APPS), "tier": rng.choice(TIERS)}


def random_ip(rng: random.Random) -> str | None:
    """A pod IP, or none for a pod that is not running yet."""
    if rng.random() < 0.2:
        return None
    return f"10.0.{rng.randrange(4)}.{rng.randrange(1, 255)}"


def ensure_services(client: SyncClient) -> None:
    """Create the demo's services, or reset their selectors."""
    for name, selector in SERVICES.items():
        body = {"metadata": {"name": name}, "spec": {"selector": selector}}
        try:
            client.create("services", body)
        except AlreadyExists:
            client.patch("services", name, {"spec": {"selector": selector}})


def change_one(client: SyncClient, rng: random.Random, pods: int) -> str:
    """Make one random change to one of ``pods`` pods; describe it."""
    name = f"pod-{rng.randrange(pods)}"
    roll = rng.random()
    try:
        if roll < 0.35:
            body: dict[str, Any] = {
                "metadata": {"name": name, "labels": random_labels(rng)},
                "status": {"podIP": random_ip(rng)},
            }
            client.create("pods", body)
            return f"created {name} {body['metadata']['labels']} {body['status']}"
        if roll < 0.55:
            labels = random_labels(rng)
            client.patch("pods", name, {"metadata": {"labels": labels}})
            return f"relabelled {name} {labels}"
        if roll < 0.75:
            ip = random_ip(rng)
            client.patch("pods", name, {"status": {"podIP": ip}})
            return f"moved {name} to {ip}"
        client.delete("pods", name)
        return f"deleted {name}"
    except (AlreadyExists, NotFound, Conflict) as exc:
        return f"skipped {name}: {exc.message}"


def main(argv: list[str] | None = None) -> int:
    """Churn until interrupted, or for ``--steps`` changes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("WATCHHUB_URL", "http://127.0.0.1:8080"),
        help="the hub's URL (default $WATCHHUB_URL or %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("WATCHHUB_TOKEN"))
    parser.add_argument("--seed", type=int, help="for a repeatable run")
    parser.add_argument("--pods", type=int, default=12, help="pod names to use")
    parser.add_argument("--steps", type=int, default=0, help="changes; 0 for ever")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between changes"
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with SyncClient(args.server, token=args.token) as client:
        ensure_services(client)
        step = 0
        try:
            while args.steps == 0 or step < args.steps:
                print(change_one(client, rng, args.pods), flush=True)
                step += 1
                if args.interval:
                    time.sleep(args.interval)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
