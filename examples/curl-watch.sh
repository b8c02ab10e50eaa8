#!/usr/bin/env bash
# Watch pods with curl in one terminal while this script changes one pod.
# Start a hub first: .venv/bin/watchhub serve
set -euo pipefail
HUB=${WATCHHUB_URL:-http://127.0.0.1:8080}

curl -sN "$HUB/api/v1/watch/pods" &
watcher=$!
trap 'kill $watcher 2>/dev/null' EXIT
sleep 0.5

curl -s -X POST "$HUB/api/v1/pods" \
  -d '{"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 1}}' >/dev/null
curl -s -X PATCH "$HUB/api/v1/pods/web" \
  -H 'Content-Type: application/merge-patch+json' -d '{"spec": {"replicas": 3}}' >/dev/null
curl -s -X DELETE "$HUB/api/v1/pods/web" >/dev/null
sleep 0.5
