"""Issue 19's rules on the test desk (the real core, in memory): who is speaking decides what a
message does, and the conversation's life shows on its card (ReviewCard.conversation)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.states import ConversationOwner, ConversationStatus
from bot.events import DecisionAction
from bot.ports import CardState
from bot.testing import TestDesk
from tests.desks import open_desk
from tests.fakes.kimi import FakeKimi

POLICY = '[approvers]\nagents = ["alice"]\n'


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    """The conversation rules' desk, on SQLite and on PostgreSQL."""
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as opened:
        yield opened


async def test_an_agent_answering_by_hand_retires_the_draft_and_the_bot_waits_for_hand_back(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kim, alice = desk.customer("kim"), desk.customer("alice")
    said = await kim.says("where is my order #W2611340?")
    card = await desk.card_for(said)
    assert card.conversation.actions == (DecisionAction.TAKE_OVER, DecisionAction.CLAIM, DecisionAction.RESOLVE)

    await alice.says("Hi Kim, it ships tomorrow.", after=said)
    retired = await desk.latest(card, lambda c: c.state is CardState.SUPERSEDED)
    assert retired.notice == "Answered by hand by alice; nothing was sent."
    life = retired.conversation
    assert (life.owner, life.assignee, life.status) == (
        ConversationOwner.HUMAN,
        "alice",
        ConversationStatus.WAITING_ON_CUSTOMER,
    )
    assert life.actions[0] is DecisionAction.HAND_BACK

    drafted = len(kimi.completions)
    await kim.says("thanks! can I still change the address?", after=said)
    shown = await desk.latest(card, lambda c: c.conversation.customer_wrote != "")
    assert shown.conversation.customer_wrote == "thanks! can I still change the address?"
    await desk.settle()
    assert len(desk.cards) == 1 and len(kimi.completions) == drafted

    assert await desk.agent("kim").hand_back(card) == "You are not on the policy's approver list for drafts."
    assert (await desk.latest(card)).conversation.owner is ConversationOwner.HUMAN, "only agents decide"
    told = await desk.agent("alice").hand_back(card)
    assert told == "Handed back: the bot drafts the answer to the customer's last message."
    fresh = await desk.card(1)
    assert fresh.customer_text == "thanks! can I still change the address?"
    assert fresh.conversation.owner is ConversationOwner.BOT
    assert "Hi Kim, it ships tomorrow." in json.dumps(kimi.completions[drafted]["messages"])


async def test_someone_else_is_context_and_claim_resolve_reopen_show_on_the_card(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kim = desk.customer("kim")
    said = await kim.says("where is my order #W2611340?")
    card = await desk.card_for(said)

    other = await desk.customer("bo").says("same problem here", after=said)
    assert other.taken
    await desk.settle()
    assert len(desk.cards) == 1 and (await desk.latest(card)).state is CardState.AWAITING_REVIEW

    assert await desk.agent("alice").claim(card) == "Claimed: the conversation is assigned to you."
    assert (await desk.latest(card, lambda c: c.conversation.assignee == "alice")).actionable
    assert await desk.agent("alice").resolve(card) == "Resolved; the customer writing again reopens it."
    resolved = await desk.latest(card, lambda c: c.conversation.status is ConversationStatus.RESOLVED)
    assert resolved.conversation.actions == ()
    assert await desk.agent("alice").resolve(card) == "This conversation is already resolved."

    reopened = await desk.card_for(await kim.says("it still has not arrived", after=said))
    assert reopened.conversation.status is ConversationStatus.OPEN and reopened.conversation.assignee == "alice"
    assert "same problem here" in json.dumps(kimi.completions[-1]["messages"])


# Everything about one conversation at the same instant: the customer writing again, an agent
# clicking on its card, its draft being finished. On PostgreSQL these are concurrent transactions on
# the same rows; each takes the conversation's row before its drafts, so they queue instead of
# deadlocking (PostgreSQL would abort one: a message refused, a click answered with an error, a
# draft failed with "internal error"). On SQLite they take turns at the one writer.


async def test_a_customer_writing_while_agents_click_on_their_card_every_message_and_click_lands(
    desk: TestDesk,
) -> None:
    alice = desk.agent("alice")
    for n in range(6):
        kim = desk.customer(f"kim{n}")
        said = await kim.says("where is my order #W2611340?")
        card = await desk.card_for(said)
        # A database error would raise here: the message not taken, the click not recorded.
        told = await asyncio.gather(
            alice.approve(card),
            kim.says("also, any news?", after=said),
            alice.claim(card),
            kim.says("hello?", after=said),
            alice.take_over(card),
        )
        approved, claimed, taken = told[0], told[2], told[4]
        assert approved in ("Approved; the reply is on its way.", "This draft was already superseded.")
        assert "assigned to you" in claimed
        assert "answer this conversation" in taken
    await desk.settle()
    for shown in desk.cards:
        assert shown.state is not CardState.FAILED, shown.notice


async def test_a_customer_writing_while_their_draft_is_finished_never_fails_the_draft(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kimi.latency = 0.02  # drafts finish while the follow-ups arrive

    async def customer(n: int) -> None:
        kim = desk.customer(f"kim{n}")
        said = await kim.says("where is my order #W2611340?")
        for _ in range(5):
            await kim.says("any news?", after=said)

    await asyncio.gather(*(customer(n) for n in range(20)))
    await desk.settle()
    assert desk.cards
    for shown in desk.cards:
        assert shown.state is not CardState.FAILED, shown.notice
