"""What an operator scrapes from ``/metrics``: parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot import metrics
from tests.fakes.kimi import Hang
from tests.harness import Harness, draft_id_of


async def scrape(harness: Harness) -> dict[str, list[Sample]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{harness.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


async def scrape_when(
    harness: Harness, check: Callable[[dict[str, list[Sample]]], bool], timeout: float = 10
) -> dict[str, list[Sample]]:
    """Scrape until ``check`` holds (the dispatcher counts a reply just after recording it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(harness)
        if check(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


def value(samples: dict[str, list[Sample]], family: str, sample: str | None = None, **labels: str) -> float:
    for found in samples[family]:
        if found.name == (sample or family) and all(found.labels.get(k) == v for k, v in labels.items()):
            return float(found.value)
    raise AssertionError(f"no sample {sample or family} {labels} in {family}")


async def test_an_operator_scrapes_the_process_the_backlog_and_the_core_counters(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    cards = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(cards[0]))
    await harness.wait_replies(envelope["event"]["ts"])
    await harness.settle()

    samples = await scrape_when(
        harness, lambda s: value(s, "supportbot_replies_sent", "supportbot_replies_sent_total") == 1
    )

    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds", "process_cpu_seconds_total") > 0
    assert value(samples, "supportbot_cards_posted", "supportbot_cards_posted_total") == 1
    assert value(samples, "supportbot_replies_sent", "supportbot_replies_sent_total") == 1
    assert value(samples, "supportbot_outbox_depth") == 0, "the reply went out"
    assert value(samples, "supportbot_drafting_backlog") == 0
    for family in ("supportbot_time_to_draft_seconds", "supportbot_kimi_request_seconds", "supportbot_events"):
        assert family in samples, f"{family} is exposed"


async def test_a_slow_model_shows_as_a_drafting_backlog_with_its_age(harness: Harness) -> None:
    harness.kimi.script(Hang(4.0))
    asked = time.monotonic()
    await harness.mention("where is #W2611340")

    samples = await scrape(harness)
    assert value(samples, "supportbot_drafting_backlog") == 1
    aged = await scrape_when(harness, lambda s: value(s, "supportbot_drafting_oldest_age_seconds") >= 1.0, timeout=3)

    # The draft waiting since the mention is shown that old: not 0, not hours (a time zone slip).
    age = value(aged, "supportbot_drafting_oldest_age_seconds")
    assert 1.0 <= age <= time.monotonic() - asked + 0.5, age
    assert value(aged, "supportbot_drafting_backlog") == 1, "still drafting while the model hangs"
    await harness.wait_cards(1)
    # The backlog is read at most once per METRICS_CACHE_SECONDS: it follows within that.
    after = await scrape_when(harness, lambda s: value(s, "supportbot_drafting_backlog") == 0)
    assert value(after, "supportbot_drafting_backlog") == 0


async def test_the_core_s_reports_land_in_the_histograms_and_counters(harness: Harness) -> None:
    before = await scrape(harness)
    received = datetime.now(UTC) - timedelta(seconds=3)
    metrics.event_received("duplicate")
    metrics.draft_ready(received)
    metrics.card_posted(received.replace(tzinfo=None))  # SQLite's naive UTC is understood
    metrics.decided("approve", True, received)
    metrics.decided("approve", False)
    metrics.delivered(received)
    metrics.kimi_call("kimi-k2.5", 1.5, prompt_tokens=900, completion_tokens=120, cached_tokens=512)
    metrics.kimi_error("kimi-k2.5", "rate_limit_reached_error")
    metrics.platform_error("slack", "chat.postMessage")
    metrics.background_failure("produce_draft")

    after = await scrape(harness)

    def grew(family: str, sample: str, by: float = 1, **labels: str) -> None:
        try:
            old = value(before, family, sample, **labels)
        except (AssertionError, KeyError):
            old = 0.0
        assert value(after, family, sample, **labels) == old + by, (family, labels)

    grew("supportbot_events", "supportbot_events_total", outcome="duplicate")
    grew("supportbot_decisions", "supportbot_decisions_total", action="approve", outcome="accepted")
    grew("supportbot_decisions", "supportbot_decisions_total", action="approve", outcome="refused")
    grew("supportbot_kimi_tokens", "supportbot_kimi_tokens_total", 900, model="kimi-k2.5", kind="prompt")
    grew("supportbot_kimi_tokens", "supportbot_kimi_tokens_total", 512, model="kimi-k2.5", kind="cached")
    grew("supportbot_kimi_errors", "supportbot_kimi_errors_total", model="kimi-k2.5", type="rate_limit_reached_error")
    grew(
        "supportbot_platform_errors", "supportbot_platform_errors_total", platform="slack", operation="chat.postMessage"
    )
    grew("supportbot_background_failures", "supportbot_background_failures_total", task="produce_draft")
    grew("supportbot_kimi_request_seconds", "supportbot_kimi_request_seconds_count", model="kimi-k2.5")
    for step in ("draft", "card", "decision", "delivery"):
        family = f"supportbot_time_to_{step}_seconds"
        grew(family, f"{family}_count")
        assert value(after, family, f"{family}_bucket", le="2.0") == value(before, family, f"{family}_bucket", le="2.0")
        assert value(after, family, f"{family}_bucket", le="5.0") > value(before, family, f"{family}_bucket", le="5.0")
