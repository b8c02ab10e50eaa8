"""Exponential backoff with jitter, for clients that wait for a hub to come back."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """
    The delays between attempts to reach a hub that is away.

    The delay starts at ``initial`` seconds and is multiplied by ``factor`` after
    each failure, up to ``maximum``; :meth:`reset` after a success starts again
    from ``initial``. Each delay handed out is drawn uniformly from the upper
    half of the current step ("equal jitter"): every client waits at least half
    the step, and clients that lost the same hub at the same moment spread over
    the other half instead of coming back at once.

    The defaults are client-go's reflector's: 0.8 s doubles to a cap of 30 s,
    so a hub that restarts in a second or two is reached again within about
    that, while one that stays down is asked about twice a minute, not in a
    tight loop.

    Attributes:
        initial: The first step, in seconds.
        maximum: The cap on a step, in seconds.
        factor: How much a step grows after each failure.
        rng: The source of jitter; seed one for reproducible delays.
    """

    initial: float = 0.8
    maximum: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _step: float = field(default=0.0, init=False, repr=False)
    _failures: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum, got {self.initial} "
                f"and {self.maximum}"
            )
        if self.factor < 1:
            raise ValueError(f"backoff factor must be at least 1, got {self.factor}")
        self._step = self.initial

    @property
    def failures(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._failures

    def next_delay(self) -> float:
        """Return the next delay, in seconds, and grow the step."""
        step = self._step
        self._step = min(step * self.factor, self.maximum)
        self._failures += 1
        return step / 2 + self.rng.random() * step / 2

    def reset(self) -> None:
        """Start again from ``initial``: the last attempt succeeded."""
        self._step = self.initial
        self._failures = 0
