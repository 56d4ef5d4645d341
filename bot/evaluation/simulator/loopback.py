"""One aiohttp application served on ``127.0.0.1`` on a free port: the lifecycle every fake and
the Kimi simulator share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

from aiohttp import web

__all__ = ["LoopbackFake", "LoopbackServer"]


class LoopbackFake(ABC):
    """Base of every fake served on loopback: an async context manager over :meth:`start` and
    :meth:`close`, which each fake defines."""

    @abstractmethod
    async def start(self) -> None:
        """Serve the fake (its port is known afterwards)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop serving and let go of every connection."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class LoopbackServer:
    """Serves ``app`` on loopback; ``await start()`` returns its origin (``http://127.0.0.1:PORT``).
    Also an async context manager. ``handler_cancellation`` cancels a handler whose client went
    away (a hanging fake then stops at once); ``shutdown_timeout`` bounds :meth:`stop`."""

    def __init__(
        self, app: web.Application, *, handler_cancellation: bool = True, shutdown_timeout: float = 0.5
    ) -> None:
        self.app = app
        self._cancellation, self._shutdown_timeout = handler_cancellation, shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=self._cancellation, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.origin

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
