"""Kimi's model catalog (``GET /v1/models``) cached for a day, the start-up check of the
configured models, and the exact token count endpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

from bot.errors import ConfigError, KimiAuthError, KimiError, KimiRetryableError
from bot.llm.models import ModelInfo, check_configured
from bot.llm.pricing import PriceTable
from bot.llm.transport import KimiRequest

log = logging.getLogger(__name__)


class ModelCatalog:
    """The models one Kimi account offers, refreshed every ``ttl`` seconds."""

    def __init__(self, request: KimiRequest, base_url: str, prices: PriceTable, ttl: float) -> None:
        self._request = request
        self._base_url = base_url
        self._prices = prices
        self._ttl = ttl
        self._catalog: dict[str, ModelInfo] = {}
        self._catalog_at = 0.0
        self._failed_at = -1e9

    async def fetch(self, *, refresh: bool = False) -> dict[str, ModelInfo]:
        """``GET /v1/models``, cached for ``ttl`` (a day by default)."""
        if not refresh and self._catalog and time.monotonic() - self._catalog_at < self._ttl:
            return dict(self._catalog)
        response = await self._request("GET", "models")
        data = response.json().get("data") if isinstance(response.json(), dict) else None
        catalog = {
            info.id: info for info in (ModelInfo.from_json(m) for m in data or [] if isinstance(m, dict)) if info.id
        }
        self._catalog, self._catalog_at = catalog, time.monotonic()
        return dict(catalog)

    async def check_startup(self, configured: dict[str, str]) -> dict[str, ModelInfo]:
        """At start-up: the key works, every configured model exists and has a price.
        ``configured`` maps the setting that names a model (``KIMI_MODEL``) to its id. Raises
        :class:`ConfigError` with the reason (and the available ids) otherwise. When Kimi cannot
        be reached the check is skipped with a warning (an outage must not stop the start)."""
        try:
            catalog = await self.fetch(refresh=True)
        except KimiAuthError as exc:
            raise ConfigError(f"MOONSHOT_API_KEY was refused by Kimi at {self._base_url} ({exc})") from None
        except KimiRetryableError as exc:
            # Kimi unreachable or failing right now: start anyway (drafts wait and retry, the
            # breaker watches); an outage must not keep the review desk from coming up.
            log.warning("could not list Kimi's models at %s (%s); model check skipped", self._base_url, exc)
            self._prices.check(list(configured.values()))
            return {}
        except KimiError as exc:
            raise ConfigError(f"could not list Kimi's models at {self._base_url}: {exc}") from None
        check_configured(catalog, configured)
        self._prices.check(list(configured.values()))
        return catalog

    async def supports_images(self, model: str) -> bool:
        """Whether ``model`` takes image parts, from the catalog (refreshed daily). When the
        catalog cannot be had, images are sent (Kimi refuses them visibly if the model cannot
        read them) and the catalog is asked again in a minute, not on every draft."""
        if not self._catalog or time.monotonic() - self._catalog_at >= self._ttl:
            if time.monotonic() - self._failed_at < 60:
                return True
            try:
                await self.fetch(refresh=True)
            except KimiError as exc:
                self._failed_at = time.monotonic()
                log.warning("could not refresh Kimi's model list (%s); sending images as the policy says", exc)
                return True
        info = self._catalog.get(model)
        return bool(info and info.supports_image_in)

    async def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        """Kimi's exact count (``POST /v1/tokenizers/estimate-token-count``), for budgets and
        TPM where an estimate is not good enough."""
        response = await self._request(
            "POST", "tokenizers/estimate-token-count", json={"model": model, "messages": messages}
        )
        body = response.json()
        return int(body["data"]["total_tokens"])
