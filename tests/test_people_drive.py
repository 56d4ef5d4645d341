"""Issue 19, people in the thread, driven from outside: the installed ``supportbot run`` with Slack
and Discord configured at once (the review desk in Slack), once with Slack over HTTP and once over
Socket Mode. For a customer on each platform, one conversation goes through every point of the
issue, and the process is killed (-9) in the middle of each step and started again:

* an agent answers by hand: no card for the agent, the pending card retired with its notice, the
  customer's next message drafts nothing until Hand back, then the draft knows what the agent said;
* an outsider writes in the thread: no card, the words stored as context;
* "thanks!" after an answer: no card and no model call; a real question after it: a card;
* an edited mention: one card, one answer (and an edit after the answer drafts nothing);
* a card past its SLA: one nudge, then the overdue mark.

After every restart the desk and SQL hold what they held before the kill, and nothing is posted
twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.states import ConversationOwner, ConversationStatus, DraftStatus
from bot.store import AuditEvent, Conversation, Draft, Message, create_engine, sessionmaker
from tests.fakes.discord import ALICE, BOB, BOT_ID, SUPPORT_CHANNEL_ID, FakeDiscord, FakeUser
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack, SlackCall
from tests.fakes.slack_payloads import app_mention, block_actions, message, message_changed
from tests.fakes.socket_mode import SocketModeSlack
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, SLACK_TOKEN, card_text, draft_id_of, until
from tests.processes import BotProcess, seed_orders

APP_TOKEN = "xapp-1-A111-canary-app-token-0123456789"
SLACK_CUSTOMER, SLACK_AGENT, SLACK_OUTSIDER = "U222", "U333", "U999"
CAROL = FakeUser("1400000000000000009", "carol", "Carol")  # on Discord, neither the customer nor staff
SLA_MINUTES = 0.1  # a nudge after 6 s undecided, the overdue mark after 12 s
POLICY = f"""
[approvers]
agents = ["{SLACK_AGENT}", "{BOB.id}"]

[escalation.slack]
on_call = "SONCALL"

[desk]
first_response_minutes = {SLA_MINUTES}

[desk.hours]
timezone = "UTC"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "00:00"
"""
WAIT = 25.0  # the longest wait for one event: a restart plus an expired work lease (6 s)


class Side(Protocol):
    """One platform's people in a customer's thread, as the platform delivers their messages."""

    platform: str
    agent_id: str

    async def ask(self, text: str) -> str:
        """The customer mentions the bot; returns the thread (its first message's id)."""
        ...

    async def customer_says(self, thread: str, text: str) -> None: ...

    async def agent_says(self, thread: str, text: str) -> None: ...

    async def outsider_says(self, thread: str, text: str) -> None: ...

    async def edit_question(self, thread: str, old: str, new: str) -> None:
        """The customer edits the mention that opened ``thread``."""
        ...

    def replies(self, thread: str) -> list[str]:
        """What the bot posted in the customer's thread."""
        ...


@dataclass
class Drive:
    """The running ``supportbot run``, its fakes and its database, with the moves of the desk."""

    bot: BotProcess
    slack: FakeSlack
    discord: FakeDiscord
    kimi: FakeKimi
    engine: AsyncEngine
    socket: SocketModeSlack | None

    async def slack_event(self, envelope: dict[str, Any]) -> None:
        """Slack delivers an event and the bot takes it (a 200, or the socket envelope's ack)."""
        if self.socket is None:
            assert (await self.bot.sender.event(envelope)).status_code == 200
        else:
            await self.socket.wait_ack(await self.socket.send_event(envelope), timeout=10)

    async def click(self, action: str, draft: str) -> None:
        payload = block_actions(action, draft, user=SLACK_AGENT, channel=REVIEW_CHANNEL)
        if self.socket is None:
            assert (await self.bot.sender.action(payload)).status_code == 200
        else:
            await self.socket.wait_ack(await self.socket.send_interactive(payload), timeout=10)

    async def restart(self) -> None:
        """kill -9, then start again (ready: Slack's socket and Discord's gateway are up)."""
        sockets = len(self.socket.connections) if self.socket is not None else 0
        sessions = len(self.discord.identifies)
        await self.bot.kill9()
        await self.bot.start()
        if self.socket is not None:
            await self.socket.wait_connected(count=sockets + 1, timeout=WAIT)
        await until(lambda: len(self.discord.identifies) > sessions, "Discord's gateway again", WAIT)

    # -- the desk ---------------------------------------------------------------------------

    def cards(self) -> list[SlackCall]:
        return self.bot.cards()

    async def new_card(self, before: int, containing: str) -> str:
        """The draft id of the one card posted after the first ``before`` that quotes ``containing``."""
        [card] = await until(
            lambda: [c for c in self.cards()[before:] if containing in card_text(c)], f"a card for {containing!r}", WAIT
        )
        draft = draft_id_of(card)
        await until(lambda: self.awaiting_review(draft), f"the draft for {containing!r} written", WAIT)
        return draft

    async def pending_card(self, side: Side, thread: str) -> SlackCall:
        """The card of the thread's conversation's one draft awaiting review."""

        async def found() -> list[SlackCall]:
            life = await self.conversation(side, thread)
            pending = [d for d, status in (await self.drafts(life.id)).items() if status is DraftStatus.AWAITING_REVIEW]
            return [c for c in self.cards() if draft_id_of(c) in pending]

        [card] = await until(found, f"the pending card on {side.platform}", WAIT)
        return card

    def updates(self, draft: str, containing: str) -> list[SlackCall]:
        return [
            c
            for c in self.slack.calls_to("chat.update")
            if draft[:8] in json.dumps(c.params.get("blocks")) and containing in card_text(c)
        ]

    async def card_says(self, draft: str, containing: str) -> SlackCall:
        found = await until(lambda: self.updates(draft, containing), f"the card saying {containing!r}", WAIT)
        return found[-1]

    def card_ts(self, draft: str) -> str:
        [card] = [c for c in self.cards() if draft_id_of(c) == draft]
        assert card.response is not None
        return str(card.response["ts"])

    def nudges(self, card_ts: str) -> list[SlackCall]:
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("thread_ts") == card_ts
        ]

    # -- SQL --------------------------------------------------------------------------------

    async def conversation(self, side: Side, thread: str) -> Conversation:
        async with sessionmaker(self.engine)() as session:
            rows = await session.scalars(select(Conversation).where(Conversation.platform == side.platform))
            [found] = [row for row in rows if row.thread == thread]
        return found

    async def turns(self, conversation_id: str) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Message.role, Message.text)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id)
            )
        return [(role, text) for role, text in rows.all()]

    async def drafts(self, conversation_id: str) -> dict[str, DraftStatus]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Draft.id, Draft.status)
                .where(Draft.conversation_id == conversation_id)
                .order_by(Draft.created_at, Draft.revision)
            )
        return {draft: DraftStatus(status) for draft, status in rows.all()}

    async def awaiting_review(self, draft: str) -> bool:
        async with self.engine.connect() as conn:
            status = await conn.scalar(select(Draft.status).where(Draft.id == draft))
        return status == DraftStatus.AWAITING_REVIEW

    async def audit(self, conversation_id: str, kind: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.scalars(
                select(AuditEvent.summary).where(AuditEvent.conversation_id == conversation_id, AuditEvent.kind == kind)
            )
        return list(rows)

    async def stored(self, side: Side, thread: str, text: str) -> None:
        """Wait until ``text`` is a stored turn of the thread's conversation: the bot took it."""

        async def taken() -> bool:
            try:
                conversation = await self.conversation(side, thread)
            except ValueError:
                return False
            return any(said == text for _, said in await self.turns(conversation.id))

        await until(taken, f"{text!r} stored", WAIT)


class SlackSide:
    """A customer in a Slack channel, the agent U333, and U999 who is neither."""

    platform = "slack"
    agent_id = SLACK_AGENT

    def __init__(self, drive: Drive) -> None:
        self.drive = drive

    async def ask(self, text: str) -> str:
        envelope = app_mention(f"<@UBOT> {text}", user=SLACK_CUSTOMER)
        await self.drive.slack_event(envelope)
        return str(envelope["event"]["ts"])

    async def customer_says(self, thread: str, text: str) -> None:
        await self.drive.slack_event(message(text, thread_ts=thread, user=SLACK_CUSTOMER))

    async def agent_says(self, thread: str, text: str) -> None:
        await self.drive.slack_event(message(text, thread_ts=thread, user=SLACK_AGENT))

    async def outsider_says(self, thread: str, text: str) -> None:
        await self.drive.slack_event(message(text, thread_ts=thread, user=SLACK_OUTSIDER))

    async def edit_question(self, thread: str, old: str, new: str) -> None:
        # Slack sends both: the message_changed and a fresh app_mention with the same ts.
        await self.drive.slack_event(message_changed(CUSTOMER_CHANNEL, thread, f"<@UBOT> {new}", f"<@UBOT> {old}"))
        await self.drive.slack_event(app_mention(f"<@UBOT> {new}", user=SLACK_CUSTOMER, ts=thread, edited=True))

    def replies(self, thread: str) -> list[str]:
        return [
            str(c.params.get("text"))
            for c in self.drive.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == CUSTOMER_CHANNEL and c.params.get("thread_ts") == thread
        ]


class DiscordSide:
    """Alice in #support (the bot opens a thread on her message), Bob of the staff, and Carol.
    The gateway has no redelivery: a message counts as taken once it is stored."""

    platform = "discord"
    agent_id = BOB.id

    def __init__(self, drive: Drive) -> None:
        self.drive = drive
        self.discord = drive.discord

    async def ask(self, text: str) -> str:
        sent = await self.discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> {text}", mention_bot=True)
        thread = str(sent["id"])
        await self.drive.stored(self, thread, text)
        return thread

    async def _says(self, author: FakeUser, thread: str, text: str) -> None:
        await self.discord.post_user_message(thread, author, text)
        await self.drive.stored(self, thread, text)

    async def customer_says(self, thread: str, text: str) -> None:
        await self._says(ALICE, thread, text)

    async def agent_says(self, thread: str, text: str) -> None:
        await self._says(BOB, thread, text)

    async def outsider_says(self, thread: str, text: str) -> None:
        await self._says(CAROL, thread, text)

    async def edit_question(self, thread: str, old: str, new: str) -> None:
        await self.discord.edit_user_message(ALICE, thread, f"<@{BOT_ID}> {new}")

    def replies(self, thread: str) -> list[str]:
        return [str(m["content"]) for m in self.discord.messages_in(thread) if m["author"]["id"] == BOT_ID]


@pytest.fixture(params=["http", "socket_mode"])
async def drive(request: pytest.FixtureRequest, tmp_path: Path, kimi: FakeKimi) -> AsyncIterator[Drive]:
    socket = request.param == "socket_mode"
    slack = SocketModeSlack(bot_token=SLACK_TOKEN, app_token=APP_TOKEN) if socket else FakeSlack(bot_token=SLACK_TOKEN)
    await slack.start()
    try:
        async with FakeDiscord() as discord:
            (tmp_path / "policy.toml").write_text(POLICY)
            variables = {"DISCORD_BOT_TOKEN": discord.token, "DISCORD_API_URL": discord.api_url}
            if socket:
                variables["SLACK_APP_TOKEN"] = APP_TOKEN
            bot = BotProcess(tmp_path, kimi.base_url, slack, **variables)
            await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
            engine = create_engine(bot.database_url)
            await bot.start()
            try:
                yield Drive(bot, slack, discord, kimi, engine, slack if isinstance(slack, SocketModeSlack) else None)
            finally:
                await bot.stop()
                await engine.dispose()
    finally:
        await slack.close()


async def each(sides: list[Side], step: Callable[[Side], Awaitable[None]]) -> None:
    for side in sides:
        await step(side)


async def test_people_in_the_thread_on_both_platforms_through_kill_9(drive: Drive) -> None:
    kimi = drive.kimi
    sides: list[Side] = [SlackSide(drive), DiscordSide(drive)]
    threads: dict[str, str] = {}
    first: dict[str, str] = {}
    agent_words = {"slack": "It ships tomorrow, I checked with the warehouse.", "discord": "Bob here: it left today."}
    follow_up = "can I still change the address?"

    # 1. An agent answers by hand; the customer writes again; killed once that is taken.
    async def agent_answers(side: Side) -> None:
        before = len(drive.cards())
        thread = threads[side.platform] = await side.ask("where is my order #W2611340?")
        draft = first[side.platform] = await drive.new_card(before, "where is my order #W2611340?")
        await side.agent_says(thread, agent_words[side.platform])
        retired = await drive.card_says(draft, "Answered by hand by")
        assert "approve_draft" not in card_text(retired) and "hand_back_conversation" in card_text(retired)
        await side.customer_says(thread, follow_up)

    await each(sides, agent_answers)
    drafted, cards = len(kimi.completions), len(drive.cards())
    await drive.restart()

    async def a_human_answers(side: Side) -> None:
        thread, draft = threads[side.platform], first[side.platform]
        shown = await drive.card_says(draft, follow_up)
        assert "The customer wrote since" in card_text(shown)
        life = await drive.conversation(side, thread)
        assert (life.owner, life.assignee_id, life.status) == (
            ConversationOwner.HUMAN,
            side.agent_id,
            ConversationStatus.OPEN,
        )
        assert list((await drive.drafts(life.id)).values()) == [DraftStatus.SUPERSEDED]
        assert [role for role, _ in await drive.turns(life.id)] == ["customer", "agent", "customer"]
        assert side.replies(thread) == [], "the bot said nothing"

    await each(sides, a_human_answers)
    assert len(drive.cards()) == cards, "no card for the agent's message nor for the customer's while a human answers"
    assert len(kimi.completions) == drafted, "no draft while a human answers"

    second: dict[str, str] = {}

    async def hand_back(side: Side) -> None:
        before, calls = len(drive.cards()), len(kimi.completions)
        await drive.click("hand_back_conversation", first[side.platform])
        second[side.platform] = await drive.new_card(before, follow_up)
        prompts = [json.dumps(body["messages"]) for body in kimi.completions[calls:]]
        assert prompts and all(agent_words[side.platform] in p for p in prompts), "the draft knows what the agent said"
        assert (await drive.conversation(side, threads[side.platform])).owner is ConversationOwner.BOT

    await each(sides, hand_back)

    # 2. An outsider writes in the thread; killed once it is taken.
    outsider_words = "I have the same problem with my chair!"

    async def outsider_writes(side: Side) -> None:
        await side.outsider_says(threads[side.platform], outsider_words)

    cards = len(drive.cards())
    await each(sides, outsider_writes)
    await drive.restart()

    async def outsider_is_context(side: Side) -> None:
        life = await drive.conversation(side, threads[side.platform])
        assert (await drive.turns(life.id))[-1] == ("outsider", outsider_words)
        assert list((await drive.drafts(life.id)).values()) == [DraftStatus.SUPERSEDED, DraftStatus.AWAITING_REVIEW]
        assert not drive.updates(second[side.platform], "Superseded"), "the customer's draft still stands"

    await each(sides, outsider_is_context)
    assert len(drive.cards()) == cards, "no card for the outsider"

    # 3. The answer goes out; "thanks!" needs no reply; killed once that is recorded.
    async def thanks_after_an_answer(side: Side) -> None:
        thread = threads[side.platform]
        await drive.click("approve_draft", second[side.platform])
        await until(lambda: side.replies(thread), f"the answer on {side.platform}", WAIT)
        life = await drive.conversation(side, thread)
        calls, cards = len(kimi.completions), len(drive.cards())
        await side.customer_says(thread, "thanks!")
        await until(lambda: drive.audit(life.id, "no_reply"), "the no-reply line", WAIT)
        assert len(kimi.completions) == calls, "decided before any model call"
        assert len(drive.cards()) == cards

    await each(sides, thanks_after_an_answer)
    cards = len(drive.cards())
    await drive.restart()
    third: dict[str, str] = {}

    async def resolved_by_the_customer(side: Side) -> None:
        thread = threads[side.platform]
        life = await drive.conversation(side, thread)
        assert life.status is ConversationStatus.RESOLVED, "resolved by the customer, and listed"
        assert await drive.audit(life.id, "no_reply") == ["no reply needed (cheap rule: thanks)"]
        assert len(side.replies(thread)) == 1

    await each(sides, resolved_by_the_customer)
    assert len(drive.cards()) == cards, "no card for a thank-you"

    async def a_real_question_after_it(side: Side) -> None:
        thread = threads[side.platform]
        before, calls = len(drive.cards()), len(kimi.completions)
        await side.customer_says(thread, "when will the second mug arrive?")
        third[side.platform] = await drive.new_card(before, "when will the second mug arrive?")
        prompt = json.dumps(kimi.completions[calls]["messages"])
        assert "<outsider_message>" in prompt and outsider_words in prompt, "the outsider's words are context"
        assert (await drive.conversation(side, thread)).status is ConversationStatus.OPEN

    await each(sides, a_real_question_after_it)

    # 4. An edited mention: killed once the edit is taken.
    sunday, saturday, monday = "is the shop open on Sunday?", "is the shop open on Saturday?", "is it open on Monday?"
    edited: dict[str, tuple[str, str]] = {}

    async def edit_while_pending(side: Side) -> None:
        before = len(drive.cards())
        thread = await side.ask(sunday)
        edited[side.platform] = (thread, await drive.new_card(before, sunday))
        await side.edit_question(thread, sunday, saturday)
        await drive.stored(side, thread, saturday)

    cards = len(drive.cards())
    await each(sides, edit_while_pending)
    await drive.restart()

    async def one_card_one_answer(side: Side) -> None:
        thread, old = edited[side.platform]
        await drive.card_says(old, "edited their message")
        fresh = await drive.pending_card(side, thread)
        assert saturday in card_text(fresh)
        await drive.click("approve_draft", draft_id_of(fresh))
        [answer] = await until(lambda: side.replies(thread), f"the answer on {side.platform}", WAIT)
        assert "Saturday" in answer and "Sunday" not in answer
        calls = len(kimi.completions)
        await side.edit_question(thread, saturday, monday)  # after the answer: nothing to draft
        await drive.stored(side, thread, monday)
        assert len(kimi.completions) == calls

    await each(sides, one_card_one_answer)
    assert len(drive.cards()) == cards + 2 * len(sides), "one card per edited question, none after the answer"

    # 5. A card past its SLA: one nudge; killed right after it, the overdue mark comes from the next run.
    nudged: dict[str, str] = {}

    async def undecided(side: Side) -> None:
        before = len(drive.cards())
        await side.ask("do you ship to Norway?")
        nudged[side.platform] = drive.card_ts(await drive.new_card(before, "do you ship to Norway?"))

    await each(sides, undecided)
    for card_ts in nudged.values():
        [nudge] = await until(lambda ts=card_ts: drive.nudges(ts), "the nudge", WAIT)
        assert str(nudge.params["text"]).startswith("<!subteam^SONCALL> This card has waited")
    updates = len(drive.slack.calls_to("chat.update"))
    await drive.restart()

    for card_ts in nudged.values():
        await until(
            lambda ts=card_ts: [
                c
                for c in drive.slack.calls_to("chat.update")[updates:]
                if c.params.get("ts") == ts and "Overdue: waiting" in card_text(c)
            ],
            "the overdue mark from the restarted bot",
            WAIT,
        )
        assert len(drive.nudges(card_ts)) == 1, "one nudge, not repeated by the next run"

    # Across the whole drive: one card per draft, at most one nudge per card, one answer per question.
    drafts = [draft_id_of(c) for c in drive.cards()]
    assert len(drafts) == len(set(drafts))
    for card in drive.cards():
        assert card.response is not None
        assert len(drive.nudges(str(card.response["ts"]))) <= 1
    for side in sides:
        assert len(side.replies(threads[side.platform])) == 1
        assert len(side.replies(edited[side.platform][0])) == 1
    for run in range(1, drive.bot.runs + 1):
        log = (drive.bot.home / f"run{run}.stderr").read_text()
        assert " ERROR " not in log and "Traceback" not in log, log
