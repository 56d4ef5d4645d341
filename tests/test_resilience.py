"""Nothing is lost or done twice: platform rate limits, crashes between steps, restarts,
timeouts, DMs and Slack Connect, and malformed requests."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update

from bot import metrics
from bot.app import Supportbot
from bot.events import ThreadRef
from bot.ports import CustomerChannel, PlatformFactory
from bot.store import Database, Draft, OutboxItem, create_engine, sessionmaker, utcnow
from bot.testing import MemoryDriver
from bot.testing.memory import Board, MemoryPlatform
from tests.desks import open_desk
from tests.fakes.kimi import FakeKimi, Hang
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import message, sign
from tests.harness import (
    SIGNING_SECRET,
    Harness,
    card_text,
    draft_id_of,
    running_bot,
    settings_for,
    until,
    wait_until,
)


async def test_a_slack_rate_limit_on_the_reply_still_posts_it_once(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    harness.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    await harness.click("approve_draft", draft_id_of(card))
    thread_ts = envelope["event"]["ts"]
    await wait_until(lambda: [c for c in harness.replies(thread_ts) if c.status == 200], timeout=15)
    await harness.settle()
    assert [c.status for c in harness.replies(thread_ts)] == [429, 200], "retried after Retry-After, posted once"


async def test_a_card_update_slack_held_back_never_leaves_the_card_saying_less_than_what_happened(
    harness: Harness,
) -> None:
    # The click's update ("approved") is rate limited and sent again a second later, after the
    # delivery's update ("sent") reached Slack: the older one lands last.
    envelope = await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    harness.slack.fail_next("chat.update", status=429, retry_after=1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(envelope["event"]["ts"])

    shown = await until(
        lambda: [u for u in harness.card_updates(draft_id_of(card)) if u.status == 200][2:],
        "the card updated again after the held-back update landed",
        timeout=15,
    )
    assert "sent to the customer" in card_text(shown[-1])
    await harness.settle()
    assert "sent to the customer" in card_text(harness.card_updates(draft_id_of(card))[-1])


async def test_a_slack_rate_limit_on_the_card_past_the_sdks_retries_is_one_warning_and_the_card_lands(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness.slack.fail_next("chat.postMessage", status=429, retry_after=1, times=4)  # slack_sdk retries 3 times
    await harness.mention("where is #W2611340")

    await until(lambda: [c for c in harness.cards() if c.status == 200], "the card, posted again later", timeout=30)
    assert [c.status for c in harness.cards()] == [429, 429, 429, 429, 200]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in loud] == ["WARNING"], [r.getMessage() for r in loud]
    assert "Slack rate limited the bot (it asked to wait 1.0 s)" in loud[0].getMessage()
    assert not loud[0].exc_info, "no traceback"


async def test_after_a_crash_mid_send_the_reply_is_not_posted_again(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(envelope["event"]["ts"])
    await harness.settle()

    # The process died after Slack accepted the post but before the row said "sent":
    # the claim is left behind and its lease has run out.
    sessions = sessionmaker(harness.bot.engine)
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxItem).values(
                status="sending", lease_until=utcnow() - timedelta(minutes=5), platform_message_id=""
            )
        )
    assert harness.bot.core is not None
    await harness.bot.core.dispatcher.deliver_due()
    await harness.settle()
    assert len(harness.replies(envelope["event"]["ts"])) == 1, "found by its metadata, not posted twice"
    assert harness.slack.calls_to("conversations.replies"), "the platform was asked first"
    async with sessions() as session:
        item = await session.scalar(select(OutboxItem))
    assert item is not None and item.status == "sent" and item.platform_message_id


async def test_a_draft_cut_off_by_a_crash_is_drafted_again_once_its_lease_expires(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    settings = settings_for(tmp_path, kimi, slack, work_lease_seconds=1.0, sweep_seconds=0.2)
    kimi.script(Hang(30))
    async with running_bot(tmp_path, kimi, slack, work_lease_seconds=1.0) as harness:
        await harness.mention("where is #W2611340")
        await wait_until(lambda: [r for r in kimi.requests if r.path.endswith("/chat/completions")])
        assert harness.bot.core is not None
        await harness.bot.core.background.close()  # the process goes down mid-draft, its lease left behind
    assert not slack.calls_to("chat.postMessage")

    restarted_bot = Supportbot(settings)
    await restarted_bot.start()
    try:
        restarted = Harness(restarted_bot, slack, kimi, tmp_path)
        [card] = await restarted.wait_cards(1, timeout=10)
        assert "approve_draft" in card_text(card)
    finally:
        await restarted_bot.stop()


async def test_a_kimi_timeout_is_retried(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    kimi.script(Hang(3))
    async with running_bot(tmp_path, kimi, slack, kimi_timeout_seconds=1.0) as harness:
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1, timeout=20)
        assert "approve_draft" in card_text(card)


async def test_a_direct_message_is_answered_in_the_dm(harness: Harness) -> None:
    envelope = message("hi, where is my order 40021?", channel="D0DM", channel_type="im")
    assert (await harness.sender.event(envelope)).status_code == 200
    [card] = await harness.wait_cards(1)
    assert "direct message" in card_text(card)
    await harness.click("approve_draft", draft_id_of(card))
    [reply] = await wait_until(lambda: harness.replies(None, channel="D0DM"))
    assert "thread_ts" not in reply.params or reply.params["thread_ts"] is None


async def test_slack_connect_channels_are_marked_on_the_card(harness: Harness) -> None:
    await harness.mention("where is 40021", ext_shared=True, channel="C0SHARED")
    [card] = await harness.wait_cards(1)
    assert "Slack Connect" in card_text(card)


async def test_malformed_or_unsigned_requests_do_nothing(harness: Harness) -> None:
    garbage = '{"type": "event_callback", "event": '
    signed = sign(garbage, SIGNING_SECRET, content_type="application/json")
    response = await harness.sender.raw(garbage, signed)
    assert response.status_code in (400, 404)
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(f"{harness.url}/slack/events", content=b"{}")
    assert unsigned.status_code == 401
    # A genuine question afterwards gets its card: the rejected requests had their chance before it.
    await harness.mention("is the shop open on Sunday?")
    [card] = await harness.wait_cards(1)
    await harness.settle()
    assert len(harness.cards()) == 1 and "Sunday" in card_text(card)


async def test_a_card_slack_got_but_the_bot_never_recorded_is_adopted_not_posted_twice(
    harness: Harness,
) -> None:
    await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    draft_id = draft_id_of(card)
    core = harness.bot.core
    assert core is not None
    await harness.settle()
    # The process died after Slack received the card and before the row recorded it.
    async with sessionmaker(harness.bot.engine).begin() as session:
        await session.execute(update(Draft).values(card_ref="", card_desk="", lease_owner="", lease_until=None))
    # The sweeper and a second recovery race each other.
    await asyncio.gather(core.publisher.recover(draft_id), core.publisher.recover(draft_id))
    await harness.settle()
    assert len(harness.cards()) == 1, "the card was found by its metadata, not posted again"
    async with sessionmaker(harness.bot.engine)() as session:
        draft = await session.get(Draft, draft_id)
    assert draft is not None and draft.card_ref == f"{card.response['channel']}:{card.response['ts']}"


async def test_slack_gets_its_200_only_once_the_message_is_stored(harness: Harness) -> None:
    import sqlite3

    database = harness.tmp_path / "supportbot.db"
    # Another writer holds the database for a moment, as a busy moment or a slow disk would.
    blocker = sqlite3.connect(database, isolation_level=None, timeout=10, check_same_thread=False)
    # Taken off the event loop: the bot may be mid-write on this loop, and a blocking wait here
    # would keep it from ever finishing (both would wait out the timeout; CI saw it once).
    await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")

    async def release() -> None:
        await asyncio.sleep(0.5)
        blocker.execute("COMMIT")
        blocker.close()

    releasing = asyncio.create_task(release())
    envelope = await harness.mention("where is #W2611340")  # returns once the 200 arrived
    reader = sqlite3.connect(database)  # a plain reader: WAL never makes it wait
    stored = reader.execute(
        "SELECT text FROM messages WHERE platform_message_id = ?", (envelope["event"]["ts"],)
    ).fetchall()
    reader.close()
    await releasing
    assert stored == [("where is #W2611340",)], "acknowledged means durable: a crash now loses nothing"


async def test_one_hanging_reply_post_never_holds_back_another_threads_reply(harness: Harness) -> None:
    first = await harness.mention("where is #W2611340")
    [card_a] = await harness.wait_cards(1)
    second = await harness.mention("and my order 40021?", user="U444")
    cards = await harness.wait_cards(2)
    card_b = next(c for c in cards if c is not card_a)
    thread_a, thread_b = first["event"]["ts"], second["event"]["ts"]
    # Slack takes the first reply and then never answers (a stuck connection).
    harness.slack.stall_next("chat.postMessage", 20, where=lambda p: p.get("thread_ts") == thread_a)
    await harness.click("approve_draft", draft_id_of(card_a))
    await harness.wait_replies(thread_a)
    await harness.click("approve_draft", draft_id_of(card_b))
    [reply_b] = await harness.wait_replies(thread_b, timeout=5)
    assert reply_b.status == 200
    assert harness.replies(thread_a)[0].status == 200 and len(harness.replies(thread_a)) == 1


async def test_a_write_cut_off_by_cancellation_leaves_the_database_free_for_the_next_writer(tmp_path: Path) -> None:
    """A shutdown (or a timed-out step) cancels a task inside its transaction. SQLAlchemy drops
    that connection; SQLite must not keep its write lock, or every later writer in the process
    (and an operator's ``supportbot`` command beside it) fails with "database is locked"."""
    path = tmp_path / "supportbot.db"
    db = Database(create_engine(f"sqlite+aiosqlite:///{path}"))
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (1, 0)"))

    async def a_long_write() -> None:
        async with db.write() as conn:
            for _ in range(200):
                await conn.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n"))

    def the_lock_is_free() -> bool:
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()
        return True

    try:
        for attempt in range(60):
            writing = asyncio.create_task(a_long_write())
            await asyncio.sleep(0.001 * (attempt % 7))  # cut off at a different statement each time
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
            assert the_lock_is_free(), f"locked after the write cancelled on attempt {attempt}"
        async with db.write() as conn:
            n = (await conn.execute(text("UPDATE counter SET n = n + 1 RETURNING n"))).scalar_one()
        assert n >= 1, "the database still takes writes"
    finally:
        await db.dispose()


class _CrashesOnce:
    """A customer channel whose first reply post hits a bug in the adapter (not a platform error)."""

    def __init__(self, inner: CustomerChannel) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.crashed = False

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("a bug in the adapter")
        return await self.inner.post_reply(thread, text, idempotency_key=idempotency_key, feedback_for=feedback_for)

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        return await self.inner.find_reply(thread, idempotency_key)

    async def show_pending(self, thread: ThreadRef) -> None:
        await self.inner.show_pending(thread)

    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        return await self.inner.open_direct(thread, user_id)


class _CrashingPlatform(MemoryPlatform):
    def __init__(self, name: str, board: Board) -> None:
        super().__init__(name, board)
        self.crashing = _CrashesOnce(super().customer_channel)

    @property
    def customer_channel(self) -> _CrashesOnce:  # type: ignore[override]
        return self.crashing


class _CrashingDriver(MemoryDriver):
    def factories(self, board: Board) -> dict[str, PlatformFactory]:
        self.memory = _CrashingPlatform(self.platform, board)
        return {self.platform: self.memory.factory()}


async def test_a_delivery_that_crashes_is_logged_with_its_draft_counted_and_sent_once_its_lease_expires(
    tmp_path: Path, kimi: FakeKimi, caplog: pytest.LogCaptureFixture
) -> None:
    def failures() -> float:
        return metrics.REGISTRY.get_sample_value("supportbot_background_failures_total", {"task": "deliver"}) or 0.0

    before = failures()
    async with open_desk(tmp_path, kimi, driver=_CrashingDriver(), work_lease_seconds=1.0, sweep_seconds=0.2) as desk:
        said = await desk.customer("kim").says("where is #W2611340")
        card = await desk.card_for(said)
        await desk.agent("ann").approve(card)
        await desk.reply_to(said)
        assert len(desk.replies_to(said)) == 1
    assert failures() == before + 1
    [crash] = [r for r in caplog.records if r.getMessage().startswith("background work deliver failed")]
    assert f"draft={card.draft_id}" in crash.getMessage() and crash.exc_info is not None
