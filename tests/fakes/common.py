"""What the Slack and Discord fakes share: waiting for what the bot did, and the faults a test
queues for the next matching requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FaultQueue", "at_least"]

T = TypeVar("T")
K = TypeVar("K")


async def at_least(
    count: int, matching: Callable[[], list[T]], timeout: float, failure: Callable[[int], str]
) -> list[T]:
    """Poll until ``matching()`` holds ``count`` items and return them all; on timeout raise
    ``AssertionError(failure(how_many_found))``."""
    deadline = time.monotonic() + timeout
    while len(found := matching()) < count:
        if time.monotonic() >= deadline:
            raise AssertionError(failure(len(found)))
        await asyncio.sleep(0.01)
    return found


@dataclass
class _Pending(Generic[K, T]):
    matches: Callable[[K], bool]
    fault: T
    times: int


class FaultQueue(Generic[K, T]):
    """Faults waiting for requests: :meth:`take` hands out the first one whose ``matches``
    accepts the request's key, ``times`` times (oldest first)."""

    def __init__(self) -> None:
        self._pending: list[_Pending[K, T]] = []

    def add(self, matches: Callable[[K], bool], fault: T, times: int = 1) -> None:
        self._pending.append(_Pending(matches, fault, times))

    def take(self, key: K) -> T | None:
        pending = next((p for p in self._pending if p.matches(key)), None)
        if pending is None:
            return None
        pending.times -= 1
        if pending.times <= 0:
            self._pending.remove(pending)
        return pending.fault

    def clear(self) -> None:
        self._pending.clear()
