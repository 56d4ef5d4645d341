"""The supervisor: every piece of background work runs through it, so none ends unobserved.

A failure is logged with the work's name and context and counted
(``supportbot_background_failures_total``); a
long-running loop that fails is restarted after a short back-off. Like bolt-python's lazy
listener runner, the caller hands the work over and the supervisor owns its outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot import metrics

log = logging.getLogger(__name__)


class Supervisor:
    """Owns background tasks: one-shot work (:meth:`spawn`) and loops (:meth:`keep_running`)."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self._loops: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, name: str, work: Coroutine[Any, Any, Any], **context: object) -> asyncio.Task[Any]:
        """Run ``work`` in the background; its failure is logged with ``context`` and counted."""
        task = asyncio.create_task(work, name=name)
        self._tasks[task] = name
        task.add_done_callback(lambda t: self._done(t, name, context))
        return task

    def _done(self, task: asyncio.Task[Any], name: str, context: dict[str, object]) -> None:
        self._tasks.pop(task, None)
        self._loops.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            metrics.background_failure(name)
            details = " ".join(f"{k}={v}" for k, v in context.items())
            log.error("background work %s failed %s", name, details, exc_info=error)

    def keep_running(self, name: str, loop: Callable[[], Awaitable[None]], *, backoff: float = 1.0) -> None:
        """Run ``loop`` until shutdown, restarting it (after ``backoff`` seconds) when it fails."""

        async def forever() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    metrics.background_failure(name)
                    log.exception("%s failed; restarting it in %.1f s", name, backoff)
                    await asyncio.sleep(backoff)

        self._loops.add(self.spawn(name, forever()))

    @property
    def busy(self) -> int:
        """One-shot work still running."""
        return len(set(self._tasks) - self._loops)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for one-shot work to finish; loops are not waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = set(self._tasks) - self._loops
            remaining = deadline - loop.time()
            if not pending or remaining <= 0:
                return
            await asyncio.wait(pending, timeout=remaining)

    async def close(self) -> None:
        """Cancel everything and wait for it to end."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
