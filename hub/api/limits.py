"""Limits per client: writes per second (token buckets) and open watches.

A client is the authenticated user, or the peer address of an anonymous
caller. Both limiters are plain objects with no I/O, driven by the API's
middleware.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import TooManyRequests

__all__ = ["RateLimiter", "WatcherSlots"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """
    A token bucket per client: ``rate`` writes per second, bursts of ``burst``.

    At most ``max_clients`` buckets are kept. When more clients write, the
    buckets that have refilled (idle clients) are dropped first, then the
    oldest; a dropped client starts again with a full bucket, which costs at
    most one extra burst.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate ({rate}) and burst ({burst}) must be positive")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str) -> float:
        """
        Take one token for ``client``.

        Returns 0 when the write may go ahead, or else the seconds until the
        client's next token.
        """
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        else:
            elapsed = now - bucket.updated
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            client
            for client, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst
        ]
        for client in full:
            del self._buckets[client]
        while len(self._buckets) >= self.max_clients:
            del self._buckets[next(iter(self._buckets))]

    @property
    def clients(self) -> int:
        """The number of buckets kept."""
        return len(self._buckets)


class WatcherSlots:
    """
    Count open watches, in all and per client, and refuse one above either limit.

    Attributes:
        total: The watches open now.
    """

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self._per_client: dict[str, int] = {}

    def acquire(self, client: str) -> None:
        """
        Take a slot for one more watch of ``client``.

        Raises:
            TooManyRequests: the hub, or this client, has as many watches open
                as it may.
        """
        if self.total >= self.max_total:
            raise TooManyRequests(
                f"the hub has {self.total} watches open, its limit; try again later"
            )
        count = self._per_client.get(client, 0)
        if count >= self.max_per_client:
            raise TooManyRequests(
                f"this client has {count} watches open, the limit per client"
            )
        self._per_client[client] = count + 1
        self.total += 1

    def release(self, client: str) -> None:
        """Give back a slot that :meth:`acquire` took."""
        count = self._per_client.get(client, 0) - 1
        if count > 0:
            self._per_client[client] = count
        else:
            self._per_client.pop(client, None)
        self.total -= 1

    def open_for(self, client: str) -> int:
        """The number of watches ``client`` has open."""
        return self._per_client.get(client, 0)
