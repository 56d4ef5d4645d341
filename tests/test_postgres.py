"""Several instances on one PostgreSQL database: clicks that land on different instances still
post one reply, and an event redelivered to another instance makes no second card.

Runs when ``SUPPORTBOT_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one); each test
gets a fresh database on it."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import Supportbot
from bot.store import Message
from tests.fakes.files import FakeFileHost, png
from tests.fakes.kimi import FakeKimi, Hang
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import (
    SlackSender,
    app_mention,
    block_actions,
    message,
    message_changed,
    message_deleted,
)
from tests.harness import (
    CUSTOMER_CHANNEL,
    REVIEW_CHANNEL,
    SIGNING_SECRET,
    SLACK_TOKEN,
    Harness,
    card_text,
    draft_id_of,
    running_instances,
    settings_for,
    undelivered_mention,
    until,
    wait_until,
)
from tests.processes import BotProcess, seed_orders

SERVER = os.environ.get("SUPPORTBOT_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="set SUPPORTBOT_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")


async def test_two_instances_share_the_work_and_post_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    instances = [Supportbot(settings_for(tmp_path, kimi, slack, database_url=database)) for _ in range(2)]
    for instance in instances:
        await instance.start()
    try:
        first = Harness(instances[0], slack, kimi, tmp_path)
        await first.import_orders()
        senders = [SlackSender(f"http://127.0.0.1:{i.port}/slack/events", SIGNING_SECRET) for i in instances]

        # Slack retries a slow delivery; the retry lands on the other instance.
        envelope = app_mention("<@UBOT> where is my order #W2611340?")
        slack.ingest_event(envelope)
        responses = await asyncio.gather(senders[0].event(envelope), senders[1].event(envelope, retry_num=1))
        assert [r.status_code for r in responses] == [200, 200]
        [card] = await first.wait_cards(1)

        # Three agents click Approve on whichever instance their click reaches.
        draft_id = draft_id_of(card)
        clicks = [
            senders[n % 2].action(block_actions("approve_draft", draft_id, user=user, channel=REVIEW_CHANNEL))
            for n, user in enumerate(("U333", "U444", "U555"))
        ]
        await asyncio.gather(*clicks)
        thread_ts = envelope["event"]["ts"]
        await first.wait_replies(thread_ts)
        for instance in instances:
            assert instance.core is not None
            await instance.core.background.settle(5)
        assert len(first.replies(thread_ts)) == 1
        assert len(first.cards()) == 1
    finally:
        for instance in instances:
            await instance.stop()


async def test_an_edit_delivered_to_both_instances_before_its_message_makes_one_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    async with running_instances(tmp_path, kimi, slack, database) as (first, senders):
        # The mention's delivery failed; Slack's two deliveries of the edit (message_changed and
        # the edited app_mention) land on both instances at once, then the original's retry.
        original, ts = undelivered_mention(slack, "<@UBOT> is the shop open on Sunday?")
        edits = (
            message_changed(
                CUSTOMER_CHANNEL, ts, "<@UBOT> is the shop open on Saturday?", "<@UBOT> is the shop open on Sunday?"
            ),
            app_mention("<@UBOT> is the shop open on Saturday?", ts=ts, edited=True),
        )
        responses = await asyncio.gather(*(sender.event(e) for sender, e in zip(senders, edits, strict=True)))
        assert [r.status_code for r in responses] == [200, 200]
        assert (await senders[0].event(original, retry_num=1)).status_code == 200

        [card] = await first.wait_cards(1)
        assert "Saturday" in card_text(card)
    assert len(first.cards()) == 1, "one card, once both instances settled"
    engine = create_async_engine(database)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(select(func.count()).where(Message.platform_message_id == ts))
    finally:
        await engine.dispose()
    assert stored == 1, "the question is in the conversation once"


async def test_a_message_deleted_on_one_instance_before_its_retry_reaches_the_other_is_never_drafted(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    async with running_instances(tmp_path, kimi, slack, database) as (first, senders):
        original, ts = undelivered_mention(slack, "<@UBOT> is the shop open on Sunday?")
        deleted = message_deleted(CUSTOMER_CHANNEL, ts, previous_text=original["event"]["text"])
        assert (await senders[0].event(deleted)).status_code == 200
        assert (await senders[1].event(original, retry_num=1)).status_code == 200

        # The proof the retry did nothing: the next question is the first card.
        await senders[1].event(app_mention("<@UBOT> do you ship to Norway?"))
        [card] = await first.wait_cards(1)
        assert "Norway" in card_text(card)
    assert len(first.cards()) == 1, "no card for the deleted question, once both instances settled"


async def test_work_an_instance_dropped_mid_draft_is_finished_by_the_other_once_its_lease_expires(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    settings = settings_for(tmp_path, kimi, slack, database_url=database, work_lease_seconds=1.0, sweep_seconds=0.2)
    dying, survivor = Supportbot(settings), Supportbot(settings)
    await dying.start()
    await survivor.start()
    try:
        first = Harness(dying, slack, kimi, tmp_path)
        await first.import_orders()
        kimi.script(Hang(30))  # the dying instance's model call never returns
        sender = SlackSender(f"http://127.0.0.1:{dying.port}/slack/events", SIGNING_SECRET)
        assert (await sender.event(app_mention("<@UBOT> where is my order #W2611340?"))).status_code == 200
        await wait_until(lambda: [r for r in kimi.requests if r.path.endswith("/chat/completions")])
        assert dying.core is not None
        await dying.core.background.close()  # the instance is gone; its lease is left behind in PostgreSQL
        [card] = await Harness(survivor, slack, kimi, tmp_path).wait_cards(1, timeout=15)
        assert "approve_draft" in card_text(card)
        assert survivor.core is not None
        await survivor.core.background.settle(5)
        assert len(first.cards()) == 1
    finally:
        await dying.stop()
        await survivor.stop()


async def test_an_image_is_downloaded_once_by_whichever_instance_drafts_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    image_bytes = png()
    async with FakeFileHost(token=SLACK_TOKEN) as files_host:
        settings = settings_for(tmp_path, kimi, slack, database_url=database, slack_files_url=files_host.origin)
        instances = [Supportbot(settings) for _ in range(2)]
        for instance in instances:
            await instance.start()
        try:
            first = Harness(instances[0], slack, kimi, tmp_path)
            await first.import_orders()
            envelope = app_mention(
                "<@UBOT> my mug from #W2611340 arrived like this",
                files=[files_host.slack_file("broken-mug.png", image_bytes, "image/png")],
            )
            senders = [SlackSender(f"http://127.0.0.1:{i.port}/slack/events", SIGNING_SECRET) for i in instances]
            slack.ingest_event(envelope)
            responses = await asyncio.gather(senders[0].event(envelope), senders[1].event(envelope, retry_num=1))
            assert [r.status_code for r in responses] == [200, 200]
            [card] = await first.wait_cards(1)
            for instance in instances:
                assert instance.core is not None
                await instance.core.background.settle(5)
        finally:
            for instance in instances:
                await instance.stop()
    assert "broken-mug.png" in card_text(card) and "not downloaded" not in card_text(card)
    assert len(files_host.requests) == 1
    assert "data:image/png;base64," in str(kimi.completions[0]["messages"])


async def test_two_instances_racing_over_an_overdue_card_remind_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    # Issue 19 point 7: both instances' SLA passes see the card due at once; one reminder, one mark.
    (tmp_path / "policy.toml").write_text(
        '[escalation.slack]\non_call = "SONCALL"\n[desk]\nfirst_response_minutes = 60\n'
    )
    instances = [Supportbot(settings_for(tmp_path, kimi, slack, database_url=database)) for _ in range(2)]
    for instance in instances:
        await instance.start()
    try:
        first = Harness(instances[0], slack, kimi, tmp_path)
        await first.import_orders()
        sender = SlackSender(f"http://127.0.0.1:{instances[0].port}/slack/events", SIGNING_SECRET)
        envelope = app_mention("<@UBOT> where is my order #W2611340?")
        slack.ingest_event(envelope)
        assert (await sender.event(envelope)).status_code == 200
        [card] = await first.wait_cards(1)
        card_ts = str(card.response["ts"]) if card.response else ""
        for instance in instances:  # the card's reference is recorded just after it shows: only then is it due
            assert instance.core is not None
            await instance.core.background.settle(10)

        later = datetime.now(UTC) + timedelta(hours=3)  # past the reminder and the overdue mark
        passes = [i.core.sla.check(now=later) for i in instances if i.core is not None for _ in range(4)]
        await asyncio.gather(*passes)

        reminders = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == card_ts]
        assert len(reminders) == 1 and str(reminders[0].params["text"]).startswith("<!subteam^SONCALL>")
        assert sum(i.core.metrics["cards_overdue"] for i in instances if i.core is not None) == 1
    finally:
        for instance in instances:
            await instance.stop()


async def test_the_installed_bot_takes_a_customers_messages_and_the_agents_clicks_on_one_conversation_at_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    # From outside, on PostgreSQL: each customer writes again while an agent approves, claims and
    # takes over their card, all at the same instant. Every request is answered, and the bot's log
    # holds no aborted transaction (a deadlock would refuse a message or a click).
    bot = BotProcess(tmp_path, kimi.base_url, slack, DATABASE_URL=database)
    await seed_orders(database, tmp_path / "orders.jsonl")
    await bot.start()
    try:
        for n in range(6):
            mention = app_mention(f"<@UBOT> where is my order #W2611340? (ticket {n})", user=f"U9{n:02d}")
            assert (await bot.sender.event(mention)).status_code == 200

            def card_of(n: int = n) -> list[Any]:
                return [c for c in bot.cards() if f"(ticket {n})" in card_text(c) and "approve_draft" in card_text(c)]

            [card] = (await until(card_of, f"the card of ticket {n}"))[:1]
            draft_id, ts = draft_id_of(card), mention["event"]["ts"]
            clicks = [
                block_actions(action, draft_id, user="U333", channel=REVIEW_CHANNEL)
                for action in ("approve_draft", "claim_conversation", "take_over_conversation")
            ]
            follow_ups = [message(text, user=f"U9{n:02d}", thread_ts=ts) for text in ("any news?", "hello?")]
            answers = await asyncio.gather(
                *(bot.sender.action(click) for click in clicks), *(bot.sender.event(m) for m in follow_ups)
            )
            assert [a.status_code for a in answers] == [200] * 5
    finally:
        await bot.stop()  # SIGTERM: the work in flight finishes first
    log = bot.stderr_path.read_text()
    assert "deadlock" not in log and "Traceback" not in log, log[-3000:]
