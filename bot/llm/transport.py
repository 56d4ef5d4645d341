"""What the Kimi API pieces share: one way to send a request that answers 200 or raises."""

from __future__ import annotations

from typing import Any, Protocol

import httpx


class KimiRequest(Protocol):
    """Sends one request to the Kimi API; a non-200 answer or a network failure raises a
    :class:`~bot.errors.KimiError`."""

    async def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...
