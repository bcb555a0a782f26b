"""A circuit breaker for one deployment: stop calling an engine that keeps failing.

Closed: calls go through and consecutive failures are counted. After `threshold` of them the
circuit opens: the router skips the deployment for `cooldown_s`, so callers fall back at once
instead of waiting on connection attempts and timeouts. After the cooldown it is half-open: one
call (the probe) is let through; success closes the circuit, failure opens it for another
cooldown. Only "unavailable" and "timeout" count as failures; an engine that answers, even with
a 4xx or unusable output, is up.

The clock is injectable so tests can move time instead of sleeping. The breaker is used from one
event loop and never awaits, so it needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("threshold must be >= 1 and cooldown_s > 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go to this deployment now? In half-open state this claims the one probe,
        so the caller must report the outcome (`success`, `failure` or `abandon`)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        # A failed probe reopens at once, whatever the count: the engine is still down.
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False

    def abandon(self) -> None:
        """The call ended without a verdict (cancelled): free the probe for the next caller."""
        self._probing = False
