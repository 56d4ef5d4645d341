"""Fair at the edge: budgets reserved before a call (the day's and each customer's), a spent
budget shown once on the desk while drafts wait, and a flooding sender who cannot make another
customer wait (Kimi's queue is round-robin by customer)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select

from bot import metrics
from bot.ports import CardState
from bot.store import Conversation, UsageRecord, sessionmaker
from tests.desks import FakeKimi, open_desk
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
