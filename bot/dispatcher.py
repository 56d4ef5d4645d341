"""The outbox dispatcher: posts approved replies exactly once, after executing approved
actions exactly once.

A row is claimed with a conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL picks
candidates), so one dispatcher among several instances owns it. A claim left behind by a crash
expires after a lease; the next claimer first asks the platform whether the reply is already
there. Refunds run before the reply, with an idempotency key per action: a refund that fails
stops the reply, and the card says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from bot.approval import refusal_at_execution
from bot.store import Conversation, Draft, Message, OutboxItem, ProposedAction, audit, utcnow
from tools import ToolError

if TYPE_CHECKING:
    from bot.service import Copilot

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 6


class OutboxDispatcher:
    """Claims due outbox rows and delivers them."""

    def __init__(self, core: Copilot, *, poll_seconds: float = 1.0) -> None:
        self.core = core
        self.poll_seconds = poll_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    async def run(self) -> None:
        """Deliver forever: on every approval, and every ``poll_seconds`` for retries and
        rows other instances left behind."""
        while True:
            try:
                await self.deliver_due()
                await self.core.post_missing_cards()
            except Exception:
                log.exception("outbox pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.core.outbox_ready.wait(), timeout=self.poll_seconds)
            self.core.outbox_ready.clear()

    async def deliver_due(self) -> int:
        delivered = 0
        while True:
            item_id = await self._claim()
            if item_id is None:
                return delivered
            await self._deliver(item_id)
            delivered += 1

    async def _claim(self) -> int | None:
        now = utcnow()
        due = or_(
            (OutboxItem.status == "pending") & (OutboxItem.next_attempt_at <= now),
            (OutboxItem.status == "sending") & (OutboxItem.claimed_at < now - LEASE),
        )
        async with self.core.sessions.begin() as session:
            query = (
                select(OutboxItem.id, OutboxItem.status, OutboxItem.attempts)
                .where(due)
                .order_by(OutboxItem.id)
                .limit(1)
            )
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = (await session.execute(query)).first()
            if row is None:
                return None
            claimed = await session.execute(
                update(OutboxItem)
                .where(
                    OutboxItem.id == row.id,
                    OutboxItem.status == row.status,
                    OutboxItem.attempts == row.attempts,
                )
                .values(status="sending", claimed_by=self.worker_id, claimed_at=now, attempts=row.attempts + 1)
            )
            if getattr(claimed, "rowcount", 0) != 1:
                return None
            return int(row.id)

    async def _deliver(self, item_id: int) -> None:
        async with self.core.reads() as session:
            item = await session.get(OutboxItem, item_id)
            assert item is not None
            draft = await session.get(Draft, item.draft_id)
            assert draft is not None
            conversation = await session.get(Conversation, draft.conversation_id)
            assert conversation is not None
            actions = list(
                await session.scalars(
                    select(ProposedAction).where(
                        ProposedAction.draft_id == draft.id, ProposedAction.status == "approved"
                    )
                )
            )
        thread = conversation.thread_ref
        channel = self.core.channels.get(thread.platform)
        if channel is None:
            await self._retry(item_id, f"{thread.platform} is not connected")
            return
        key = f"draft-{draft.id}"
        if actions:  # guards (issue 8): THE refund rule once more, right before money moves
            refusal = await refusal_at_execution(
                self.core.sessions, self.core.orders, self.core.policy.current, conversation, actions, utcnow()
            )
            if refusal:
                await self._fail(item_id, draft.id, f"refund refused at execution: {refusal}")
                return
        for action in actions:
            error = await self._execute(action)
            if error is not None:
                if error.code == "unavailable" and item.attempts < MAX_ATTEMPTS:
                    await self._retry(item_id, f"refund backend unavailable: {error.message}")
                    return
                await self._fail(item_id, draft.id, f"refund failed: {error.message}")
                return
        try:
            existing = await channel.find_reply(thread, key) if item.attempts > 1 else None
            message_id = existing or await channel.post_reply(thread, item.text, idempotency_key=key)
        except Exception as exc:
            log.warning("posting draft %s failed (attempt %d): %s", draft.id, item.attempts, exc)
            if item.attempts >= MAX_ATTEMPTS:
                await self._fail(item_id, draft.id, f"the platform refused the reply ({type(exc).__name__})")
            else:
                await self._retry(item_id, type(exc).__name__)
            return
        now = utcnow()
        async with self.core.sessions.begin() as session:
            await session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id)
                .values(status="sent", platform_message_id=message_id, sent_at=now, last_error="")
            )
            await session.execute(
                update(Draft)
                .where(Draft.id == draft.id)
                .values(status="sent", sent_message_id=message_id, updated_at=now)
            )
            session.add(
                Message(
                    conversation_id=conversation.id,
                    role="assistant",
                    platform_message_id=message_id,
                    text=item.text,
                    draft_id=draft.id,
                    created_at=now,
                )
            )
            audit(session, conversation.id, draft.id, "sent", "dispatcher", f"reply posted as {message_id}")
        self.core.metrics["replies_sent"] += 1
        await self.core.refresh_card(draft.id)

    async def _execute(self, action: ProposedAction) -> ToolError | None:
        """Carry out one approved refund, idempotently. Returns the error, if any."""
        params = action.params
        amount = int(params.get("approved_amount_cents", params.get("amount_cents", 0)))
        try:
            receipt = await self.core.orders.execute_refund(
                str(params["order_id"]), amount, str(params.get("reason", "")), action.idempotency_key
            )
        except ToolError as exc:
            error: ToolError | None = exc
            result: dict[str, Any] = {"error": exc.message}
            status = "approved" if exc.code == "unavailable" else "failed"
        else:
            error = None
            result = {
                "refund_id": receipt.refund_id,
                "amount_cents": receipt.amount_cents,
                "replayed": receipt.replayed,
            }
            status = "executed"
        async with self.core.sessions.begin() as session:
            draft = await session.get(Draft, action.draft_id)
            await session.execute(
                update(ProposedAction)
                .where(ProposedAction.id == action.id)
                .values(status=status, result=result, executed_at=utcnow() if status == "executed" else None)
            )
            if draft is not None:
                summary = (
                    f"refund {amount / 100:.2f} on {params['order_id']} executed as {result.get('refund_id')}"
                    if error is None
                    else f"refund on {params['order_id']} failed: {result['error']}"
                )
                detail = {"idempotency_key": action.idempotency_key, **result}
                audit(session, draft.conversation_id, draft.id, "action", "executor", summary, detail)
        if error is None:
            self.core.metrics["refunds_executed"] += 1
        return error

    async def _retry(self, item_id: int, error: str) -> None:
        async with self.core.sessions.begin() as session:
            item = await session.get(OutboxItem, item_id)
            assert item is not None
            delay = min(300.0, 2.0**item.attempts)
            item.status = "pending"
            item.last_error = error[:500]
            item.next_attempt_at = utcnow() + timedelta(seconds=delay)

    async def _fail(self, item_id: int, draft_id: str, error: str) -> None:
        async with self.core.sessions.begin() as session:
            await session.execute(
                update(OutboxItem).where(OutboxItem.id == item_id).values(status="failed", last_error=error[:500])
            )
            await session.execute(
                update(Draft).where(Draft.id == draft_id).values(status="send_failed", updated_at=utcnow())
            )
            draft = await session.get(Draft, draft_id)
            if draft is not None:
                audit(session, draft.conversation_id, draft_id, "send_failed", "dispatcher", error)
        self.core.metrics["sends_failed"] += 1
        await self.core.refresh_card(draft_id)
