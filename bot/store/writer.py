"""The turn at SQLite's one writer, acks first.

SQLite lets one transaction write at a time, and the bot holds one writer connection. Every
transaction used to queue for it in arrival order, so an event's ack (one short transaction)
waited behind the drafts' claims, outcomes and card bookkeeping queued before it: under a burst,
most of the ack's time was that wait. :class:`WriterTurns` hands the writer to waiting *urgent*
transactions (an ack: a stored message, a decided click) before any queued background one. The
transaction already running is never interrupted, so an ack waits for at most that one plus the
acks ahead of it.

Background work can only be delayed by acks, never lost: it runs as soon as no ack waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class WriterTurns:
    """One holder at a time; on release, the oldest urgent waiter goes first, then the oldest
    background one. Cancelling a waiter (a timed-out click) gives its turn to the next."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> tuple[int, int]:
        """Urgent and background transactions waiting for the writer."""
        return len(self._urgent), len(self._background)

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held and not self._urgent and not self._background:
            self._held = True
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._background
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed the turn, cancelled before taking it: pass it on
            else:
                queue.remove(granted)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._background):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the turn passes on; the writer stays held
                    return
        self._held = False
