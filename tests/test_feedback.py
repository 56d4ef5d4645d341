"""Customer feedback (issue 21 point 4): with ``[feedback] after_reply``, a delivered reply
carries 👍 / 👎 whose click only its customer may make (an agent or outsider is refused
politely), kept with the draft once per customer (a second click changes the vote), across a
restart; an agent's Resolve asks the policy's CSAT question once, through the outbox, and the
bot's own resolution of a "thanks!" never does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.feedback import AGENTS_DO_NOT_RATE, ONLY_THE_ASKER, THANKS
from bot.domain.states import ConversationStatus, OutboxKind
from bot.errors import PolicyError
from bot.events import Author, FeedbackClick, Vote
from bot.policy import FeedbackSection, parse_policy
from bot.ports import DecisionOutcome
from bot.store import OutboxItem
from bot.store import feedback as feedback_rows
from bot.store.feedback import FeedbackCount
from bot.testing import Said, TestDesk, until
from tests.desks import FakeKimi, Reply, open_desk

FEEDBACK = "[feedback]\nafter_reply = true\n"
CSAT = '[feedback]\ncsat_question = "How did we do? Answer 1 (poor) to 5 (great)."\n'


async def answered(desk: TestDesk, kimi: FakeKimi) -> tuple[Said, str]:
    """Kim asks, the agent approves, the reply goes out; the draft id of that reply."""
    kimi.script(Reply("Your order #W2611340 is on its way."))
    said = await desk.customer("kim").says("where is my order #W2611340")
    card = await desk.card_for(said)
    await desk.approve(card, as_="agent")
    await desk.reply_to(said)
    await desk.settle()
    return said, card.draft_id


async def rate(desk: TestDesk, draft_id: str, vote: Vote, author: Author) -> DecisionOutcome:
    """A click on the reply's button, as an adapter hands it to the core."""
    assert desk.bot.core is not None
    return await desk.bot.core.rate(FeedbackClick(draft_id, vote, author))


async def counts(desk: TestDesk) -> list[FeedbackCount]:
    now = datetime.now(UTC)
    async with desk.bot.engine.connect() as conn:
        return await feedback_rows.counts(conn, now - timedelta(days=1), now + timedelta(minutes=1))


async def test_only_the_customer_rates_a_reply_and_a_second_click_changes_the_vote_across_a_restart(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=FEEDBACK) as desk:
        _said, draft_id = await answered(desk, kimi)
        [reply] = desk.board.replies
        assert reply.feedback_for == draft_id, "the delivered reply carries the buttons for its draft"

        agent = await rate(desk, draft_id, Vote.DOWN, Author("agent", review_member=True))
        outsider = await rate(desk, draft_id, Vote.DOWN, Author("bob", "Bob"))
        program = await rate(desk, draft_id, Vote.DOWN, Author("B-OTHER", is_bot=True))
        assert (agent, outsider, program) == (
            DecisionOutcome(False, AGENTS_DO_NOT_RATE),
            DecisionOutcome(False, ONLY_THE_ASKER),
            DecisionOutcome(False, ""),
        )
        assert await counts(desk) == [], "nobody but the customer is counted"

        assert await rate(desk, draft_id, Vote.UP, Author("kim")) == DecisionOutcome(True, THANKS)
        assert await rate(desk, draft_id, Vote.DOWN, Author("kim")) == DecisionOutcome(True, THANKS)
        assert await counts(desk) == [FeedbackCount(draft_id, "agent", "agent", "kimi-k2.5", 0, 1)]

    async with open_desk(tmp_path, kimi, policy=FEEDBACK) as desk:
        assert await rate(desk, draft_id, Vote.UP, Author("kim")) == DecisionOutcome(True, THANKS)
        assert await counts(desk) == [FeedbackCount(draft_id, "agent", "agent", "kimi-k2.5", 1, 0)], (
            "after a restart the vote is still one, changed"
        )


async def test_without_the_policy_a_reply_has_no_buttons(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        await answered(desk, kimi)
        assert [r.feedback_for for r in desk.board.replies] == [""]


async def test_an_agents_resolve_asks_the_csat_question_once_and_a_thanks_the_bot_resolved_never(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=CSAT) as desk:
        said, _ = await answered(desk, kimi)
        card = desk.cards[0]
        assert await desk.resolve(card, as_="agent") == "Resolved; the customer writing again reopens it."
        asked = await until(lambda: desk.replies_to(said)[1:], "the CSAT question")
        assert asked == ["How did we do? Answer 1 (poor) to 5 (great)."]
        assert await desk.resolve(card, as_="agent") == "This conversation is already resolved."

        other, _ = await answered(desk, kimi)
        await desk.customer("kim").says("thanks!", after=other)
        await desk.latest(desk.cards[-1], lambda c: c.conversation.status is ConversationStatus.RESOLVED)
        await desk.settle()
        async with desk.bot.engine.connect() as conn:
            kinds = (await conn.scalars(select(OutboxItem.kind).order_by(OutboxItem.id))).all()
        assert kinds == [OutboxKind.REPLY, OutboxKind.CSAT, OutboxKind.REPLY], "no question after the bot's own resolve"
        assert desk.replies_to(said)[1:] == asked, "asked once"
        assert len(desk.replies_to(other)) == 1, "the thanks got nothing more"


def test_the_feedback_section_is_checked_at_load() -> None:
    assert parse_policy("", "policy.toml").feedback == FeedbackSection(after_reply=False, csat_question="")
    with pytest.raises(PolicyError) as caught:
        parse_policy('[feedback]\nafter_reply = "maybe"\ncsat_question = "   "\nask = true\n', "policy.toml")
    assert caught.value.problems == [
        "line 2: feedback.after_reply: Input should be a valid boolean, unable to interpret input",
        "line 3: feedback.csat_question: must be empty (no question) or a question, not only spaces",
        "line 4: feedback.ask: unknown field",
    ]
