"""Kimi at its limits: one limiter for the account, a fair queue, the error taxonomy, a breaker
per model with a fallback, prices from config, the model catalog at start-up.

The fake Kimi enforces an account's limits the way Moonshot does (429 ``rate_limit_reached_error``
past concurrency, RPM or TPM); the windows are shortened to a couple of seconds to keep tests fast.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.errors import (
    ConfigError,
    KimiAuthError,
    KimiCircuitOpen,
    KimiContentFiltered,
    KimiContextTooLong,
    KimiModelNotFound,
    KimiQuotaExhausted,
    KimiServerError,
)
from bot.kimi import KimiClient
from bot.llm.breaker import Breakers, BreakerState
from bot.llm.limiter import AccountLimiter
from bot.llm.pricing import Price, PriceTable
from bot.llm.setup import configured_models, start_client
from bot.policy import Policy
from bot.settings import load_settings
from tests.fakes.kimi import Fail, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, running_bot, until

WINDOW = 2.0


def ask(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question number {n}: when do you open?"}]


def client(kimi: FakeKimi, limiter: AccountLimiter | None = None, **options: object) -> KimiClient:
    return KimiClient(
        kimi.base_url,
        SecretStr(KIMI_KEY),
        backoff_base=0.05,
        rate_limit_jitter=0.05,
        limiter=limiter,
        **options,  # type: ignore[arg-type]
    )


async def test_a_burst_under_known_limits_lands_every_answer_without_a_single_429(kimi: FakeKimi) -> None:
    # The account: 2 concurrent, 6 requests per 2-second window; each answer takes 0.2 s.
    kimi.limits.max_concurrency, kimi.limits.rpm, kimi.limits.limit_window, kimi.latency = 2, 6, WINDOW, 0.2
    limiter = AccountLimiter(max_concurrency=2, rpm=6, tpm=10_000_000, window=WINDOW, margin=0.1)
    kimi_client = client(kimi, limiter)
    started = time.monotonic()
    try:
        answers = await asyncio.gather(*(kimi_client.chat(model="kimi-k2.5", messages=ask(n)) for n in range(12)))
    finally:
        await kimi_client.aclose()
    elapsed = time.monotonic() - started
    assert all(a.content for a in answers)
    assert kimi.limits.rate_limited == 0 and kimi_client.rate_limited == 0
    assert kimi.limits.max_in_flight <= 2
    # 12 requests at 6 per window: the second six start one window after the first six.
    assert elapsed >= WINDOW
    assert len(limiter.stats.waits) == 12 and limiter.stats.percentile(99) > 0


async def test_callers_are_served_in_the_order_they_asked(kimi: FakeKimi) -> None:
    kimi.latency = 0.05
    limiter = AccountLimiter(max_concurrency=1, rpm=1000, tpm=10_000_000)
    kimi_client = client(kimi, limiter)
    try:
        tasks = []
        for n in range(6):
            tasks.append(asyncio.create_task(kimi_client.chat(model="kimi-k2.5", messages=ask(n))))
            await asyncio.sleep(0)  # each caller reaches the queue before the next one starts
        await asyncio.gather(*tasks)
    finally:
        await kimi_client.aclose()
    asked = [body["messages"][0]["content"] for body in kimi.completions]
    assert asked == [ask(n)[0]["content"] for n in range(6)]


async def test_a_sender_with_fifty_queued_calls_does_not_hold_up_another_customers_one(kimi: FakeKimi) -> None:
    # One customer's flood has 50 calls waiting when another customer's single call arrives: it is
    # served right after the call in flight, not after the flood (round-robin by tenant).
    kimi.latency = 0.02
    limiter = AccountLimiter(max_concurrency=1, rpm=1000, tpm=10_000_000)
    kimi_client = client(kimi, limiter)
    try:
        flood = []
        for n in range(50):
            flood.append(asyncio.create_task(kimi_client.chat(model="kimi-k2.5", messages=ask(n), tenant="flooder")))
            await asyncio.sleep(0)
        await until(lambda: limiter.queued == 49)  # one in flight, 49 waiting
        other = asyncio.create_task(kimi_client.chat(model="kimi-k2.5", messages=ask(999), tenant="customer"))
        await asyncio.gather(*flood, other)
    finally:
        await kimi_client.aclose()
    asked = [body["messages"][0]["content"] for body in kimi.completions]
    assert len(asked) == 51
    assert asked.index(ask(999)[0]["content"]) <= 2  # the one in flight (and at most its successor), then ours
    assert asked[-1] == ask(49)[0]["content"]  # the flood itself stays in its order


async def test_tokens_per_minute_count_the_prompt_and_max_tokens(kimi: FakeKimi) -> None:
    # Each request is charged about 2,000 tokens of max_tokens; the account allows 5,000 a window.
    kimi.limits.tpm, kimi.limits.limit_window = 5000, WINDOW
    limiter = AccountLimiter(max_concurrency=10, rpm=1000, tpm=5000, window=WINDOW, margin=0.1)
    kimi_client = client(kimi, limiter)
    started = time.monotonic()
    try:
        await asyncio.gather(*(kimi_client.chat(model="kimi-k2.5", messages=ask(n), max_tokens=2000) for n in range(4)))
    finally:
        await kimi_client.aclose()
    assert kimi.limits.rate_limited == 0
    assert [body["max_tokens"] for body in kimi.completions] == [2000] * 4
    assert time.monotonic() - started >= WINDOW, "only two requests fit in one window"


async def test_a_429_for_a_limit_we_did_not_know_waits_as_kimi_says_without_spending_retries(
    kimi: FakeKimi,
) -> None:
    # The account is smaller than configured (another process shares it): Kimi says "wait".
    kimi.limits.rpm, kimi.limits.limit_window = 2, WINDOW
    kimi_client = client(kimi, AccountLimiter(max_concurrency=10, rpm=1000, tpm=10_000_000), max_retries=0)
    try:
        answers = await asyncio.gather(*(kimi_client.chat(model="kimi-k2.5", messages=ask(n)) for n in range(4)))
    finally:
        await kimi_client.aclose()
    assert all(a.content for a in answers), "no answer failed although the retry budget was 0"
    assert kimi.limits.rate_limited >= 1 and kimi_client.limiter.stats.pauses >= 1


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Fail.quota_exceeded(), KimiQuotaExhausted),
        (
            Fail(
                403,
                "exceeded_current_quota_error",
                "Your account org-1<ak-1> is not active, organization <org-1> exceeded current quota",
            ),
            KimiQuotaExhausted,
        ),
        (Fail.content_filter(), KimiContentFiltered),
        (Fail(401, "invalid_authentication_error", "Invalid Authentication"), KimiAuthError),
        (
            Fail(400, "invalid_request_error", "Invalid request: Your request exceeded model token limit: 8192"),
            KimiContextTooLong,
        ),
    ],
)
async def test_each_failure_kimi_sends_has_its_own_class_and_is_not_retried(
    kimi: FakeKimi, failure: Fail, error: type[Exception]
) -> None:
    kimi.script(failure, Reply("after the fix"))
    kimi_client = client(kimi)
    try:
        with pytest.raises(error):
            await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
        assert len(kimi.requests) == 1
        quota = error is KimiQuotaExhausted
        assert (kimi_client.quota_exhausted_at is not None) == quota, "the core's cue for one alert card"
        await kimi_client.chat(model="kimi-k2.5", messages=ask(2))
        assert kimi_client.quota_exhausted_at is None
    finally:
        await kimi_client.aclose()


async def test_a_prompt_over_the_context_window_is_context_too_long(kimi: FakeKimi) -> None:
    kimi_client = client(kimi)
    try:
        with pytest.raises(KimiContextTooLong):
            await kimi_client.chat(model="moonshot-v1-8k", messages=ask(1), max_tokens=9000)
        with pytest.raises(KimiModelNotFound):
            await kimi_client.chat(model="kimi-thinking-preview", messages=ask(1))
    finally:
        await kimi_client.aclose()


async def test_server_errors_back_off_and_give_up_after_the_retry_budget(kimi: FakeKimi) -> None:
    kimi.fail_always(500, "server_error", "Internal server error")
    kimi_client = client(kimi, max_retries=2)
    try:
        with pytest.raises(KimiServerError):
            await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
    finally:
        await kimi_client.aclose()
    assert len(kimi.requests) == 3


async def test_a_failing_model_trips_its_breaker_the_fallback_writes_and_the_primary_comes_back(
    kimi: FakeKimi,
) -> None:
    kimi.fail_model("kimi-k2.5", Fail.server_error())
    breakers = Breakers(failure_threshold=2, cooldown=0.5)
    kimi_client = client(kimi, fallback_model="kimi-k2-0905-preview", breakers=breakers)
    try:
        first = await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
        assert first.model == "kimi-k2-0905-preview" and first.fallback
        assert breakers["kimi-k2.5"].state is BreakerState.OPEN
        before = len(kimi.requests)
        second = await kimi_client.chat(model="kimi-k2.5", messages=ask(2))
        assert second.model == "kimi-k2-0905-preview"
        assert len(kimi.requests) == before + 1, "the open breaker skipped the primary"
        kimi.recover()
        while breakers["kimi-k2.5"].state is not BreakerState.HALF_OPEN:
            await asyncio.sleep(0.05)
        third = await kimi_client.chat(model="kimi-k2.5", messages=ask(3))
    finally:
        await kimi_client.aclose()
    assert third.model == "kimi-k2.5" and not third.fallback
    assert breakers["kimi-k2.5"].state is BreakerState.CLOSED


async def test_without_a_fallback_an_open_breaker_fails_fast(kimi: FakeKimi) -> None:
    kimi.fail_always(429, "engine_overloaded_error", "The engine is currently overloaded, please try again later")
    kimi_client = client(kimi, breakers=Breakers(failure_threshold=3, cooldown=60))
    try:
        with pytest.raises(KimiCircuitOpen) as caught:
            await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
    finally:
        await kimi_client.aclose()
    assert len(kimi.requests) == 3 and (caught.value.retry_after or 0) > 0


async def test_prices_come_from_config_and_an_unpriced_model_is_never_free(kimi: FakeKimi) -> None:
    table = PriceTable.from_settings('{"kimi-k2.5": [1.0, 2.0, 10.0]}', "", 0.005)
    kimi_client = client(kimi, prices=table)
    try:
        answer = await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
    finally:
        await kimi_client.aclose()
    u = answer.usage
    assert u.cost_microusd("kimi-k2.5") == round(
        u.cached_tokens * 1.0 + (u.prompt_tokens - u.cached_tokens) * 2.0 + u.completion_tokens * 10.0
    )
    with pytest.raises(ConfigError, match="kimi-latest"):
        table.check(["kimi-k2.5", "kimi-latest"])
    charged = PriceTable(default=Price(0.5, 1.0, 4.0))
    assert charged.microusd("kimi-latest", prompt_tokens=1000, cached_tokens=0, completion_tokens=0) == 1000
    assert PriceTable().microusd("some-new-model", prompt_tokens=1000, cached_tokens=0, completion_tokens=10) > 0


async def test_start_up_names_an_unknown_model_and_lists_the_ids_kimi_serves(kimi: FakeKimi) -> None:
    settings = load_settings(
        moonshot_api_key=KIMI_KEY, kimi_base_url=kimi.base_url, kimi_model="kimi-k9", policy_file="none.toml"
    )
    with pytest.raises(ConfigError) as caught:
        await start_client(settings, Policy())
    assert "KIMI_MODEL=kimi-k9" in str(caught.value) and "kimi-k2.5" in str(caught.value)


async def test_start_up_with_a_refused_key_is_a_clear_fatal_error(kimi: FakeKimi) -> None:
    settings = load_settings(moonshot_api_key="sk-wrong", kimi_base_url=kimi.base_url)
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY was refused"):
        await start_client(settings, Policy())


async def test_start_up_refuses_a_model_without_a_price(kimi: FakeKimi) -> None:
    settings = load_settings(moonshot_api_key=KIMI_KEY, kimi_base_url=kimi.base_url, kimi_fallback_model="kimi-latest")
    assert configured_models(settings, Policy())["KIMI_FALLBACK_MODEL"] == "kimi-latest"
    with pytest.raises(ConfigError, match="no price for model"):
        await start_client(settings, Policy())
    kimi_client, catalog = await start_client(
        load_settings(
            moonshot_api_key=KIMI_KEY,
            kimi_base_url=kimi.base_url,
            kimi_fallback_model="kimi-latest",
            kimi_default_price="[0.15, 2.0, 5.0]",
        ),
        Policy(),
    )
    await kimi_client.aclose()
    assert catalog["kimi-k2.5"].supports_image_in and catalog["kimi-k2.5"].context_length == 262144


async def test_the_answer_can_be_watched_as_it_streams(kimi: FakeKimi) -> None:
    kimi.script(Reply("Your parcel left the warehouse this morning and should arrive on Friday."))
    seen: list[str] = []
    kimi_client = client(kimi)
    try:
        answer = await kimi_client.chat(model="kimi-k2.5", messages=ask(1), on_delta=seen.append)
    finally:
        await kimi_client.aclose()
    assert len(seen) > 2 and seen[-1] == answer.content
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))


async def test_the_client_takes_an_httpx_transport_for_unit_tests() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/tokenizers/estimate-token-count"):
            return httpx.Response(200, json={"data": {"total_tokens": 42}})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "kimi-k2.5", "context_length": 262144}]})

    kimi_client = KimiClient("http://kimi.test/v1", SecretStr("sk"), transport=httpx.MockTransport(handler))
    try:
        assert await kimi_client.count_tokens("kimi-k2.5", ask(1)) == 42
        assert list(await kimi_client.list_models()) == ["kimi-k2.5"]
        await kimi_client.list_models()  # served from the daily cache
    finally:
        await kimi_client.aclose()
    assert calls == ["/v1/tokenizers/estimate-token-count", "/v1/models"]


async def test_with_exact_counts_tpm_is_charged_with_kimis_own_token_count(kimi: FakeKimi) -> None:
    limiter = AccountLimiter(max_concurrency=4, rpm=1000, tpm=10_000_000)
    kimi_client = client(kimi, limiter, exact_token_counts=True)
    try:
        await kimi_client.chat(model="kimi-k2.5", messages=ask(1), max_tokens=100)
    finally:
        await kimi_client.aclose()
    [estimate] = [r for r in kimi.requests if r.path.endswith("/tokenizers/estimate-token-count")]
    assert estimate.response["data"]["total_tokens"] == kimi.prompt_tokens_for(ask(1))
    assert limiter.tokens_in_window == kimi.prompt_tokens_for(ask(1)) + 100


async def test_instances_sharing_an_account_each_keep_to_their_share(kimi: FakeKimi) -> None:
    # Two instances on one account of 2 concurrent / 4 per window: each takes half.
    kimi.limits.max_concurrency, kimi.limits.rpm, kimi.limits.limit_window, kimi.latency = 2, 4, WINDOW, 0.1
    shares = [AccountLimiter.shared(max_concurrency=2, rpm=4, tpm=1000, instances=2, window=WINDOW) for _ in "ab"]
    assert [(s.max_concurrency, s.rpm, s.tpm) for s in shares] == [(1, 2, 500)] * 2
    shares = [AccountLimiter.shared(max_concurrency=2, rpm=4, tpm=10**7, instances=2, window=WINDOW) for _ in "ab"]
    clients = [client(kimi, share) for share in shares]
    try:
        await asyncio.gather(
            *(c.chat(model="kimi-k2.5", messages=ask(n)) for c in clients for n in range(3)), return_exceptions=False
        )
        assert kimi.limits.rate_limited == 0 and kimi.limits.max_in_flight <= 2
        figures = clients[0].metrics()
        assert figures["kimi_rate_limited_total"] == 0 and figures["kimi_queue_waiting"] == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_the_account_queue_and_breakers_show_on_metrics(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        await harness.mention("where is #W2611340")
        await harness.wait_cards(1)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{harness.url}/metrics")).text
    assert "supportbot_kimi_rate_limited_total 0" in metrics
    assert 'supportbot_kimi_breaker_open{model="kimi-k2.5"} 0' in metrics


async def test_a_trial_call_that_kimi_refuses_for_the_request_still_closes_the_breaker(kimi: FakeKimi) -> None:
    kimi.fail_model("kimi-k2.5", Fail.server_error())
    breakers = Breakers(failure_threshold=1, cooldown=0.2)
    kimi_client = client(kimi, breakers=breakers, max_retries=0)
    try:
        with pytest.raises(KimiServerError):
            await kimi_client.chat(model="kimi-k2.5", messages=ask(1))
        assert breakers["kimi-k2.5"].state is BreakerState.OPEN
        kimi.recover()
        while breakers["kimi-k2.5"].state is not BreakerState.HALF_OPEN:
            await asyncio.sleep(0.05)
        kimi.script(Fail.content_filter())
        with pytest.raises(KimiContentFiltered):
            await kimi_client.chat(model="kimi-k2.5", messages=ask(2))  # the trial: the model answered
        assert breakers["kimi-k2.5"].state is BreakerState.CLOSED
        assert (await kimi_client.chat(model="kimi-k2.5", messages=ask(3))).content
    finally:
        await kimi_client.aclose()
