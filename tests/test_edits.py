"""Issue 19, point 5: a customer edits or deletes a message. One card and one answer per
message: an edit before approval supersedes the pending draft with one fresh draft from the new
text; an edit after the answer was sent drafts nothing; a deletion retires the pending draft and
nothing is sent. The real bot over HTTP, signed Slack requests, fake Slack and Kimi."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import TextClause, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.app import Supportbot
from bot.store import AuditEvent, Conversation, Draft, Message, sessionmaker, utcnow
from tests.fakes.discord import ALICE, BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.discord_world import GUILD_ID
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import (
    app_mention,
    block_actions,
    message,
    message_changed,
    message_deleted,
    message_tombstoned,
    next_event_id,
)
from tests.harness import (
    CUSTOMER_CHANNEL,
    REVIEW_CHANNEL,
    Harness,
    card_text,
    draft_id_of,
    running_bot,
    running_instances,
    undelivered_mention,
    until,
    wait_until,
)
from tests.processes import with_discord
from tests.test_discord_flow import bot_messages, discord_only


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def edit_mention(harness: Harness, ts: str, text: str, before: str) -> None:
    """What Slack sends when the author edits a message that mentions the app: a
    ``message_changed`` event, and the ``app_mention`` again (same ts, new event id, ``edited``)."""
    for envelope in (
        message_changed(CUSTOMER_CHANNEL, ts, f"<@UBOT> {text}", f"<@UBOT> {before}"),
        app_mention(f"<@UBOT> {text}", ts=ts, edited=True),
    ):
        assert (await harness.sender.event(envelope)).status_code == 200


async def only_a_later_question_gets_a_card(harness: Harness, cards_before: int) -> None:
    """The proof what came before did nothing: a genuine question in another thread (so nothing
    of the first one is superseded) gets the next card, and only it."""
    await harness.mention("do you ship to Norway?")
    cards = await harness.wait_cards(cards_before + 1)
    assert "Norway" in card_text(cards[-1])
    await harness.settle()
    assert len(harness.cards()) == cards_before + 1


async def test_an_edited_mention_before_approval_is_answered_once_from_the_new_text(harness: Harness) -> None:
    asked = await harness.mention("is the shop open on Sunday?")
    ts = asked["event"]["ts"]
    [first] = await harness.wait_cards(1)
    assert "Sunday" in card_text(first)

    await edit_mention(harness, ts, "is the shop open on Saturday?", "is the shop open on Sunday?")

    # The first card says why it is superseded; one new card drafts from the edited text.
    cards = await harness.wait_cards(2)
    old = await harness.wait_card_update(draft_id_of(first), "customer edited their message")
    assert "approve_draft" not in card_text(old)
    assert "Saturday" in card_text(cards[1])
    await harness.settle()
    assert len(harness.cards()) == 2, "one new card, not one per edit event"

    # Approving the new draft sends exactly one answer, about the edited question.
    await harness.click("approve_draft", draft_id_of(cards[1]))
    [reply] = await harness.wait_replies(ts)
    assert "Saturday" in reply.params["text"] and "Sunday" not in reply.params["text"]
    await harness.click("approve_draft", draft_id_of(first), user="U444")
    await wait_until(lambda: [t for t in harness.ephemerals("U444") if "already superseded" in t])
    await harness.settle()
    assert len(harness.replies(ts)) == 1

    # The conversation holds the edited text; the audit trail keeps the original.
    async with sessionmaker(harness.bot.engine)() as session:
        texts = list(await session.scalars(select(Message.text).where(Message.role == "customer")))
        edits = list(await session.scalars(select(AuditEvent).where(AuditEvent.kind == "message_edited")))
    assert texts == ["is the shop open on Saturday?"]
    assert [e.detail["original"] for e in edits] == ["is the shop open on Sunday?"]


async def test_an_edit_that_arrives_before_its_message_is_answered_from_the_edited_text(harness: Harness) -> None:
    # The mention's delivery failed (the bot was starting, say): Slack retries it a minute later.
    # Meanwhile the customer edits it, and the edit arrives first.
    original, ts = undelivered_mention(harness.slack, "<@UBOT> is the shop open on Sunday?")
    await edit_mention(harness, ts, "is the shop open on Saturday?", "is the shop open on Sunday?")
    assert (await harness.sender.event(original, retry_num=1)).status_code == 200

    [card] = await harness.wait_cards(1)
    assert "Saturday" in card_text(card) and "Sunday" not in card_text(card)
    await harness.click("approve_draft", draft_id_of(card))
    [reply] = await harness.wait_replies(ts)
    assert "Saturday" in str(reply.params["text"])
    await harness.settle()
    assert len(harness.cards()) == 1, "the late original drafted nothing"
    assert len(harness.replies(ts)) == 1


async def test_a_message_deleted_before_its_delivery_came_is_never_drafted(harness: Harness) -> None:
    # The mention's delivery failed, and so did its edit's; before Slack's retries, the customer
    # deleted it (a card number pasted by mistake, say). The retries must not bring it back.
    original, ts = undelivered_mention(harness.slack, "<@UBOT> my card is 4111 1111 1111 1111, where is my order?")
    edited = app_mention("<@UBOT> my card is 4111 1111 1111 1112, where is my order?", ts=ts, edited=True)
    deleted = message_deleted(CUSTOMER_CHANNEL, ts, previous_text=edited["event"]["text"])
    assert (await harness.sender.event(deleted)).status_code == 200
    for retried in (edited, original):
        assert (await harness.sender.event(retried, retry_num=1)).status_code == 200

    await only_a_later_question_gets_a_card(harness, 0)
    async with sessionmaker(harness.bot.engine)() as session:
        stored = list(await session.scalars(select(Message.text)))
    assert not [text for text in stored if "4111" in text], "the deleted words were never stored"


async def test_an_edited_channel_message_that_never_mentioned_the_bot_opens_nothing(harness: Harness) -> None:
    # Only a mention (or a direct message) stands for itself when its edit comes first.
    edited = message_changed(
        CUSTOMER_CHANNEL, "1600000000.000100", "where is my order #W2611340?", "where is my order?", user="U999"
    )
    assert (await harness.sender.event(edited)).status_code == 200

    await only_a_later_question_gets_a_card(harness, 0)


async def test_a_card_posted_just_before_a_crash_and_superseded_meanwhile_is_found_and_says_so(
    harness: Harness,
) -> None:
    asked = await harness.mention("is the shop open on Sunday?")
    ts = asked["event"]["ts"]
    [first] = await harness.wait_cards(1)
    await harness.settle()
    # The worker died after Slack took the card and before the row recorded it; its lease runs a
    # moment longer. Meanwhile the customer edits the question: the draft is superseded.
    dying = {"lease_owner": "a-worker-that-died", "lease_until": utcnow() + timedelta(seconds=1)}
    async with sessionmaker(harness.bot.engine).begin() as session:
        await session.execute(
            update(Draft).where(Draft.id == draft_id_of(first)).values(card_ref="", card_desk="", **dying)
        )
    await edit_mention(harness, ts, "is the shop open on Saturday?", "is the shop open on Sunday?")

    # Once the dead worker's lease is out, the card on the desk is found and says what happened:
    # nobody is offered Approve on the Sunday answer.
    old = await harness.wait_card_update(draft_id_of(first), "customer edited their message")
    assert "approve_draft" not in card_text(old)
    cards = await harness.wait_cards(2)
    assert "Saturday" in card_text(cards[1])
    await harness.settle()
    assert len(harness.cards()) == 2, "the lost card was found, not posted again"
    async with sessionmaker(harness.bot.engine)() as session:
        draft = await session.get(Draft, draft_id_of(first))
    assert draft is not None and draft.card_ref == f"{first.response['channel']}:{first.response['ts']}"
    assert draft.lease_owner == ""


async def test_an_edit_after_the_answer_was_sent_drafts_nothing(harness: Harness) -> None:
    asked = await harness.mention("is the shop open on Sunday?")
    ts = asked["event"]["ts"]
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(ts)
    await harness.wait_card_update(draft_id_of(card), "sent to the customer")

    await edit_mention(harness, ts, "is the shop open on Saturday?", "is the shop open on Sunday?")
    await only_a_later_question_gets_a_card(harness, 1)
    assert len(harness.replies(ts)) == 1, "the edit sent nothing"
    assert not [c for c in harness.card_updates(draft_id_of(card)) if "edited" in card_text(c)]


async def test_a_message_with_a_nul_sent_again_unchanged_drafts_nothing_new(harness: Harness) -> None:
    # The NUL is dropped when the message is stored; the same text again is no edit.
    asked = await harness.mention("is the shop open on Sunday?\x00")
    ts = asked["event"]["ts"]
    [card] = await harness.wait_cards(1)
    await edit_mention(harness, ts, "is the shop open on Sunday?\x00", "is the shop open on Sunday?\x00")

    await only_a_later_question_gets_a_card(harness, 1)
    assert not [c for c in harness.card_updates(draft_id_of(card)) if "edited" in card_text(c)]


async def test_a_deleted_message_retires_its_pending_draft_and_nothing_is_sent(harness: Harness) -> None:
    asked = await harness.mention("where is my order #W2611340?")
    ts = asked["event"]["ts"]
    [card] = await harness.wait_cards(1)

    deleted = message_deleted(CUSTOMER_CHANNEL, ts, previous_text="<@UBOT> where is my order #W2611340?")
    assert (await harness.sender.event(deleted)).status_code == 200
    retired = await harness.wait_card_update(draft_id_of(card), "customer deleted their message")
    assert "approve_draft" not in card_text(retired)

    # A click on the old card (a stale view) sends nothing either.
    await harness.click("approve_draft", draft_id_of(card))
    await wait_until(lambda: [t for t in harness.ephemerals() if "already superseded" in t])
    await harness.settle()
    assert not harness.replies(ts)
    assert len(harness.cards()) == 1


async def test_a_follow_up_edited_or_deleted_in_the_thread(harness: Harness) -> None:
    asked = await harness.mention("where is my order #W2611340?")
    ts = asked["event"]["ts"]
    await harness.wait_cards(1)
    follow = await harness.reply_in_thread("also, can I change the address?", ts)
    follow_ts = follow["event"]["ts"]
    cards = await harness.wait_cards(2)

    # Editing the follow-up redrafts it; deleting it then retires that draft.
    edited = message_changed(
        CUSTOMER_CHANNEL,
        follow_ts,
        "also, can I change the delivery day?",
        "also, can I change the address?",
        thread_ts=ts,
    )
    assert (await harness.sender.event(edited)).status_code == 200
    cards = await harness.wait_cards(3)
    assert "delivery day" in card_text(cards[2])
    await harness.wait_card_update(draft_id_of(cards[1]), "customer edited their message")

    gone = message_deleted(CUSTOMER_CHANNEL, follow_ts, "also, can I change the delivery day?", thread_ts=ts)
    assert (await harness.sender.event(gone)).status_code == 200
    await harness.wait_card_update(draft_id_of(cards[2]), "customer deleted their message")
    await harness.settle()
    assert len(harness.cards()) == 3 and not harness.replies(ts)


async def test_a_deleted_first_message_with_replies_redrafts_the_pending_follow_up_without_it(
    harness: Harness,
) -> None:
    asked = await harness.mention("my order #W2611340 is late")
    ts = asked["event"]["ts"]
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(ts)
    await harness.reply_in_thread("and can I change the address?", ts)
    cards = await harness.wait_cards(2)

    # Slack leaves a tombstone for a thread's first message deleted while it has replies.
    gone = message_tombstoned(CUSTOMER_CHANNEL, ts, "<@UBOT> my order #W2611340 is late")
    assert (await harness.sender.event(gone)).status_code == 200
    await harness.wait_card_update(draft_id_of(cards[1]), "customer deleted an earlier message")
    cards = await harness.wait_cards(3)
    assert "change the address" in card_text(cards[2])
    await harness.settle()
    assert len(harness.cards()) == 3 and len(harness.replies(ts)) == 1
    async with sessionmaker(harness.bot.engine)() as session:
        texts = list(await session.scalars(select(Message.text).where(Message.role == "customer").order_by(Message.id)))
    assert texts == ["(the customer deleted this message)", "and can I change the address?"]


async def test_what_is_no_customer_edit_changes_nothing(harness: Harness) -> None:
    asked = await harness.mention("where is #W2611340")
    ts = asked["event"]["ts"]
    [card] = await harness.wait_cards(1)
    bots_change = message_changed(CUSTOMER_CHANNEL, ts, "<@UBOT> reworded by a bot", "<@UBOT> where is #W2611340")
    bots_change["event"]["message"]["bot_id"] = "B999"
    for envelope in (
        # Another bot's message in the thread, and a change to a bot's message.
        message("bot noise", thread_ts=ts, bot_id="B999", subtype="bot_message"),
        bots_change,
        # Slack re-sends the message when a link unfurls: same text.
        message_changed(CUSTOMER_CHANNEL, ts, "<@UBOT> where is #W2611340", "<@UBOT> where is #W2611340"),
        # The same message again under a new event id, unedited.
        app_mention("<@UBOT> where is #W2611340", ts=ts),
        # Someone else's message the bot never stored, edited and deleted.
        message_changed(CUSTOMER_CHANNEL, "1600000000.000100", "new", "old", user="U999"),
        message_deleted(CUSTOMER_CHANNEL, "1600000000.000100", "new", user="U999"),
    ):
        assert (await harness.sender.event(envelope)).status_code == 200
    # The proof nothing happened: a later genuine question gets the next card, and only it.
    await harness.mention("is the shop open on Sunday?")
    cards = await harness.wait_cards(2)
    assert "Sunday" in card_text(cards[1])
    await harness.settle()
    assert len(harness.cards()) == 2
    assert not [c for c in harness.card_updates(draft_id_of(card)) if "Superseded" in card_text(c)]


# -- Discord: MESSAGE_UPDATE and MESSAGE_DELETE through the gateway ---------------------------


async def alice_asks(discord: FakeDiscord, text: str) -> dict[str, Any]:
    """Alice mentions the bot in the support channel; the message (the bot opens its thread on it)."""
    return await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> {text}", mention_bot=True)


def discord_overrides(discord: FakeDiscord) -> dict[str, str]:
    return {"discord_bot_token": discord.token, "discord_api_url": discord.api_url, "discord_cdn_urls": discord.cdn_url}


async def test_a_discord_edit_before_approval_redrafts_once_and_after_the_answer_nothing(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    async with running_bot(tmp_path, kimi, slack, **discord_overrides(discord)) as harness:
        asked = await alice_asks(discord, "is the shop open on Sunday?")
        thread = asked["id"]  # the bot opened a thread on the member's message
        [first] = await harness.wait_cards(1)

        await discord.edit_user_message(ALICE, asked["id"], f"<@{BOT_ID}> is the shop open on Saturday?")
        cards = await harness.wait_cards(2)
        assert "Saturday" in card_text(cards[1])
        await harness.wait_card_update(draft_id_of(first), "customer edited their message")

        await harness.click("approve_draft", draft_id_of(cards[1]))
        [reply] = await wait_until(lambda: bot_messages(discord, thread))
        assert "Saturday" in reply["content"] and "Sunday" not in reply["content"]

        # Edited again after the answer: nothing new. The proof: a later question's card is next.
        await discord.edit_user_message(ALICE, asked["id"], f"<@{BOT_ID}> is the shop open on Monday?")
        await alice_asks(discord, "do you ship to Norway?")
        cards = await harness.wait_cards(3)
        assert "Norway" in card_text(cards[2])
        await harness.settle()
        assert len(harness.cards()) == 3
        assert len(bot_messages(discord, thread)) == 1


async def test_a_discord_direct_message_whose_edit_arrives_first_is_drafted_from_the_edit_as_a_dm(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    async with running_bot(tmp_path, kimi, slack, **discord_overrides(discord)) as harness:
        asked = await discord.post_direct_message(ALICE, "where is my order #W2611340?", delivered=False)
        await discord.edit_user_message(ALICE, asked["id"], "where is my order #W2611340? It was due Monday")
        await discord.deliver_direct_message(asked)  # the original, recorded after its edit

        [card] = await harness.wait_cards(1)
        assert "due Monday" in card_text(card) and "Discord · DM" in card_text(card)
        await harness.settle()
        assert len(harness.cards()) == 1
        async with sessionmaker(harness.bot.engine)() as session:
            [conversation] = (await session.scalars(select(Conversation))).all()
        assert conversation.place == "private", "a direct message is private, whichever event stored it"


async def test_a_discord_deletion_retires_the_pending_draft(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    async with running_bot(tmp_path, kimi, slack, **discord_overrides(discord)) as harness:
        asked = await alice_asks(discord, "where is my order #W2611340?")
        thread = asked["id"]
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        await wait_until(lambda: bot_messages(discord, thread))

        # A follow-up in the thread, then deleted before review: its card is retired.
        follow = await discord.post_user_message(thread, ALICE, "also, can I change the address?")
        cards = await harness.wait_cards(2)
        await discord.delete_user_message(follow["id"])
        retired = await harness.wait_card_update(draft_id_of(cards[1]), "customer deleted their message")
        assert "approve_draft" not in card_text(retired)

        # Deleting the first message, answered already, changes nothing sent.
        await discord.delete_user_message(asked["id"])
        await alice_asks(discord, "do you ship to Norway?")
        await harness.wait_cards(3)
        await harness.settle()
        assert len(harness.cards()) == 3
        assert len(bot_messages(discord, thread)) == 1
        assert not [c for c in harness.card_updates(draft_id_of(card)) if "deleted" in card_text(c)]


async def test_a_discord_moderators_purge_retires_the_pending_draft_of_what_it_removed(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    async with running_bot(tmp_path, kimi, slack, **discord_overrides(discord)) as harness:
        asked = await alice_asks(discord, "my card is 4111 1111 1111 1111, where is it?")
        [card] = await harness.wait_cards(1)

        # A moderator purges the channel: one MESSAGE_DELETE_BULK names Alice's message and another.
        del discord.messages[asked["id"]]
        purge = {"ids": ["1599999999999999999", asked["id"]], "channel_id": SUPPORT_CHANNEL_ID, "guild_id": GUILD_ID}
        await discord.dispatch("MESSAGE_DELETE_BULK", purge)

        retired = await harness.wait_card_update(draft_id_of(card), "customer deleted their message")
        assert "approve_draft" not in card_text(retired)


async def test_the_installed_bot_retires_a_purged_discord_question_and_answers_slack_meanwhile(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with with_discord(tmp_path, kimi.base_url, slack) as (bot, discord):
        asked = await alice_asks(discord, "my card is 4111 1111 1111 1111, where is it?")
        mention = app_mention("<@UBOT> do you ship to Norway?", user="U900")
        assert (await bot.sender.event(mention)).status_code == 200
        cards = await until(lambda: bot.cards()[1:] and bot.cards(), "a card for each platform's question")
        [alices] = [c for c in cards if "4111" in card_text(c)]
        [slacks] = [c for c in cards if "Norway" in card_text(c)]

        del discord.messages[asked["id"]]
        purge = {"ids": [asked["id"]], "channel_id": SUPPORT_CHANNEL_ID, "guild_id": GUILD_ID}
        await discord.dispatch("MESSAGE_DELETE_BULK", purge)
        await until(
            lambda: [
                c
                for c in slack.calls_to("chat.update")
                if draft_id_of(alices)[:8] in str(c.params) and "customer deleted their message" in str(c.params)
            ],
            "Alice's card retired",
        )
        click = block_actions("approve_draft", draft_id_of(slacks), user="U333", channel=REVIEW_CHANNEL)
        assert (await bot.sender.action(click)).status_code == 200
        await until(
            lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == CUSTOMER_CHANNEL],
            "the Slack answer",
        )
        assert len(bot.cards()) == 2


# -- PostgreSQL: two instances, both copies of one edit (or of one message) at once ---------------


async def test_both_copies_of_an_edit_landing_on_two_instances_at_once_make_one_new_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    engine = create_async_engine(database)
    try:
        async with running_instances(tmp_path, kimi, slack, database) as (first, senders):
            # One new message delivered twice under two event ids, to both instances at once.
            asked = app_mention("<@UBOT> is the shop open on Sunday?")
            copy = app_mention("<@UBOT> is the shop open on Sunday?", ts=asked["event"]["ts"])
            slack.ingest_event(asked)
            await asyncio.gather(senders[0].event(asked), senders[1].event(copy))
            [card] = await first.wait_cards(1)

            # The edit's two copies (message_changed, the edited app_mention), one to each
            # instance, both reading the old text before either writes: a lock on the message
            # row holds both writes back until each instance has read it.
            ts = asked["event"]["ts"]
            changed = message_changed(
                CUSTOMER_CHANNEL, ts, "<@UBOT> is the shop open on Saturday?", "<@UBOT> is the shop open on Sunday?"
            )
            mention = app_mention("<@UBOT> is the shop open on Saturday?", ts=ts, edited=True)
            async with engine.connect() as holder, engine.connect() as watcher:
                async with holder.begin():
                    await holder.execute(select(Message.id).where(Message.role == "customer").with_for_update())
                    both = asyncio.gather(senders[0].event(changed), senders[1].event(mention))
                    waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    await until(lambda: _count(watcher, waiting, 2), "both edits waiting on the message row")
                responses = await both
            assert [r.status_code for r in responses] == [200, 200]
            cards = await first.wait_cards(2)
            await first.wait_card_update(draft_id_of(card), "customer edited their message")
        # Both instances settled and stopped: everything the copies caused is done.
        assert len(first.cards()) == 2 and "Saturday" in card_text(cards[1])
        async with sessionmaker(engine)() as session:
            drafts = await session.scalar(select(func.count()).select_from(Draft))
            edits = await session.scalar(select(func.count()).where(AuditEvent.kind == "message_edited"))
        assert (drafts, edits) == (2, 1), "the edit was applied once: one draft superseded, one fresh"
    finally:
        await engine.dispose()


async def _count(conn: AsyncConnection, query: TextClause, at_least: int) -> bool:
    return int((await conn.execute(query)).scalar_one()) >= at_least


# -- Slack's own test payloads (tests/payloads/slack), pointed at a stored message ----------------


def real_payload(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((Path(__file__).parent / "payloads" / "slack" / name).read_text())
    payload["event_id"] = next_event_id()
    return payload


async def test_slacks_own_message_changed_and_message_deleted_payloads_edit_and_retire(harness: Harness) -> None:
    asked = await harness.mention("is the shop open on Sunday?")
    ts = asked["event"]["ts"]
    [first] = await harness.wait_cards(1)

    # bolt-python's message_changed: no channel_type, no thread_ts, just the nested message.
    changed = real_payload("event-callback-message-message-changed-1.json")
    changed["event"]["channel"] = CUSTOMER_CHANNEL
    changed["event"]["message"].update(user="U222", ts=ts, text="<@UBOT> is the shop open on Saturday?")
    assert (await harness.sender.event(changed)).status_code == 200
    cards = await harness.wait_cards(2)
    await harness.wait_card_update(draft_id_of(first), "customer edited their message")
    assert "Saturday" in card_text(cards[1])

    # The other one: its nested message has no ts, the previous message tells which it was.
    again = real_payload("event-callback-message-message-changed-2.json")
    again["event"]["channel"] = CUSTOMER_CHANNEL
    again["event"]["message"].update(user="U222", text="<@UBOT> is the shop open on Monday?")
    again["event"]["previous_message"].update(user="U222", ts=ts)
    assert (await harness.sender.event(again)).status_code == 200
    cards = await harness.wait_cards(3)
    assert "Monday" in card_text(cards[2])

    # bolt-python's message_deleted, as Slack sends it with the previous message.
    deleted = real_payload("event-callback-message-message-deleted-1.json")
    deleted["event"]["channel"] = CUSTOMER_CHANNEL
    deleted["event"]["deleted_ts"] = ts
    deleted["event"]["previous_message"].update(user="U222", ts=ts)
    assert (await harness.sender.event(deleted)).status_code == 200
    await harness.wait_card_update(draft_id_of(cards[2]), "customer deleted their message")
    await harness.settle()
    assert len(harness.cards()) == 3 and not harness.replies(ts)


async def test_on_the_discord_staff_desk_the_retired_card_says_why(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    bot = Supportbot(discord_only(tmp_path, kimi, discord))
    await bot.start()
    try:
        asked = await alice_asks(discord, "is the shop open on Sunday?")
        [card] = await wait_until(lambda: [m for m in bot_messages(discord, REVIEW_CHANNEL_ID) if m.get("components")])
        await discord.delete_user_message(asked["id"])

        def retired() -> list[dict[str, Any]]:
            shown = json.dumps(discord.messages[card["id"]]["embeds"])
            return [card] if "Superseded" in shown and "customer deleted their message" in shown else []

        await wait_until(retired)
        labels = {b["label"] for row in discord.messages[card["id"]]["components"] for b in row["components"]}
        assert not labels & {"Approve", "Edit", "Reject", "Regenerate"}, "nothing to approve on a retired card"
        assert bot.core is not None
        await bot.core.background.settle(5)
        assert not bot_messages(discord, asked["id"]), "nothing sent"
    finally:
        await bot.stop()
