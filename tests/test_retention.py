"""Issue 20, point 6: with ``[retention] days`` set, what conversations hold is erased once it is
older than that, by the running bot's retention job, on SQLite and PostgreSQL: text, images,
tool calls and replies go, the audit trail keeps its lines as hashes, and work still in flight is
left whole until it settles."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.events import Attachment
from bot.store import AttachmentRow as StoredImage
from bot.store import AuditEvent, Conversation, Draft, Message, OutboxItem, ProcessedEvent, ToolCall, utcnow
from bot.testing import TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.fakes.files import png
from tests.fakes.slack import FakeSlack
from tests.harness import draft_id_of, running_bot, sample_orders, until
from tests.test_edits import only_a_later_question_gets_a_card

POLICY = """
[retention]
days = 30
"""

PNG = png(16, 16)  # a real image: one the bot cannot read is refused, never stored


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with open_desk(
        tmp_path, kimi, policy=POLICY, database_url=database_url, retention_sweep_seconds=0.1
    ) as opened:
        rows = [dict(r, customer_accounts="") for r in sample_orders()]
        await opened.import_orders(
            [dict(r, customer_accounts=opened.account("ana")) if r["order_id"] == "40021" else r for r in rows]
        )
        yield opened


async def rows(desk: TestDesk, *columns: Any) -> list[Any]:
    async with desk.bot.engine.connect() as conn:
        return list((await conn.execute(select(*columns))).all())


async def age_everything(desk: TestDesk, days: int) -> datetime:
    """Make every row of every conversation ``days`` old, as if written then."""
    then = utcnow() - timedelta(days=days)
    async with desk.bot.engine.begin() as conn:
        for model in (Message, Draft, ToolCall, OutboxItem, AuditEvent):
            await conn.execute(update(model).values(created_at=then))
        await conn.execute(update(Conversation).values(created_at=then, updated_at=then))
    return then


async def passes_after(desk: TestDesk, count: int) -> None:
    """Wait until the retention job has made ``count`` more passes (each sees every row)."""
    core = desk.bot.core
    assert core is not None
    target = core.retention.passes + count
    await until(lambda: core.retention.passes >= target, "the retention job's passes")


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def logged_messages(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The messages each pass's INFO line says it erased."""
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.core.retention"]
    assert all(line.startswith("retention: erased what is older than 30 days: ") for line in lines)
    return [int(re.search(r"(\d+) messages", line).group(1)) for line in lines]  # type: ignore[union-attr]


async def test_old_conversations_are_erased_the_audit_keeps_hashes_and_work_in_flight_is_left_whole(
    desk: TestDesk, kimi: FakeKimi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.core.retention")
    kimi.script(
        CallTools([("get_order_status", {"order_id": "40021"})]),
        Reply("Your Desk chair from 40021 was delivered; sorry it broke, Ana."),
    )
    ana = desk.customer("ana", display_name="Ana Diaz")
    said = await ana.says(
        "my chair from order 40021 broke, here is the receipt",
        attachments=[Attachment("receipt.png", "image/png", len(PNG), data=PNG)],
    )
    card = await desk.card_for(said)
    await desk.agent("agent").approve(card)
    await desk.reply_to(said)
    await desk.settle()

    kimi.script(Reply("Bob, your mug is on its way."))
    bob = desk.customer("bob", display_name="Bob Stone")
    waiting = await bob.says("where is my blue mug, order #W2611340?")
    bob_card = await desk.card_for(waiting)  # awaiting review: in flight

    before = {r.id: r for r in await rows(desk, AuditEvent)}
    then = await age_everything(desk, 40)
    await passes_after(desk, 2)

    texts = {r.text for r in await rows(desk, Message.text)}
    assert "[erased]" in texts and not any("chair" in t for t in texts)
    assert any("blue mug" in t for t in texts)  # Bob's conversation is in flight: untouched
    [image] = await rows(desk, StoredImage.data, StoredImage.filename)
    assert image.data == b"" and image.filename == "[erased]"
    drafts = {r.text for r in await rows(desk, Draft.text)}
    assert drafts == {"[erased]", "Bob, your mug is on its way."}
    assert {r.arguments for r in await rows(desk, ToolCall.arguments)} == {"[erased]"}
    assert {r.text for r in await rows(desk, OutboxItem.text)} == {"[erased]"}
    names = {r.customer_name for r in await rows(desk, Conversation.customer_name)}
    assert names == {"[erased]", "Bob Stone"}

    after = {r.id: r for r in await rows(desk, AuditEvent)}
    assert after.keys() == before.keys()
    for line_id, old in before.items():
        new = after[line_id]
        assert (new.kind, new.actor, new.draft_id, new.conversation_id) == (
            old.kind,
            old.actor,
            old.draft_id,
            old.conversation_id,
        )
        assert abs((new.created_at - then).total_seconds()) < 1
        if "blue mug" in old.summary or old.conversation_id == bob_card_conversation(after, bob_card.draft_id):
            assert new.summary == old.summary
        else:
            assert new.summary == sha256(old.summary)
    assert any("chair" in old.summary for old in before.values())

    core = desk.bot.core
    assert core is not None
    assert core.metrics["retention_purged_messages"] == 2  # Ana's message and the reply she got
    assert core.metrics["retention_purged_images"] == 1
    assert sum(logged_messages(caplog)) == 2 and len(logged_messages(caplog)) >= 2  # one line a pass

    # Once Bob's conversation settles, the next passes erase what of it is old; the reply he got
    # just now stays until it is 30 days old.
    await desk.agent("agent").approve(bob_card)
    await desk.reply_to(waiting)
    await desk.settle()
    await passes_after(desk, 2)
    assert sorted(r.text for r in await rows(desk, Message.text)) == [
        "Bob, your mug is on its way.",
        "[erased]",
        "[erased]",
        "[erased]",
    ]
    assert core.metrics["retention_purged_messages"] == 3


def bob_card_conversation(lines: dict[int, Any], draft_id: str) -> str:
    return next(line.conversation_id for line in lines.values() if line.draft_id == draft_id)


async def test_delivery_ids_are_forgotten_after_a_week_and_a_late_redelivery_still_answers_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database_url: str
) -> None:
    # The policy keeps conversations forever; the platforms' delivery ids go after a week all the
    # same (the table would otherwise grow with every message for as long as the bot runs).
    async with running_bot(tmp_path, kimi, slack, database_url=database_url, retention_sweep_seconds=0.1) as harness:
        kimi.script(Reply("Your mug is on its way."))
        asked = await harness.mention("where is my blue mug, order #W2611340?")
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        await harness.wait_replies(asked["event"]["ts"])
        async with harness.bot.engine.begin() as conn:
            old = (await conn.execute(update(ProcessedEvent).values(received_at=utcnow() - timedelta(days=8)))).rowcount
        assert old >= 1
        core = harness.bot.core
        assert core is not None
        await until(lambda: core.metrics["deliveries_forgotten"] >= old, "the retention job forgetting the old ids")
        async with harness.bot.engine.connect() as conn:
            assert list((await conn.execute(select(ProcessedEvent.event_id))).scalars()) == []

        # Slack's copy of that old event, delivered again: the stored message still answers it.
        assert (await harness.sender.event(asked, retry_num=1)).status_code == 200
        await only_a_later_question_gets_a_card(harness, 1)
        assert len(harness.replies(asked["event"]["ts"])) == 1
