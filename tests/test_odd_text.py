"""Odd text is stored, drafted, shown and sent, never a failed ack: a NUL character (PostgreSQL
refuses it in text) or a lone surrogate (JSON's ``\\ud800`` with no pair, which UTF-8 cannot
encode), whether a customer, an agent or the model wrote it. Before, such a message was
answered 500 on every delivery: Slack gave up after its retries and the question was never seen.
Scenarios on the test desk, on SQLite and PostgreSQL, and the installed ``supportbot run`` taking
such text from Slack and Discord at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.events import Attachment
from bot.ports import CardState
from bot.testing import TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.fakes.discord import ALICE, BOT_ID, SUPPORT_CHANNEL_ID
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, block_actions
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, card_text, draft_id_of, sample_orders, until
from tests.processes import with_discord

#: What is left of "\x00" and a lone surrogate: the NUL is dropped, the surrogate is U+FFFD.
ODD, SHOWN = "\x00 and \ud800", " and \ufffd"


@pytest.fixture
async def shop(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, database_url=database_url) as desk:
        kim = desk.account("kim")  # Kim's account is linked to order #W2611340
        await desk.import_orders(
            [
                dict(r, customer_id="C-1", customer_accounts=kim) if r["order_id"] == "#W2611340" else r
                for r in sample_orders()
            ]
        )
        yield desk


async def test_a_customers_odd_message_name_and_file_are_drafted_and_answered(shop: TestDesk) -> None:
    kim = shop.customer("kim", display_name=f"Kim{ODD}")
    notes = Attachment(filename=f"notes{ODD}.txt", content_type="text/plain", size=12, url="")
    said = await kim.says(f"where is my order #W2611340?{ODD}", attachments=(notes,))

    card = await shop.card_for(said)
    assert card.customer_text.endswith(f"where is my order #W2611340?{SHOWN}")
    assert "1Z999AA10123456784" in card.draft_text
    await shop.agent("agent").approve(card)
    assert "1Z999AA10123456784" in await shop.reply_to(said)


async def test_a_model_reply_with_a_nul_is_shown_and_sent_without_it(shop: TestDesk, kimi: FakeKimi) -> None:
    kimi.script(Reply("Your order is on\x00 its way."))  # "\u0000" in Kimi's JSON
    said = await shop.customer("kim").says("where is my order #W2611340?")

    card = await shop.card_for(said)
    assert card.draft_text == "Your order is on its way."
    await shop.agent("agent").approve(card)
    assert await shop.reply_to(said) == "Your order is on its way."


async def test_an_agents_odd_edit_is_sent_as_written_less_what_cannot_be_stored(shop: TestDesk) -> None:
    said = await shop.customer("kim").says("where is my order #W2611340?")
    card = await shop.card_for(said)

    await shop.agent("agent").edit(card, f"It ships tomorrow.{ODD}")
    assert await shop.reply_to(said) == f"It ships tomorrow.{SHOWN}"
    sent = await shop.latest(card, until=lambda c: c.state is CardState.SENT)
    assert not sent.actionable


async def test_the_installed_bot_takes_odd_text_from_slack_and_discord_and_answers_both(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with with_discord(tmp_path, kimi.base_url, slack) as (bot, discord):
        mention = app_mention(f"<@UBOT> is the shop open on Sunday?{ODD}", user="U900")
        assert (await bot.sender.event(mention)).status_code == 200
        text = f"<@{BOT_ID}> is the shop open on Saturday?{ODD}"
        await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, text, mention_bot=True)

        cards = await until(lambda: bot.cards()[1:] and bot.cards(), "a card for each platform's message")
        shown = [card_text(c) for c in cards]
        assert all(SHOWN in t and "\\u0000" not in t for t in shown), shown
        for card in cards:
            click = block_actions("approve_draft", draft_id_of(card), user="U333", channel=REVIEW_CHANNEL)
            assert (await bot.sender.action(click)).status_code == 200
        await until(
            lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == CUSTOMER_CHANNEL],
            "the Slack reply",
        )
        await until(
            lambda: [c for c in discord.calls_to("POST", r"/channels/\d+/messages$")
                     if c.path.split("/")[-2] != SUPPORT_CHANNEL_ID],
            "the Discord reply",
        )  # fmt: skip
    log = bot.stderr_path.read_text()
    assert " ERROR " not in log, log


async def test_a_name_and_a_file_name_longer_than_their_columns_are_cut_not_refused(shop: TestDesk) -> None:
    # PostgreSQL refuses a VARCHAR(255) value of 400 characters; SQLite would have taken it.
    name = "Kim " + "the Magnificent " * 25
    kim = shop.customer("kim", display_name=name)
    notes = Attachment(filename="n" * 600 + ".txt", content_type="text/plain", size=12, url="")
    said = await kim.says("where is my order #W2611340?", attachments=(notes,))

    card = await shop.card_for(said)
    assert name[:100] in card.asked_by and "\u2026" in card.asked_by
    [listed] = card.attachments
    assert "n" * 200 in listed
    await shop.agent("agent").approve(card)
    assert "1Z999AA10123456784" in await shop.reply_to(said)


async def test_a_tool_the_model_made_up_with_a_long_name_is_a_failed_lookup_not_a_failed_draft(
    shop: TestDesk, kimi: FakeKimi
) -> None:
    made_up = "get_order_status_" + "x" * 100
    kimi.script(CallTools([(made_up, {"order_id": "#W2611340"})]), Reply("Let me check that for you."))
    said = await shop.customer("kim").says("where is my order #W2611340?")

    card = await shop.card_for(said)
    assert card.failure == "" and card.draft_text == "Let me check that for you."
    [lookup] = card.lookups
    assert not lookup.ok and len(lookup.name) == 64 and lookup.name == made_up[:63] + "\u2026"
    # Redrawn from what was stored once approved, the card names the tool the same way.
    await shop.agent("agent").approve(card)
    await shop.reply_to(said)
    sent = await shop.latest(card, until=lambda version: version.state is CardState.SENT)
    assert sent.lookups == card.lookups
