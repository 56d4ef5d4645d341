"""A bounded pool of workers over a queue of ids: each id is handled once at a time.

The work itself waits in SQL; the queue only says which ids this instance should look at now.
An id queued twice is handled once; winding down starts nothing new and waits for what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot import metrics
from bot.core.tasks import Supervisor

log = logging.getLogger(__name__)


class WorkerPool:
    """``workers`` loops (see :meth:`start`) that hand queued ids to ``handle``."""

    def __init__(self, name: str, supervisor: Supervisor, handle: Callable[[str], Awaitable[None]]) -> None:
        self.name = name
        self.supervisor = supervisor
        self.handle = handle
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._working = 0
        self._none_working = asyncio.Event()
        self._none_working.set()
        self._winding_down = False

    def submit(self, item: str) -> None:
        """Queue an id (again): a no-op when it is already queued here."""
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def start(self, workers: int) -> None:
        for number in range(workers):
            self.supervisor.keep_running(f"{self.name}-worker-{number}", self._work)

    def idle(self) -> bool:
        return not self._queued and self._working == 0

    async def wind_down(self, timeout: float) -> bool:
        """Start no more work (what is queued stays in SQL for the next run) and wait up to
        ``timeout`` for what is running; True when none is left."""
        self._winding_down = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_working.wait(), timeout)
        return self._working == 0

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if self._winding_down:
                self._queued.discard(item)
                continue
            self._working += 1
            self._none_working.clear()
            try:
                await self.handle(item)
            except Exception:
                metrics.background_failure(self.name)
                log.exception("%s %s failed unexpectedly", self.name, item)
            finally:
                self._working -= 1
                self._queued.discard(item)
                if self._working == 0:
                    self._none_working.set()
