"""No card when no reply is needed (issue 19, point 4): "thanks!", "ok 👍", an emoji or "never
mind" leave no card for an agent to reject, decided by cheap rules before any model call or by
the model's ``no_reply_needed``; a question, an order id or an escalation word always gets a
draft, whatever the model says. Each such message is counted and listed in the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import metrics
from bot.cli_ops import EXIT_OK
from bot.core.no_reply import cheap_rule, must_draft
from bot.domain.states import ConversationStatus, DraftStatus
from bot.policy import Policy
from bot.ports import CardState
from bot.store import AuditEvent, Draft, sessionmaker
from bot.testing import Said, TestDesk
from tests.desks import CallTools, FakeKimi, Reply, SlackDriver, open_desk
from tests.fakes.discord import ALICE, BOT_ID, SUPPORT_CHANNEL_ID
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, block_actions, message
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, card_text, draft_id_of, until
from tests.processes import supportbot, with_discord


def no_reply_count(by: str) -> float:
    return metrics.REGISTRY.get_sample_value("supportbot_no_reply_total", {"by": by}) or 0.0


async def audit_kinds(desk: TestDesk) -> list[tuple[str, str]]:
    async with sessionmaker(desk.bot.engine)() as session:
        rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(r.kind, r.summary) for r in rows if r.kind == "no_reply"]


async def latest_draft(desk: TestDesk) -> Draft:
    async with sessionmaker(desk.bot.engine)() as session:
        draft = await session.scalar(select(Draft).order_by(Draft.created_at.desc()).limit(1))
        assert draft is not None
        return draft


async def answered(desk: TestDesk, kimi: FakeKimi) -> Said:
    """Kim asks about an order, the agent approves, the reply goes out."""
    kimi.script(Reply("Your order #W2611340 is on its way."))
    said = await desk.customer("kim").says("where is my order #W2611340")
    await desk.agent("agent").approve(await desk.card_for(said))
    await desk.reply_to(said)
    await desk.settle()
    return said


async def test_thanks_after_an_answer_leaves_no_card_and_no_model_call_and_is_counted(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        said = await answered(desk, kimi)
        calls, cards, before = len(kimi.completions), len(desk.cards), no_reply_count("rule")
        await desk.customer("kim").says("thanks!", after=said)
        await desk.settle()
        assert len(desk.cards) == cards, "no card for a thank-you"
        assert len(kimi.completions) == calls, "decided before any model call"
        assert len(desk.replies_to(said)) == 1, "nothing more is posted to the customer"
        assert no_reply_count("rule") == before + 1
        assert await audit_kinds(desk) == [("no_reply", "no reply needed (cheap rule: thanks)")]
        draft = await latest_draft(desk)
        assert draft.status == DraftStatus.SUPERSEDED and draft.notice.startswith("No reply needed")
        assert desk.bot.core is not None and desk.bot.core.metrics["drafts_no_reply"] == 1
        shown = await desk.latest(desk.cards[0], lambda c: c.conversation.status is ConversationStatus.RESOLVED)
        assert shown.state is CardState.SENT, "the answered card shows the conversation resolved"
        url = desk.bot.settings.database_url

    listed = await asyncio.to_thread(supportbot, tmp_path, "conversations", "--state", "no_reply", DATABASE_URL=url)
    assert listed.returncode == EXIT_OK, listed.stderr
    [row] = listed.stdout.splitlines()[1:]
    assert " no_reply " in row, "nothing vanishes: the conversation is listed as resolved by the customer"
    resolved = await asyncio.to_thread(supportbot, tmp_path, "conversations", "--status", "resolved", DATABASE_URL=url)
    assert resolved.stdout.splitlines()[1:] == [row], "resolved by the customer"
    trail = await asyncio.to_thread(supportbot, tmp_path, "audit", row.split()[0], DATABASE_URL=url)
    assert "no reply needed (cheap rule: thanks)" in trail.stdout, trail.stderr


@pytest.mark.parametrize("text", ["ok 👍", "🙏", "never mind, found it", "merci beaucoup"])
async def test_acknowledgements_and_emoji_leave_no_card(tmp_path: Path, kimi: FakeKimi, text: str) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        await desk.customer("kim").says(text)
        await desk.settle()
        assert desk.cards == [] and kimi.completions == []
        [(_, summary)] = await audit_kinds(desk)
        assert summary.startswith("no reply needed (cheap rule:")


async def test_nothing_written_after_an_answer_needs_no_reply_but_a_bare_mention_is_drafted(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        # A sticker alone after the answer (Discord leaves the text empty): no card.
        said = await answered(desk, kimi)
        cards = len(desk.cards)
        await desk.customer("kim").says("", after=said)
        await desk.settle()
        assert len(desk.cards) == cards
        assert await audit_kinds(desk) == [("no_reply", "no reply needed (cheap rule: nothing written)")]

        # A bare mention of the bot opening a conversation asks for attention: it is drafted.
        kimi.script(Reply("Hi Lee, how can I help?"))
        opened = await desk.customer("lee").says("")
        card = await desk.card_for(opened)
        assert card.draft_text == "Hi Lee, how can I help?"


@pytest.mark.parametrize(
    "text",
    ["thanks, but where is #40021?", "thanks! order 40021", "thanks, I want to talk to a human", "ok?"],
)
async def test_a_thank_you_with_a_question_an_order_or_an_escalation_gets_a_card(
    tmp_path: Path, kimi: FakeKimi, text: str
) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(Reply("Let me check that for you."))
        card = await desk.card_for(await desk.customer("kim").says(text))
        assert card.actionable and len(kimi.completions) >= 1
        assert await audit_kinds(desk) == []


async def test_thanks_right_after_an_unanswered_question_still_gets_a_card(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(Reply("It ships tomorrow."), Reply("It ships tomorrow."))
        first = await desk.customer("kim").says("when does my order ship")
        await desk.card_for(first)
        second = await desk.customer("kim").says("thanks", after=first)
        card = await desk.card_for(second)
        assert card.actionable, "the question before the thank-you still needs its answer"
        kimi.script(Reply("It ships tomorrow."))
        third = await desk.customer("kim").says("🙏", after=first)
        card = await desk.card_for(third)
        assert card.actionable, "and so it does two acknowledgements later"
        assert await audit_kinds(desk) == []


async def test_a_thank_you_in_three_messages_after_an_answer_leaves_no_card(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        said = await answered(desk, kimi)
        cards, calls = len(desk.cards), len(kimi.completions)
        await desk.customer("kim").says("thanks!", after=said)
        await desk.customer("kim").says("🙏", after=said)
        await desk.customer("kim").says("", after=said)  # and a sticker
        await desk.settle()
        assert len(desk.cards) == cards and len(kimi.completions) == calls
        assert len(desk.replies_to(said)) == 1


async def test_the_model_may_say_no_reply_is_needed(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(CallTools([("no_reply_needed", {"reason": "the customer is done"})]), Reply(""))
        before = no_reply_count("model")
        await desk.customer("kim").says("great, that's all")
        await desk.settle()
        assert desk.cards == [] and len(kimi.completions) == 2
        assert await audit_kinds(desk) == [("no_reply", "no reply needed (model: the customer is done)")]
        assert no_reply_count("model") == before + 1


async def test_the_model_saying_no_reply_on_a_question_is_overruled(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(CallTools([("no_reply_needed", {"reason": "nothing to say"})]), Reply("Checking it now."))
        card = await desk.card_for(await desk.customer("kim").says("great, and when does the chair arrive?"))
        assert card.state is CardState.AWAITING_REVIEW and card.actionable
        assert "drafted anyway: the message asks a question" in card.notice
        assert await audit_kinds(desk) == []


async def test_thanks_through_slack_leaves_no_card_and_no_reply(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    driver = SlackDriver(slack, kimi)
    async with open_desk(tmp_path, kimi, driver=driver) as desk:
        said = await answered(desk, kimi)
        cards = len(slack.messages_in(REVIEW_CHANNEL))
        adds = len(slack.calls_to("reactions.add"))
        await desk.customer("kim").says("thank you so much 🙏", after=said)
        await desk.settle()
        assert len(slack.messages_in(REVIEW_CHANNEL)) == cards, "no card in the review channel"
        assert len(desk.replies_to(said)) == 1
        assert len(slack.calls_to("reactions.add")) == adds, "no 'being reviewed' marker to clear"
        assert [s for _, s in await audit_kinds(desk)] == ["no reply needed (cheap rule: thanks)"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Thanks!!", "cheap rule: thanks"),
        ("danke schön", "cheap rule: thanks"),
        ("¡muchas gracias!", "cheap rule: thanks"),
        ("谢谢", "cheap rule: thanks"),
        (":+1:", "cheap rule: emoji"),
        ("👍👍", "cheap rule: emoji"),
        ("OK", "cheap rule: acknowledgement"),
        ("nvm", "cheap rule: never mind"),
        ("thanks, the chair is still broken", ""),
        ("ok but I am not happy", ""),
    ],
)
def test_the_cheap_rules_know_short_acknowledgements_in_several_languages(text: str, rule: str) -> None:
    assert cheap_rule(text, opening=True) == rule == cheap_rule(text, opening=False)


@pytest.mark.parametrize(
    ("text", "attachments", "why"),
    [
        ("thanks?", (), "the message asks a question"),
        ("gracias ¿y mi pedido", (), "the message asks a question"),
        ("thanks #W2611340", (), "the message names an order or id"),
        ("thanks, ORD-77", (), "the message names an order or id"),
        ("thanks, fraud", (), "the message has an escalation word"),
        ("🙏", ({"filename": "rug.jpg"},), "the message has an attachment"),
        ("thanks!", (), ""),
    ],
)
def test_a_question_an_order_an_escalation_word_or_an_attachment_always_gets_a_draft(
    text: str, attachments: tuple[object, ...], why: str
) -> None:
    assert must_draft(text, attachments=attachments, policy=Policy()) == why


ACKNOWLEDGEMENT = "Thanks! A person answers within the hour."


def customer_texts(home: Path, *texts: str) -> list[str]:
    """The customers' messages of the bot's SQLite file that say one of ``texts``."""
    with contextlib.closing(sqlite3.connect(home / "supportbot.db")) as db:
        rows = db.execute("SELECT text FROM messages WHERE role = 'customer'")
        return [text for (text,) in rows if text in texts]


def no_reply_lines(home: Path) -> list[str]:
    """The no-reply decisions in the audit trail of the bot's SQLite file (read while it runs)."""
    with contextlib.closing(sqlite3.connect(home / "supportbot.db")) as db:
        return [summary for (summary,) in db.execute("SELECT summary FROM audit_events WHERE kind = 'no_reply'")]


async def test_the_installed_bot_promises_and_drafts_nothing_for_thanks_and_stickers_through_a_kill_9(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "policy.toml").write_text(f'[desk]\nacknowledgement = "{ACKNOWLEDGEMENT}"\n')
    async with with_discord(tmp_path, kimi.base_url, slack) as (bot, discord):

        def in_thread(thread: str) -> list[str]:
            posts = discord.calls_to("POST", rf"/channels/{thread}/messages")
            return [str(c.json["content"]) for c in posts if isinstance(c.json, dict)]

        def slack_replies(ts: str) -> list[str]:
            return [
                str(c.params["text"])
                for c in slack.calls_to("chat.postMessage")
                if c.params.get("channel") == CUSTOMER_CHANNEL and c.params.get("thread_ts") == ts
            ]

        async def approve_next(before: int) -> None:
            [card] = await until(lambda: bot.cards()[before:], "the next card")
            click = block_actions("approve_draft", draft_id_of(card), user="U333", channel=REVIEW_CHANNEL)
            assert (await bot.sender.action(click)).status_code == 200

        # A question on each platform: acknowledged, drafted, approved, answered.
        kimi.script(Reply("Your mug ships today."))
        question = f"<@{BOT_ID}> where is my mug?"
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, question, mention_bot=True)
        thread = str(asked["id"])
        await approve_next(0)
        await until(lambda: len(in_thread(thread)) == 2 or None, "the acknowledgement and the answer on Discord")
        kimi.script(Reply("It ships today."))
        mention = app_mention("<@UBOT> when does my order ship?", user="U900")
        ts = str(mention["event"]["ts"])
        assert (await bot.sender.event(mention)).status_code == 200
        await approve_next(1)
        await until(lambda: len(slack_replies(ts)) == 2 or None, "the acknowledgement and the answer on Slack")
        [slack_card] = bot.cards()[1:]
        resolve = block_actions("resolve_conversation", draft_id_of(slack_card), user="U333", channel=REVIEW_CHANNEL)
        assert (await bot.sender.action(resolve)).status_code == 200

        # Thanks, then a sticker (Discord leaves the text empty); on Slack "thanks!" after Resolve.
        await discord.post_user_message(thread, ALICE, "thanks!")
        await discord.post_user_message(thread, ALICE, "")
        thanks = message("thanks!", user="U900", thread_ts=ts)
        assert (await bot.sender.event(thanks)).status_code == 200
        # Discord redelivers nothing a killed process had not taken: killed once all three are in.
        await until(lambda: len(customer_texts(tmp_path, "thanks!", "")) == 3 or None, "the three messages stored")
        await bot.kill9()
        await bot.start()
        decided = {"no reply needed (cheap rule: nothing written)", "no reply needed (cheap rule: thanks)"}
        await until(lambda: decided <= set(no_reply_lines(tmp_path)) or None, "the restarted bot's decisions")

        # The proof nothing else came of them: Alice's real question is the next card, and only
        # it (the conversation her sticker closed opens again, so it is acknowledged).
        kimi.script(Reply("The second mug ships tomorrow."))
        await discord.post_user_message(thread, ALICE, "and when does the second mug ship?")
        [card] = await until(lambda: bot.cards()[2:], "the card for Alice's next question")
        assert "second mug" in card_text(card)
        await until(lambda: len(in_thread(thread)) == 3 or None, "the acknowledgement of the reopening")
        assert in_thread(thread) == [ACKNOWLEDGEMENT, "Your mug ships today.", ACKNOWLEDGEMENT]
        assert slack_replies(ts) == [ACKNOWLEDGEMENT, "It ships today."], "no promise for a thank-you"
        assert len(bot.cards()) == 3
