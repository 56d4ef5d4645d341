"""Copilot on demand (issue 21 point 7) on the test desk (the real core, in memory; SQLite and
PostgreSQL): an agent asks for a draft on a customer's message that did not mention the bot, and
asks ``/supportbot`` for an order or a thread's summary. Only agents may; a taken-over
conversation stays its human's; the draft goes through the same drafting, guards and card."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.on_demand import AGENT_MESSAGE, HELP, NOT_AN_AGENT, ORDER_USAGE, SUMMARY_NO_THREAD
from bot.domain.states import ConversationOwner
from bot.ports import CardState
from bot.testing import MemoryDriver, Saying, TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.harness import sample_orders

POLICY = '[approvers]\nagents = ["alice"]\n[memory]\nsummarize_after_turns = 2\nkeep_recent_turns = 1\n'
ANA_PRIVATE = ("Ana Diaz", "JD0146", "Desk chair", "320.00")


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, policy=POLICY, orders=sample_orders(), database_url=database_url) as opened:
        yield opened


def driver(desk: TestDesk) -> MemoryDriver:
    assert isinstance(desk.driver, MemoryDriver)
    return desk.driver


async def test_an_agent_has_a_reply_drafted_for_a_message_that_did_not_mention_the_bot_under_the_same_guards(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kimi.script(
        CallTools([("get_order_status", {"order_id": "40021"})]),
        Reply("Your order 40021 is being looked at."),
    )
    text = "where is my order 40021?"
    thread, told = await driver(desk).ask_draft(Saying(desk.customer("stranger"), text), "alice")
    assert told == "Drafting a reply to stranger's message: its card will be on the review desk."

    card = await desk.card(0)
    assert card.customer_text == text and card.state is CardState.AWAITING_REVIEW
    # The same identity guard as a mention: the asker is not the order's customer.
    assert card.identity == f"Unverified asker ({desk.account('stranger')})"
    assert any("Order 40021 belongs to a customer not verified" in flag for flag in card.flags)
    for private in ANA_PRIVATE:
        assert private not in repr(card)

    assert await desk.agent("alice").approve(card)
    await desk.settle()
    assert desk.driver.replies(thread) == ["Your order 40021 is being looked at."]


async def test_only_an_agent_may_ask_and_only_for_a_customers_message(desk: TestDesk, kimi: FakeKimi) -> None:
    _, told = await driver(desk).ask_draft(Saying(desk.customer("kim"), "where is my order?"), "bo")
    assert told == NOT_AN_AGENT
    _, told = await driver(desk).ask_draft(Saying(desk.customer("alice"), "we ship on Monday"), "alice")
    assert told == AGENT_MESSAGE
    assert await driver(desk).command("bo", "order #W2611340") == NOT_AN_AGENT
    await desk.settle()
    assert desk.cards == [] and kimi.completions == [], "a refused request drafts nothing"


async def test_a_taken_over_conversation_stays_the_agents_until_handed_back(desk: TestDesk, kimi: FakeKimi) -> None:
    kim = desk.customer("kim")
    said = await kim.says("where is my order #W2611340?")
    card = await desk.card_for(said)
    await desk.agent("alice").take_over(card)
    await desk.latest(card, lambda c: c.conversation.owner is ConversationOwner.HUMAN)
    await desk.settle()
    drafted = len(kimi.completions)

    _, told = await driver(desk).ask_draft(Saying(kim, "and can I change the address?", said.thread), "alice")
    assert told == (
        "This conversation was taken over: alice answers it, so supportbot drafts nothing here. "
        "To have the bot draft again, click Hand back on its card first, then ask again."
    )
    await desk.settle()
    assert len(desk.cards) == 1 and len(kimi.completions) == drafted, "no draft in a human's conversation"


async def test_supportbot_order_tells_an_agent_the_status_and_eta_only(desk: TestDesk) -> None:
    eta = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    told = await driver(desk).command("alice", "order #W2611340")
    assert told == f"*Order #W2611340*: shipped, expected {eta} (carrier: UPS)"
    assert "1Z999AA10123456784" not in told and "Kim Lee" not in told
    delivered = await driver(desk).command("alice", "order 40021")
    assert delivered.startswith("*Order 40021*: delivered, delivered ")
    assert await driver(desk).command("alice", "order nope-1") == "No order with id nope-1."
    assert await driver(desk).command("alice", "order") == ORDER_USAGE
    assert await driver(desk).command("alice", "help") == HELP
    assert (await driver(desk).command("alice", "refund 40021")).startswith("Unknown command `refund`.")


async def test_supportbot_summary_shows_the_threads_rolling_summary(desk: TestDesk, kimi: FakeKimi) -> None:
    assert await driver(desk).command("alice", "summary") == SUMMARY_NO_THREAD
    kim = desk.customer("kim")
    said = await kim.says("where is my order #W2611340?")
    short = await driver(desk).command("alice", "summary", said.thread)
    assert short.startswith("*Conversation with kim*: open, the bot drafts.")
    assert "No rolling summary yet" in short

    await desk.agent("alice").approve(await desk.card_for(said))
    await desk.settle()
    later = await kim.says("thanks! is it insured?", after=said)
    await desk.card_for(later)
    summary = await driver(desk).command("alice", "summary", said.thread)
    assert "No rolling summary yet" not in summary
    assert summary.splitlines()[1].startswith("• ")
