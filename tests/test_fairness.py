"""Fair at the edge: budgets reserved before a call (the day's and each customer's), a spent
budget shown once on the desk while drafts wait, and a flooding sender who cannot make another
customer wait (Kimi's queue is round-robin by customer)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bot import metrics
from bot.core.fairness import KEPT, Pacer
from bot.policy import parse_policy
from bot.ports import CardState
from bot.store import Conversation, UsageRecord, sessionmaker
from tests.desks import Fail, FakeKimi, open_desk
from tests.harness import until

SMALL_REPLIES = "[models]\nmax_output_tokens = 256\n"


def budget_waits(budget: str) -> float:
    return metrics.BUDGET_WAITS.labels(budget=budget)._value.get()


async def spent_microusd(desk: object, customer: str | None = None) -> int:
    engine = desk.bot.engine  # type: ignore[attr-defined]
    query = select(func.coalesce(func.sum(UsageRecord.cost_microusd), 0))
    if customer is not None:
        query = query.join(Conversation, Conversation.id == UsageRecord.conversation_id).where(
            Conversation.customer_id == customer
        )
    async with sessionmaker(engine)() as session:
        return int(await session.scalar(query) or 0)


async def test_a_spent_budget_is_one_notice_no_failed_card_and_the_drafts_resume_when_it_is_raised(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    policy = SMALL_REPLIES + "[limits]\ndaily_budget_usd = 0.000001\n"
    waits_before = budget_waits("daily")
    async with open_desk(tmp_path, kimi, policy=policy, sweep_seconds=0.1) as desk:
        kim, lee = desk.customer("kim"), desk.customer("lee")
        await kim.says("where is #W2611340")
        await lee.says("do you ship to Norway?")
        # both drafts were turned back by the budget, at least once each, before any model call
        await until(lambda: budget_waits("daily") - waits_before >= 4, "both drafts waiting twice")
        budget_notices = [n for n in desk.notices if "daily model budget" in n]
        assert len(budget_notices) == 1, desk.notices
        assert "resume" in budget_notices[0]
        assert desk.cards == [] and kimi.completions == []
        # the agent raises the budget; the policy reloads live and the waiting drafts go on
        (tmp_path / "policy.toml").write_text(SMALL_REPLIES + "[limits]\ndaily_budget_usd = 5\n")
        await until(lambda: len(desk.cards) == 2, "both cards after the raise", timeout=30)
        assert all(card.state is not CardState.FAILED for card in desk.cards)
        assert len([n for n in desk.notices if "daily model budget" in n]) == 1


async def test_concurrent_drafts_never_spend_more_than_a_tiny_budget(tmp_path: Path, kimi: FakeKimi) -> None:
    budget_usd = 0.01
    kimi.latency = 0.3  # every draft is in flight when the next ones check the budget
    policy = SMALL_REPLIES + f"[limits]\ndaily_budget_usd = {budget_usd}\n"
    waits_before = budget_waits("daily")
    async with open_desk(tmp_path, kimi, policy=policy, kimi_max_concurrency=8) as desk:
        for n in range(12):
            await desk.customer(f"customer{n}").says(f"question {n}: where is my order #W26113{n:02d}?")
        await until(lambda: budget_waits("daily") > waits_before, "a draft waiting for the budget")
        await until(lambda: [n for n in desk.notices if "daily model budget" in n], "the budget notice")
        await until(lambda: desk.cards, "the cards the budget paid for")
        await desk.settle()
        spent = await spent_microusd(desk)
        assert 0 < spent <= budget_usd * 1_000_000, spent
        assert len(desk.cards) < 12, "the budget stopped some drafts"
        assert all(card.state is not CardState.FAILED for card in desk.cards)


async def test_a_flood_from_one_sender_neither_spends_past_their_budget_nor_delays_another_customer(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    customer_budget = 0.02
    kimi.latency = 0.05
    policy = SMALL_REPLIES + f"[limits]\ncustomer_daily_budget_usd = {customer_budget}\n"
    async with open_desk(tmp_path, kimi, policy=policy, kimi_max_concurrency=2) as desk:
        flooder, other = desk.customer("flooder"), desk.customer("other")
        for n in range(150):  # each a new conversation, as top-level messages in a channel are
            await flooder.says(f"message {n}: hello? anyone? where is #W2611340")
        asked = time.monotonic()
        said = await other.says("do you ship to Norway?")
        card = await desk.card_for(said, timeout=10)
        waited = time.monotonic() - asked
        assert card.state is not CardState.FAILED
        assert waited < 5, f"another customer waited {waited:.1f} s behind the flood"
        await until(lambda: [n for n in desk.notices if "daily model budget of flooder" in n], "the budget notice")
        flood_spent = await spent_microusd(desk, desk.driver.user_id("flooder"))
        assert flood_spent <= customer_budget * 1_000_000
        # the flood's calls stopped at the budget: far fewer than one per message
        assert len(kimi.completions) < 150
        await desk.settle()
        assert len([n for n in desk.notices if "budget" in n]) == 1, desk.notices
        assert all(card.state is not CardState.FAILED for card in desk.cards)


def counted(counter: object, platform: str = "desk") -> float:
    return counter.labels(platform=platform)._value.get()  # type: ignore[attr-defined]


def flood_messages_drafted(kimi: FakeKimi) -> set[str]:
    """The flood's messages that reached Kimi (as the newest customer turn of a prompt)."""
    seen: set[str] = set()
    for body in kimi.completions:
        for message in body["messages"]:
            content = message.get("content")
            if message["role"] == "user" and isinstance(content, str) and "flood message" in content:
                seen.add(content[content.index("flood message") :].split(":")[0])
    return seen


async def test_a_flood_of_new_conversations_is_paced_to_the_senders_bucket_and_shows_as_one_notice(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.latency = 0.05
    policy = SMALL_REPLIES + "[fairness]\nsender_messages_per_minute = 6\nsender_burst = 5\n"
    deferred_before, notices_before = counted(metrics.FLOOD_DEFERRED), counted(metrics.FLOOD_NOTICES)
    async with open_desk(tmp_path, kimi, policy=policy, kimi_max_concurrency=2) as desk:
        flooder, other = desk.customer("flooder"), desk.customer("other")
        for n in range(150):
            await flooder.says(f"flood message {n}: where is #W2611340")
        asked = time.monotonic()
        card = await desk.card_for(await other.says("do you ship to Norway?"), timeout=10)
        assert time.monotonic() - asked < 5, "another customer waited behind the flood"
        assert card.state is not CardState.FAILED
        await until(lambda: [n for n in desk.notices if "messages from flooder" in n], "the flood notice")
        await until(lambda: len(desk.cards) >= 6, "the burst's cards")
        # every message was stored and acknowledged; only the burst's drafts started (one more
        # token flows in every ten seconds)
        assert counted(metrics.FLOOD_DEFERRED) - deferred_before == 145
        assert len(flood_messages_drafted(kimi)) <= 6
        assert counted(metrics.FLOOD_NOTICES) - notices_before == 1
        flood_notices = [n for n in desk.notices if "messages from flooder" in n]
        assert len(flood_notices) == 1 and "paused" in flood_notices[0]


async def test_a_flood_inside_one_thread_is_coalesced_into_one_draft_that_covers_every_message(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.latency = 0.05
    policy = SMALL_REPLIES + "[fairness]\nsender_messages_per_minute = 60\nsender_burst = 1\n"
    coalesced_before = counted(metrics.FLOOD_COALESCED)
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        kim = desk.customer("kim")
        first = await kim.says("flood message start: hello?")
        await desk.card_for(first)  # the burst's draft
        calls_before = len(kimi.completions)
        flood_began = time.monotonic()
        for n in range(30):
            await kim.says(f"flood message {n}: anyone there?", after=first)
        # a token flows back every second: on a slow machine the thirty take longer to send, and
        # each token that came back while they were sent lets one more message start a draft
        refills = int(time.monotonic() - flood_began)
        # the thread's draft waited for the bucket (one second) and then covered all thirty
        last = await until(
            lambda: next((c for c in reversed(desk.cards) if "flood message 29" in c.customer_text), None),
            "the card answering the last message",
        )
        assert last.state is not CardState.FAILED
        # the bucket holds one message: the first (or, had a token flowed back in, the second) of
        # the thirty got a draft of its own, every later one joined the waiting draft
        assert 28 - refills <= counted(metrics.FLOOD_COALESCED) - coalesced_before <= 29
        await desk.settle()
        # at most two drafts for the thirty messages (with a summary call and a tool step each)
        assert len(kimi.completions) - calls_before <= 6 + 3 * refills
        assert len(desk.cards) <= 3 + refills
        prompt = json.dumps(kimi.completions[-1]["messages"])
        assert "flood message 29:" in prompt


async def test_an_open_breaker_is_one_notice_and_the_waiting_drafts_resume_when_kimi_answers(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.fail_model("kimi-k2.5", Fail.server_error())
    async with open_desk(
        tmp_path, kimi, kimi_breaker_failures=1, kimi_breaker_cooldown_seconds=1.0, sweep_seconds=0.2
    ) as desk:
        for name in ("kim", "lee", "ann"):
            await desk.customer(name).says(f"{name} here: are you open on Sunday?")
        await until(lambda: [n for n in desk.notices if "Kimi is failing" in n], "the breaker notice")
        # the drafts wait through several cool-downs: still one notice, no failed card
        await until(lambda: len([r for r in kimi.requests if r.path.endswith("/chat/completions")]) >= 3, "retries")
        assert desk.cards == []
        kimi.recover()
        await until(lambda: len(desk.cards) == 3, "the three cards once Kimi answers", timeout=30)
        assert all(card.state is not CardState.FAILED for card in desk.cards)
        assert len([n for n in desk.notices if "Kimi is failing" in n]) == 1



def test_a_public_servers_one_time_senders_are_not_kept_in_memory_and_a_flooder_stays_paced() -> None:
    pacer = Pacer()
    policy = parse_policy("").fairness  # 12 a minute per sender, burst 20
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def write(sender: str, workspace: str, conversation: str, at: datetime) -> datetime | None:
        return pacer.start_of(
            policy, platform="discord", workspace=workspace, sender=sender, conversation=conversation, now=at
        )

    flooded = [write("FLOOD", "GF", f"f{k}", t0) for k in range(40)]
    assert flooded[-1] == t0 + timedelta(seconds=100), "20 past the burst, at 12 a minute"
    for n in range(20_000):  # then 20,000 members of public servers write once each, within 50 s
        write(f"U{n}", f"G{n % 50}", f"c{n}", t0 + timedelta(seconds=n / 400))
    assert pacer.buckets <= KEPT, "a bucket kept for every sender ever heard from (20,052)"
    again = write("FLOOD", "GF", "f-again", t0 + timedelta(seconds=50))
    assert again == t0 + timedelta(seconds=105), "the flooder's debt outlived the forgetting"
