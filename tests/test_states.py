"""States move only as their transition tables allow, through the repositories' compare-and-set
functions; the columns hold nothing else; an operator filters conversations by any draft state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.cli_ops import EXIT_OK, EXIT_USAGE
from bot.domain.outcome import AuditLine
from bot.domain.states import (
    ACTION_TRANSITIONS,
    DRAFT_TRANSITIONS,
    OUTBOX_TRANSITIONS,
    ActionStatus,
    DraftStatus,
    IllegalTransition,
    OutboxStatus,
)
from bot.events import Author, InboundMessage, MessageKind, ThreadRef
from bot.store import Draft, create_engine, records, upgrade_database
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from tests.processes import supportbot
from tools.money import Money
from tools.refunds import OrderFacts, RefundProposal


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}")
    await upgrade_database(engine)
    yield engine
    await engine.dispose()


async def _draft_for(conn: AsyncConnection, customer: str, now: datetime) -> str:
    """A customer's message and its draft, as intake stores them."""
    message = InboundMessage(
        event_id=f"Ev-{customer}",
        thread=ThreadRef("slack", "T1", "C1", f"{customer}.0"),
        message_id=f"{customer}.0",
        author=Author(customer, customer.title()),
        text="where is my refund?",
        kind=MessageKind.MENTION,
        sent_at=now,
    )
    conversation_id = await conversation_rows.upsert_conversation(conn, message, now)
    message_id = await conversation_rows.add_customer_message(conn, conversation_id, message, message.text, now, [])
    return await draft_rows.insert_draft(conn, conversation_id, message_id, now)


def _refund(action_id: str, draft_id: str, status: ActionStatus) -> records.StoredAction:
    order = OrderFacts("#W1", "c-1", "delivered", "USD", 5000, 0, None)
    return records.StoredAction(
        id=action_id,
        draft_id=draft_id,
        kind="refund",
        proposal=RefundProposal(order, Money.parse("5.00", "USD")),
        status=status,
        allowed=True,
        verdict="",
        approvals=[],
        idempotency_key=f"refund-{action_id}",
        result={},
    )


def test_every_state_has_its_row_in_its_transition_table() -> None:
    for states, table in (
        (DraftStatus, DRAFT_TRANSITIONS),
        (ActionStatus, ACTION_TRANSITIONS),
        (OutboxStatus, OUTBOX_TRANSITIONS),
    ):
        assert set(table) == set(states), f"{states.__name__} states without a row"


async def test_a_move_the_table_does_not_allow_raises_and_writes_nothing(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        draft_id = await _draft_for(conn, "kim", now)
        await records.add_actions(conn, [_refund("a1", draft_id, ActionStatus.PROPOSED)], now)

    async with engine.begin() as conn:
        with pytest.raises(IllegalTransition, match="a draft cannot move from drafting to sent"):
            await draft_rows.transition(conn, draft_id, DraftStatus.DRAFTING, DraftStatus.SENT, now)
        with pytest.raises(IllegalTransition, match="a proposed action cannot move from proposed to executed"):
            await records.move_action(conn, "a1", ActionStatus.PROPOSED, ActionStatus.EXECUTED, result={})
        with pytest.raises(IllegalTransition, match="a proposed action cannot start as approved"):
            await records.add_actions(conn, [_refund("a2", draft_id, ActionStatus.APPROVED)], now)
        assert await draft_rows.status_of(conn, draft_id) is DraftStatus.DRAFTING
        assert [a.status for a in await records.actions_of(conn, draft_id)] == [ActionStatus.PROPOSED]

        # The allowed moves go through, once: the second writer finds the row moved.
        assert await records.move_action(conn, "a1", ActionStatus.PROPOSED, ActionStatus.APPROVED, approvals=["U1"])
        assert not await records.move_action(conn, "a1", ActionStatus.PROPOSED, ActionStatus.REJECTED)
        [action] = await records.actions_of(conn, draft_id)
        assert (action.status, action.approvals) == (ActionStatus.APPROVED, ["U1"])


async def test_a_status_column_holds_only_its_states(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        draft_id = await _draft_for(conn, "kim", now)

    with pytest.raises(StatementError, match="'archived' is not among the defined enum values"):
        async with engine.begin() as conn:  # through the models: refused before SQL
            await conn.execute(Draft.__table__.update().values(status="archived"))
    with pytest.raises(IntegrityError, match="ck_drafts_status"):
        async with engine.begin() as conn:  # around them: refused by the database
            await conn.execute(text("UPDATE drafts SET status = 'archived' WHERE id = :id"), {"id": draft_id})
    async with engine.connect() as conn:
        assert await conn.scalar(select(Draft.status)) is DraftStatus.DRAFTING


async def test_an_operator_lists_the_conversations_whose_reply_failed_to_send(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        failed = await _draft_for(conn, "kim", now)
        await _draft_for(conn, "ana", now)  # still drafting
        for current, target in (
            (DraftStatus.DRAFTING, DraftStatus.AWAITING_REVIEW),
            (DraftStatus.AWAITING_REVIEW, DraftStatus.APPROVED),
            (DraftStatus.APPROVED, DraftStatus.SEND_FAILED),  # as the dispatcher records a refused post
        ):
            assert await draft_rows.transition(conn, failed, current, target, now)
    url = str(engine.url)

    listed = await asyncio.to_thread(supportbot, tmp_path, "conversations", "--state", "send_failed", DATABASE_URL=url)

    assert listed.returncode == EXIT_OK, listed.stderr
    [header, row] = listed.stdout.splitlines()
    assert "STATE" in header and " send_failed " in row and "Kim" in row

    misspelt = await asyncio.to_thread(
        supportbot, tmp_path, "conversations", "--state", "sent_failed", DATABASE_URL=url
    )
    assert misspelt.returncode == EXIT_USAGE
    [error] = [line for line in misspelt.stderr.splitlines() if "error:" in line]
    assert error.startswith("supportbot conversations: error: argument --state: invalid choice: 'sent_failed'")
    assert "'send_failed'" in error and "Traceback" not in misspelt.stderr


async def test_an_operator_audits_a_conversation_by_its_short_id_typed_in_capitals(
    tmp_path: Path, database_url: str
) -> None:
    engine = create_engine(database_url)
    await upgrade_database(engine)
    try:
        async with engine.begin() as conn:
            draft_id = await _draft_for(conn, "kim", datetime.now(UTC))
            conversation_id = await conn.scalar(select(Draft.conversation_id).where(Draft.id == draft_id))
            line = AuditLine(str(conversation_id), draft_id, "message", "kim", "where is my refund?")
            await records.add_audit(conn, [line], datetime.now(UTC))
    finally:
        await engine.dispose()

    short = next(draft_id[:n] for n in range(8, 33) if not draft_id[:n].isdigit())  # a letter to capitalise
    audit = await asyncio.to_thread(supportbot, tmp_path, "audit", short.upper(), DATABASE_URL=database_url)

    assert audit.returncode == EXIT_OK, audit.stderr
    assert "where is my refund?" in audit.stdout
