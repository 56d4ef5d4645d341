"""Bolt's lazy listeners, supervised: each one runs in a task the adapter keeps (asyncio holds
only weak references to tasks), its end is observed, and ``stop`` waits for the ones in flight.

Bolt's own :class:`~slack_bolt.lazy_listener.asyncio_runner.AsyncioLazyListenerRunner` starts
them with a bare ``asyncio.ensure_future``. This runner is installed in its place through the
app's public ``listener_runner.lazy_listener_runner``; the work itself is wrapped exactly as
Bolt wraps it (argument injection, exceptions logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from slack_bolt.lazy_listener.async_internals import to_runnable_function
from slack_bolt.lazy_listener.async_runner import AsyncLazyListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.util.utils import get_name_for_callable

log = logging.getLogger(__name__)


class SupervisedLazyListenerRunner(AsyncLazyListenerRunner):
    """Runs lazy listeners in tasks it keeps until they end."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        name = get_name_for_callable(function)
        task = asyncio.create_task(self._run(function, request), name=f"slack-lazy:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    async def _run(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        await to_runnable_function(internal_func=function, logger=self.logger, request=request)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            log.warning("%s was cancelled before it finished", task.get_name())
            return
        error = task.exception()
        if error is not None:  # Bolt's wrapper catches Exception; this is a BaseException
            log.error("%s failed: %s", task.get_name(), error, exc_info=error)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the lazy listeners in flight, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
