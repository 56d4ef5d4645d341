"""Build the Kimi client from settings, and check it at start-up (the key, the models, prices)."""

from __future__ import annotations

from bot.kimi import KimiClient
from bot.llm.breaker import Breakers
from bot.llm.limiter import AccountLimiter
from bot.llm.models import ModelInfo
from bot.llm.pricing import PriceTable
from bot.policy import Policy
from bot.settings import Settings


def client_from_settings(settings: Settings) -> KimiClient:
    """The one client of this instance: its share of the account's limits, breakers, prices."""
    assert settings.moonshot_api_key is not None
    return KimiClient(
        settings.kimi_base_url,
        settings.moonshot_api_key,
        timeout=settings.kimi_timeout_seconds,
        max_retries=settings.kimi_max_retries,
        limiter=AccountLimiter.shared(
            max_concurrency=settings.kimi_max_concurrency,
            rpm=settings.kimi_rpm,
            tpm=settings.kimi_tpm,
            instances=settings.kimi_instances,
        ),
        rate_limit_max_wait=settings.kimi_rate_limit_max_wait_seconds,
        default_max_tokens=settings.kimi_max_tokens,
        fallback_model=settings.kimi_fallback_model,
        breakers=Breakers(
            failure_threshold=settings.kimi_breaker_failures, cooldown=settings.kimi_breaker_cooldown_seconds
        ),
        exact_token_counts=settings.kimi_exact_tokens,
        prices=PriceTable.from_settings(
            settings.kimi_prices, settings.kimi_default_price, settings.kimi_web_search_fee_usd
        ),
    )


def configured_models(settings: Settings, policy: Policy) -> dict[str, str]:
    """Every model the settings and the policy name, keyed by where it is named."""
    named = {
        "KIMI_MODEL": settings.kimi_model,
        "KIMI_FALLBACK_MODEL": settings.kimi_fallback_model or "",
        "policy models.drafting": policy.models.drafting,
        "policy models.summarizing": policy.models.summarizing,
    }
    return {where: model for where, model in named.items() if model}


async def start_client(settings: Settings, policy: Policy) -> tuple[KimiClient, dict[str, ModelInfo]]:
    """The client, checked: a refused key, an unknown model or a model without a price is a
    :class:`~bot.errors.ConfigError` naming it (and the ids Kimi serves)."""
    client = client_from_settings(settings)
    catalog: dict[str, ModelInfo] = {}
    try:
        if settings.kimi_check_models:
            catalog = await client.check_startup(configured_models(settings, policy))
        else:
            client.prices.check(list(configured_models(settings, policy).values()))
    except BaseException:
        await client.aclose()
        raise
    return client, catalog
