"""The benchmark harness: fan-out throughput, latency and memory against peers.

Run ``python -m bench --help``; see ``docs/performance.md``.
"""
