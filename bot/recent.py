"""A value read asynchronously (from SQL, say) and reused for a short while.

``/metrics`` and ``/readyz`` answer whoever asks as often as they ask; each answer must not cost
a query. :class:`Recent` runs at most one read per ``ttl`` seconds: callers within that time get
the last value, and callers that arrive while a read is under way wait for that same read. A
failed read is not kept (the next caller reads again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Recent(Generic[T]):
    """``read()``'s result, at most ``ttl`` seconds old; concurrent callers share one read."""

    def __init__(self, read: Callable[[], Awaitable[T]], ttl: float) -> None:
        self._read = read
        self._ttl = ttl
        self._value: T | None = None
        self._read_at = float("-inf")
        self._pending: asyncio.Future[T] | None = None

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at < self._ttl:  # never true before the first read
            return cast(T, self._value)
        if self._pending is None:
            pending = asyncio.ensure_future(self._refresh())
            # Its outcome is also retrieved when every caller waiting for it was cancelled.
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._pending = pending
        return await asyncio.shield(self._pending)

    async def _refresh(self) -> T:
        try:
            value = await self._read()
        finally:
            self._pending = None
        self._value, self._read_at = value, asyncio.get_running_loop().time()
        return value
