"""A circuit breaker per model: after repeated failures a model is skipped for a cool-down.

Closed: calls go through; ``failure_threshold`` failures in a row open it. Open: calls are
refused until ``cooldown`` seconds passed. Half-open: one trial call goes through; success
closes the breaker, failure opens it for another cool-down. Only failures that say the model is
unwell count (5xx, timeouts, overload); an answer that is an error of the request or the account
(content filter, bad request, quota) shows the model is up and counts as a success; a rate limit
of our own account gives no verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one model."""

    def __init__(
        self, *, failure_threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_after(self) -> float:
        """Seconds until a trial call is let through (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go to this model now (a half-open breaker admits one trial)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def no_verdict(self) -> None:
        """The trial call ended without saying whether the model is well (cancelled, or our own
        account's rate limit): let the next call be the trial."""
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._trial = False


class Breakers:
    """One breaker per model id, created on first use."""

    def __init__(self, *, failure_threshold: int = 5, cooldown: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._by_model: dict[str, CircuitBreaker] = {}

    def __getitem__(self, model: str) -> CircuitBreaker:
        breaker = self._by_model.get(model)
        if breaker is None:
            breaker = CircuitBreaker(failure_threshold=self.failure_threshold, cooldown=self.cooldown)
            self._by_model[model] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        """Each known model's breaker state (for /metrics and the health check)."""
        return {model: str(breaker.state) for model, breaker in self._by_model.items()}
