"""Issue 19, people in the thread: who is speaking decides what a message does. The real bot over
HTTP, the fake Slack and fake Kimi on loopback (and the fake Discord once), real SQLite.

* an agent answering by hand in the customer's thread takes it over: the pending draft is retired
  with the reason, no card for the agent, the customer's next message drafts nothing until Hand
  back, and the next draft sees what the agent wrote;
* someone else in the thread is context: nothing superseded, nothing drafted, the words kept;
* the conversation's life is on the card: Claim shows the assignee, Resolve resolves, the
  customer writing reopens; escalation and Take over make it a human's; auto-resolve.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import Supportbot
from bot.domain.states import ConversationOwner, ConversationStatus, DraftStatus
from bot.errors import PolicyError
from bot.policy import parse_policy
from bot.prompt import OUTSIDER_HEAD
from bot.store import AuditEvent, Conversation, Draft, Message, sessionmaker
from tests.fakes.discord import AGENT_ROLE_ID, ALICE, BOB, BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, block_actions, message
from tests.harness import (
    REVIEW_CHANNEL,
    Harness,
    card_text,
    draft_id_of,
    running_bot,
    until,
    wait_until,
)
from tests.playground_support import playground_bot
from tests.processes import BotProcess, seed_orders, supportbot
from tests.test_discord_flow import discord_only
from tests.test_playground import client_for, playground_of, state_when

CUSTOMER, AGENT, STRANGER = "U222", "U333", "U999"
POLICY = f"""
[approvers]
agents = ["{AGENT}"]
"""


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[Harness]:
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        yield harness


async def conversation(harness: Harness) -> Conversation:
    async with sessionmaker(harness.bot.engine)() as session:
        [found] = list(await session.scalars(select(Conversation)))
    return found


async def turns(harness: Harness) -> list[tuple[str, str]]:
    async with sessionmaker(harness.bot.engine)() as session:
        rows = await session.execute(select(Message.role, Message.text).order_by(Message.id))
    return [(role, text) for role, text in rows.all()]


async def drafts(harness: Harness) -> list[DraftStatus]:
    async with sessionmaker(harness.bot.engine)() as session:
        return list(await session.scalars(select(Draft.status).order_by(Draft.created_at, Draft.revision)))


def prompt_of(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"], ensure_ascii=False)


async def a_card(harness: Harness, text: str, **kwargs: Any) -> tuple[str, str]:
    """The customer asks; returns (thread ts, the draft id of its card)."""
    before = len(harness.cards())
    envelope = await harness.mention(text, **kwargs)
    cards = await harness.wait_cards(before + 1)
    return envelope["event"]["ts"], draft_id_of(cards[-1])


async def test_an_agent_answering_by_hand_takes_the_thread_over_until_hand_back(desk: Harness) -> None:
    thread, draft = await a_card(desk, "where is my order #W2611340?")
    drafted = len(desk.kimi.completions)

    # The agent answers the customer by hand, in the thread.
    await desk.reply_in_thread("Hi! It ships tomorrow, I checked with the warehouse.", thread, user=AGENT)
    retired = await desk.wait_card_update(draft, "Answered by hand by")
    text = card_text(retired)
    assert "approve_draft" not in text, "the pending draft is retired: nothing to approve"
    assert "a human answers" in text and "hand_back_conversation" in text
    assert (await drafts(desk)) == [DraftStatus.SUPERSEDED]
    life = await conversation(desk)
    assert (life.owner, life.assignee_id, life.status) == (
        ConversationOwner.HUMAN,
        AGENT,
        ConversationStatus.WAITING_ON_CUSTOMER,
    )
    assert not desk.replies(thread), "nothing was sent by the bot"

    # The customer writes again: the desk shows it on the card, and nobody drafts.
    await desk.reply_in_thread("Great, and can I still change the address?", thread)
    shown = await desk.wait_card_update(draft, "can I still change the address?")
    assert "The customer wrote since" in card_text(shown)
    await desk.settle()
    assert len(desk.cards()) == 1, "no card for the agent's message, none for the customer's"
    assert len(desk.kimi.completions) == drafted, "no draft while a human answers"
    assert (await conversation(desk)).status is ConversationStatus.OPEN

    # Hand back: the bot drafts the answer to the waiting message, seeing what the agent wrote.
    await desk.click("hand_back_conversation", draft, user=AGENT)
    [_, fresh] = await desk.wait_cards(2)
    assert "can I still change the address?" in card_text(fresh)
    assert "the bot drafts" in card_text(fresh) and "take_over_conversation" in card_text(fresh)
    prompt = prompt_of(desk.kimi.completions[drafted])
    assert "It ships tomorrow, I checked with the warehouse." in prompt
    assert [role for role, _ in await turns(desk)] == ["customer", "agent", "customer"]
    assert (await conversation(desk)).owner is ConversationOwner.BOT


async def test_someone_else_in_the_thread_is_context_and_drafts_nothing(desk: Harness) -> None:
    thread, draft = await a_card(desk, "where is my order #W2611340?")
    drafted = len(desk.kimi.completions)

    await desk.reply_in_thread("I have the same problem with my chair!", thread, user=STRANGER)
    stored = await until(lambda: _outsider_stored(desk), "the outsider's message stored")
    assert stored == "I have the same problem with my chair!"
    await desk.settle()
    assert await drafts(desk) == [DraftStatus.AWAITING_REVIEW], "nothing superseded"
    assert len(desk.cards()) == 1 and len(desk.kimi.completions) == drafted, "nothing drafted"
    assert not [c for c in desk.card_updates(draft) if "Superseded" in card_text(c)]

    # The customer's next message drafts as usual, with the outsider's words marked as context.
    await desk.reply_in_thread("any news?", thread)
    await desk.wait_cards(2)
    prompt = prompt_of(desk.kimi.completions[drafted])
    assert OUTSIDER_HEAD in prompt and "I have the same problem with my chair!" in prompt
    assert "<outsider_message>" in prompt
    assert await drafts(desk) == [DraftStatus.SUPERSEDED, DraftStatus.AWAITING_REVIEW]


async def _outsider_stored(harness: Harness) -> str:
    return next((text for role, text in await turns(harness) if role == "outsider"), "")


async def test_claim_shows_the_assignee_and_resolve_then_the_customer_reopens(desk: Harness) -> None:
    thread, draft = await a_card(desk, "where is my order #W2611340?")

    await desk.click("claim_conversation", draft, user=AGENT)
    claimed = await desk.wait_card_update(draft, "assigned to <@U333>")
    assert "approve_draft" in card_text(claimed), "claiming leaves the draft to decide"
    await desk.click("claim_conversation", draft, user=AGENT)
    await wait_until(lambda: [t for t in desk.ephemerals(AGENT) if "already assigned to you" in t])

    await desk.click("approve_draft", draft, user=AGENT)
    await desk.wait_replies(thread)
    await until(lambda: _status_is(desk, ConversationStatus.WAITING_ON_CUSTOMER), "waiting on the customer")

    await desk.click("resolve_conversation", draft, user=AGENT)
    resolved = await desk.wait_card_update(draft, "Conversation: resolved")
    assert "resolve_conversation" not in card_text(resolved), "a resolved conversation offers no buttons"

    # The customer writes after resolution: reopened, and drafted for.
    await desk.reply_in_thread("it still has not arrived", thread)
    [_, fresh] = await desk.wait_cards(2)
    assert "Conversation: open" in card_text(fresh) and "assigned to <@U333>" in card_text(fresh)
    assert (await conversation(desk)).status is ConversationStatus.OPEN
    async with sessionmaker(desk.bot.engine)() as session:
        kinds = list(await session.scalars(select(AuditEvent.kind).order_by(AuditEvent.id)))
    assert kinds.index("claim") < kinds.index("resolve") < kinds.index("reopened")


async def _status_is(harness: Harness, status: ConversationStatus) -> bool:
    return (await conversation(harness)).status is status


async def test_only_agents_decide_on_a_conversation(desk: Harness) -> None:
    _, draft = await a_card(desk, "where is my order #W2611340?")
    await desk.click("take_over_conversation", draft, user=STRANGER)
    await wait_until(lambda: [t for t in desk.ephemerals(STRANGER) if "approver" in t])
    assert (await conversation(desk)).owner is ConversationOwner.BOT


async def test_take_over_and_escalation_make_the_conversation_a_humans(desk: Harness) -> None:
    thread, draft = await a_card(desk, "where is my order #W2611340?")
    await desk.click("take_over_conversation", draft, user=AGENT)
    taken = await desk.wait_card_update(draft, "taken over by")
    assert "hand_back_conversation" in card_text(taken) and "approve_draft" in card_text(taken)
    drafted = len(desk.kimi.completions)
    await desk.reply_in_thread("hello?", thread)
    await desk.wait_card_update(draft, "hello?")
    assert len(desk.cards()) == 1 and len(desk.kimi.completions) == drafted

    # Escalation (the policy's rules) hands a conversation to a human as well.
    other, escalated = await a_card(desk, "I want to talk to a human", user="U777")
    text = card_text(desk.cards()[-1])
    assert "Escalation" in text and "escalated:" in text and "hand_back_conversation" in text
    before = len(desk.kimi.completions)
    await desk.reply_in_thread("still there?", other, user="U777")
    await desk.wait_card_update(escalated, "still there?")
    assert len(desk.cards()) == 2 and len(desk.kimi.completions) == before


async def test_who_is_an_agent_comes_from_the_review_channel_or_the_installing_workspace(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # No approver lists: a member of the review channel is an agent (the default [desk] agents),
    # and in a Slack Connect channel so is a member of the workspace that installed the bot.
    slack.members[REVIEW_CHANNEL] = ["U444"]
    policy = '[desk]\nagents = ["review_channel", "workspace"]\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:

        async def connect(text: str, user: str, team: str, thread_ts: str | None = None) -> dict[str, Any]:
            """A message in the Slack Connect channel from a member of ``team``."""
            make = message if thread_ts else app_mention
            envelope = make(f"<@UBOT> {text}" if make is app_mention else text, user=user, ext_shared=True)
            if thread_ts:
                envelope["event"]["thread_ts"] = thread_ts
                envelope["event"]["parent_user_id"] = CUSTOMER
            envelope["event"]["user_team"] = team
            assert (await harness.sender.event(envelope)).status_code == 200
            return envelope

        asked = await connect("where is my order #W2611340?", CUSTOMER, "T222")
        thread = asked["event"]["ts"]
        [card] = await harness.wait_cards(1)
        draft = draft_id_of(card)

        await connect("we see the same on our side", "U555", "T222", thread)  # the customer's colleague
        await until(lambda: _outsider_stored(harness), "the customer's colleague kept as context")
        assert await drafts(harness) == [DraftStatus.AWAITING_REVIEW]

        await connect("Looking into it now.", "U666", "T111", thread)  # a colleague of the installing team
        await harness.wait_card_update(draft, "Answered by hand by")
        assert (await conversation(harness)).assignee_id == "U666"

        await harness.click("hand_back_conversation", draft, user="U444")
        await until(lambda: _owner_is(harness, ConversationOwner.BOT), "handed back by a review-channel member")
        await harness.reply_in_thread("Thanks, I'll wait.", thread, user="U444")  # a review-channel member
        await until(lambda: _owner_is(harness, ConversationOwner.HUMAN), "taken over by a review-channel member")
        assert (await conversation(harness)).owner_reason == "answered by hand by <@U444>"
        assert [role for role, _ in await turns(harness)] == ["customer", "outsider", "agent", "agent"]


async def _owner_is(harness: Harness, owner: ConversationOwner) -> bool:
    return (await conversation(harness)).owner is owner


async def test_a_conversation_waiting_too_long_on_its_customer_is_resolved(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = POLICY + "\n[desk]\nauto_resolve_hours = 0.0005\n"  # 1.8 seconds
    async with running_bot(tmp_path, kimi, slack, policy=policy, sweep_seconds=0.3) as harness:
        thread, draft = await a_card(harness, "where is my order #W2611340?")
        await harness.click("approve_draft", draft, user=AGENT)
        await harness.wait_replies(thread)
        resolved = await harness.wait_card_update(draft, "Conversation: resolved")
        assert "sent to the customer" in card_text(resolved)
        assert (await conversation(harness)).status is ConversationStatus.RESOLVED


async def test_an_agent_answering_by_hand_on_discord_takes_the_thread_over(
    tmp_path: Path, kimi: FakeKimi, discord_fake: FakeDiscord
) -> None:
    discord = discord_fake
    (tmp_path / "policy.toml").write_text(f'[desk]\nagents = ["role:{AGENT_ROLE_ID}"]\n')
    settings = discord_only(tmp_path, kimi, discord)
    bot = Supportbot(settings)
    await bot.start()
    try:
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "is the shop open?", mention_bot=True)
        [card] = await wait_until(lambda: _discord_cards(discord, "approve"))
        thread = asked["id"]
        await discord.post_user_message(thread, BOB, "Yes, until 6 pm today!")
        retired = await until(
            lambda: [m for m in discord.messages_in(REVIEW_CHANNEL_ID) if m["id"] == card["id"] and _retired(m)],
            "the card retired",
        )
        buttons = json.dumps(retired[0].get("components"))
        assert ":approve:" not in buttons and ":hand_back:" in buttons
        assert bot.core is not None
        await bot.core.background.settle(5)
        assert len(_discord_cards(discord, "")) == 1, "no card for the agent's message"
        assert not [m for m in discord.messages_in(thread) if m["author"]["id"] == BOT_ID]
    finally:
        await bot.stop()


def _retired(message: dict[str, Any]) -> bool:
    return "Answered by hand by Bob" in json.dumps(message.get("embeds"), ensure_ascii=False)


def _discord_cards(discord: FakeDiscord, button: str) -> list[dict[str, Any]]:
    return [
        m
        for m in discord.messages_in(REVIEW_CHANNEL_ID)
        if m["author"]["id"] == BOT_ID and m.get("embeds") and f":{button}" in json.dumps(m.get("components"))
    ]


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def test_the_installed_bot_keeps_who_answers_through_kill_9(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """``supportbot run`` as a subprocess: an agent answers by hand, the customer writes, the bot
    is killed (-9) right after taking it; the restarted bot still drafts nothing there, its card
    shows the customer's message, and Hand back drafts with the agent's words. A Claim survives
    another kill -9, and the operator lists the conversation by status and owner."""
    (tmp_path / "policy.toml").write_text(POLICY)
    bot = BotProcess(tmp_path, kimi.base_url, slack)
    await seed_orders(bot.database_url, tmp_path / "orders.jsonl")

    def updates(draft: str, containing: str) -> list[Any]:
        return [
            c
            for c in slack.calls_to("chat.update")
            if draft[:8] in json.dumps(c.params.get("blocks")) and containing in card_text(c)
        ]

    async def send(envelope: dict[str, Any]) -> None:
        assert (await bot.sender.event(envelope)).status_code == 200

    async def click(action: str, draft: str) -> None:
        response = await bot.sender.action(block_actions(action, draft, user=AGENT, channel=REVIEW_CHANNEL))
        assert response.status_code == 200

    await bot.start()
    try:
        asked = app_mention("<@UBOT> where is my order #W2611340?", user=CUSTOMER)
        await send(asked)
        thread = asked["event"]["ts"]
        [card] = await wait_until(bot.cards)
        draft = draft_id_of(card)
        await send(message("I'll handle this one myself.", thread_ts=thread, user=AGENT))
        await wait_until(lambda: updates(draft, "Answered by hand by"))
        drafted = len(kimi.completions)

        await send(message("ok, waiting for you", thread_ts=thread, user=CUSTOMER))
        await bot.kill9()  # the message is stored (200), its card refresh may not have happened
        await bot.start()
        await wait_until(lambda: updates(draft, "ok, waiting for you"), timeout=20)
        assert len(bot.cards()) == 1 and len(kimi.completions) == drafted, "still a human's: no draft"

        await click("hand_back_conversation", draft)
        [_, fresh] = await wait_until(bot.cards, 2, timeout=20)
        assert "ok, waiting for you" in card_text(fresh)
        assert "I'll handle this one myself." in prompt_of(kimi.completions[drafted])

        await click("claim_conversation", draft_id_of(fresh))
        await wait_until(lambda: updates(draft_id_of(fresh), "assigned to <@U333>"))
        await bot.kill9()
        listed = supportbot(
            tmp_path, "conversations", "--status", "open", "--owner", "bot", DATABASE_URL=bot.database_url
        )
        assert listed.returncode == 0, listed.stderr
        assert "<@U333>" in listed.stdout and "open" in listed.stdout and "awaiting_review" in listed.stdout
        none = supportbot(tmp_path, "conversations", "--owner", "human", DATABASE_URL=bot.database_url)
        assert none.stdout.strip() == "no conversations match"
    finally:
        await bot.stop()


def test_a_desk_setting_that_names_no_source_of_agents_is_refused_with_its_line() -> None:
    source = '[desk]\nagents = ["review_channel", "everyone"]\noutsiders = "anyone"\n'
    with pytest.raises(PolicyError) as refused:
        parse_policy(source)
    assert refused.value.problems == [
        'line 2: desk.agents: \'everyone\' is not "review_channel", "workspace" or "role:<id>"',
        "line 3: desk.outsiders: Input should be 'context' or 'customers'",
    ]


async def test_the_playground_desk_shows_the_conversation_and_its_buttons(tmp_path: Path, kimi: FakeKimi) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)
        await client.post("/playground/api/message", data={"text": "Can I change my address?"})
        state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        assert "Conversation: open · the bot drafts · unassigned" in state["desk"]
        assert 'data-action="take_over"' in state["desk"] and 'data-action="claim"' in state["desk"]
        card = playground.state.pending_card()
        assert card is not None

        taken = await client.post("/playground/api/decide", data={"draft_id": card.draft_id, "action": "take_over"})
        assert taken.json()["ok"], taken.text
        state = await state_when(client, lambda s: 'data-action="hand_back"' in s["desk"])
        assert "a human answers (taken over by" in state["desk"]

        await client.post("/playground/api/message", data={"text": "Hello, anyone?"})
        state = await state_when(client, lambda s: "The customer wrote since" in s["desk"])
        assert "Hello, anyone?" in state["desk"] and len(playground.state.cards) == 1

        back = await client.post("/playground/api/decide", data={"draft_id": card.draft_id, "action": "hand_back"})
        assert back.json()["ok"], back.text
        await state_when(client, lambda s: s["desk"].count('class="card ') == 2)
