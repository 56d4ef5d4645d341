"""Customer feedback (issue 21 point 4): with ``[feedback] after_reply``, a delivered reply
carries 👍 / 👎 whose click only its customer may make (an agent or outsider is refused
politely), kept with the draft once per customer (a second click changes the vote), across a
restart; an agent's Resolve asks the policy's CSAT question once, through the outbox, and the
bot's own resolution of a "thanks!" never does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.slack import cards
from bot.app import Supportbot
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
from tests.fakes.discord import AGENT_ROLE_ID, ALICE, BOB, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord, FakeUser
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import block_actions
from tests.harness import CUSTOMER_CHANNEL, draft_id_of, running_bot
from tests.test_discord_flow import bot_messages, discord_only

FEEDBACK = "[feedback]\nafter_reply = true\n"
CAROL = FakeUser("1400000000000000009", "carol", "Carol")  # another member of the server: an outsider
CSAT = '[feedback]\ncsat_question = "How did we do? Answer 1 (poor) to 5 (great)."\n'


async def answered(desk: TestDesk, kimi: FakeKimi) -> tuple[Said, str]:
    """Kim asks, the agent approves, the reply goes out; the draft id of that reply."""
    kimi.script(Reply("Your order #W2611340 is on its way."))
    said = await desk.customer("kim").says("where is my order #W2611340")
    card = await desk.card_for(said)
    await desk.agent("agent").approve(card)
    await desk.reply_to(said)
    await desk.settle()
    return said, card.draft_id


async def rate(desk: TestDesk, draft_id: str, vote: Vote, author: Author) -> DecisionOutcome:
    """A click on the reply's button, as an adapter hands it to the core."""
    assert desk.bot.core is not None
    return await desk.bot.core.rate(FeedbackClick(draft_id, vote, author))


async def counts(desk: TestDesk) -> list[FeedbackCount]:
    return await counts_in(desk.bot)


async def counts_in(bot: Supportbot) -> list[FeedbackCount]:
    now = datetime.now(UTC)
    async with bot.engine.connect() as conn:
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


async def test_a_click_on_a_reply_the_platform_shows_before_it_answers_the_post_is_counted(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=FEEDBACK) as desk:
        kimi.script(Reply("Your order #W2611340 is on its way."))
        said = await desk.customer("kim").says("where is my order #W2611340")
        card = await desk.card_for(said)
        desk.board.post_answered.clear()
        await desk.agent("agent").approve(card)
        await desk.reply_to(said)  # on the customer's screen, the bot still waiting for the platform

        assert await rate(desk, card.draft_id, Vote.UP, Author("kim")) == DecisionOutcome(True, THANKS)
        desk.board.post_answered.set()
        await desk.settle()
        assert [(c.up, c.down) for c in await counts(desk)] == [(1, 0)]


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
        assert await desk.agent("agent").resolve(card) == "Resolved; the customer writing again reopens it."
        asked = await until(lambda: desk.replies_to(said)[1:], "the CSAT question")
        assert asked == ["How did we do? Answer 1 (poor) to 5 (great)."]
        assert await desk.agent("agent").resolve(card) == "This conversation is already resolved."

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


async def test_slack_a_reply_carries_feedback_buttons_and_only_the_customers_signed_click_counts(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = '[approvers]\nagents = ["U333"]\n\n' + FEEDBACK
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        envelope = await harness.mention("where is my order #W2611340?")  # from the customer U222
        thread_ts = envelope["event"]["ts"]
        [card] = await harness.wait_cards(1)
        draft_id = draft_id_of(card)
        await harness.click("approve_draft", draft_id)
        [reply] = await harness.wait_replies(thread_ts)
        blocks = reply.params["blocks"]
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        [actions] = [b for b in blocks if b["type"] == "context_actions"]
        [buttons] = actions["elements"]
        assert buttons["type"] == "feedback_buttons"
        assert (buttons["positive_button"]["value"], buttons["negative_button"]["value"]) == (
            f"up:{draft_id}",
            f"down:{draft_id}",
        )

        async def click(user: str, value: str) -> None:
            payload = block_actions(
                cards.FEEDBACK, value, user=user, channel=CUSTOMER_CHANNEL, thread_ts=thread_ts, block_id="fb"
            )
            payload["actions"][0]["type"] = "feedback_buttons"  # as Slack sends a feedback_buttons click
            response = await harness.sender.action(payload)
            assert response.status_code == 200, response.text

        approved = len(harness.ephemerals("U333"))  # "Approved; the reply is on its way."
        await click("U333", f"down:{draft_id}")
        assert await until(lambda: harness.ephemerals("U333")[approved:], "the agent told") == [AGENTS_DO_NOT_RATE]
        await click("U222", f"down:{draft_id}")
        await click("U222", f"up:{draft_id}")
        assert await until(lambda: harness.ephemerals("U222")[1:], "the second vote answered") == [THANKS]
        [told] = [c for c in slack.calls_to("chat.postEphemeral") if c.params.get("user") == "U222"][:1]
        assert told.params["channel"] == CUSTOMER_CHANNEL, "the customer is answered where they clicked"
        async with harness.bot.engine.connect() as conn:
            assert await feedback_rows.vote_of(conn, draft_id, "U222") is Vote.UP
            assert await feedback_rows.vote_of(conn, draft_id, "U333") is None


def button_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def test_discord_a_reply_carries_buttons_and_only_the_askers_click_through_the_gateway_counts(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    (tmp_path / "policy.toml").write_text(f'[approvers]\nagents = ["{AGENT_ROLE_ID}"]\n\n{FEEDBACK}')
    bot = Supportbot(discord_only(tmp_path, kimi, discord))
    await bot.start()
    try:
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "where is order 40021?", mention_bot=True)
        [card] = await until(
            lambda: [m for m in bot_messages(discord, REVIEW_CHANNEL_ID) if m.get("components")], "a card"
        )
        approve = next(
            c["custom_id"] for row in card["components"] for c in row["components"] if ":approve:" in c["custom_id"]
        )
        draft_id = approve.rsplit(":", 1)[1]
        await discord.wait_for_response(await discord.click(card["id"], approve, BOB))
        [reply] = await until(lambda: bot_messages(discord, asked["id"]), "the reply")
        up, down = f"supportbot:rate-up:{draft_id}", f"supportbot:rate-down:{draft_id}"
        assert button_ids(reply) == [up, down], "the reply carries 👍 / 👎 for its draft"

        async def told(user: FakeUser, custom_id: str) -> list[str]:
            click = await discord.click(reply["id"], custom_id, user)
            return [f["content"] for f in await until(lambda: click.followups, f"{user.username} answered")]

        assert await told(BOB, down) == [AGENTS_DO_NOT_RATE]
        assert await told(CAROL, down) == [ONLY_THE_ASKER]
        assert await told(ALICE, down) == [THANKS]
        assert await told(ALICE, up) == [THANKS]
        async with bot.engine.connect() as conn:
            assert await feedback_rows.vote_of(conn, draft_id, ALICE.id) is Vote.UP
        assert [(c.up, c.down) for c in await counts_in(bot)] == [(1, 0)], "one vote per customer, changed"
    finally:
        await bot.stop()
