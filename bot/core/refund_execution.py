"""Approved refunds carried out right before their reply is posted: THE refund rule once more
(:func:`bot.approval.refusal_at_execution`), then each refund through the order backend with its
idempotency key, its outcome and audit line written in one transaction. The dispatcher decides what
a held reply does (wait and retry, or fail with the card saying why)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bot.approval import refusal_at_execution
from bot.core.timing import WorkTiming
from bot.domain.outcome import AuditLine
from bot.domain.states import ActionStatus
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.store import Database, records, utcnow
from bot.store.conversations import ConversationState
from bot.store.records import StoredAction
from tools import ToolError
from tools.orders import OrderBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeldReply:
    """Why a reply does not go now: ``retry`` (the backend was unavailable) or never (refused,
    failed)."""

    reason: str
    retry: bool = False


class RefundExecutor:
    """Executes a draft's approved refunds, each exactly once."""

    def __init__(
        self, db: Database, policy: PolicyStore, orders: OrderBackend, counters: Counter[str], timing: WorkTiming
    ) -> None:
        self.db = db
        self.policy = policy
        self.orders = orders
        self.counters = counters
        self.timing = timing

    async def execute(
        self,
        conversation_id: str,
        conversation: ConversationState | None,
        actions: list[StoredAction],
        *,
        attempts: int,
    ) -> HeldReply | None:
        """Run ``actions`` (the reply's ``attempts``-th try); None: every refund went through."""
        if actions and conversation is not None:  # THE refund rule once more, right before money moves
            refusal = await refusal_at_execution(
                self.db, self.orders, self.policy.current, conversation, actions, utcnow()
            )
            if refusal:
                return HeldReply(f"refund refused at execution: {refusal}")
        for action in actions:
            error = await self._execute(conversation_id, action)
            if error is not None:
                if error.code == "unavailable" and attempts < self.timing.reply_attempts:
                    return HeldReply(f"refund backend unavailable: {error.message}", retry=True)
                return HeldReply(f"refund failed: {error.message}")
        return None

    async def _execute(self, conversation_id: str, action: StoredAction) -> ToolError | None:
        """Carry out one approved refund, idempotently. Returns the error, if any."""
        refund = action.proposal
        try:
            receipt = await self.orders.execute_refund(
                refund.order_id, refund.due.cents, refund.reason, action.idempotency_key
            )
        except ToolError as exc:
            error: ToolError | None = exc
            result: dict[str, Any] = {"error": exc.message}
            status = ActionStatus.APPROVED if exc.code == "unavailable" else ActionStatus.FAILED
        else:
            error = None
            result = {
                "refund_id": receipt.refund_id,
                "amount_cents": receipt.amount_cents,
                "replayed": receipt.replayed,
            }
            status = ActionStatus.EXECUTED
        await self._record_execution(conversation_id, action, status, result)
        if error is None:
            self.counters["refunds_executed"] += 1
            log_event(
                log,
                "refund_executed",
                conversation=conversation_id,
                draft=action.draft_id,
                order=refund.order_id,
                amount_cents=refund.due.cents,
                refund=result.get("refund_id"),
            )
        return error

    async def _record_execution(
        self, conversation_id: str, action: StoredAction, status: ActionStatus, result: dict[str, Any]
    ) -> None:
        """Write one refund attempt's outcome: the action's new state and its audit line."""
        refund = action.proposal
        now = utcnow()
        summary = (
            f"refund {refund.due.format(currency=False)} on {refund.order_id} executed as {result.get('refund_id')}"
            if status is ActionStatus.EXECUTED
            else f"refund on {refund.order_id} failed: {result['error']}"
        )
        async with self.db.write() as conn:
            if status is ActionStatus.APPROVED:  # the backend was unavailable: tried again with the reply
                await records.note_attempt(conn, action.id, result)
            else:
                await records.move_action(
                    conn,
                    action.id,
                    ActionStatus.APPROVED,
                    status,
                    result=result,
                    executed_at=now if status is ActionStatus.EXECUTED else None,
                )
            await records.add_audit(
                conn,
                [
                    AuditLine(
                        conversation_id,
                        action.draft_id,
                        "action",
                        "executor",
                        summary,
                        {"idempotency_key": action.idempotency_key, **result},
                    )
                ],
                now,
            )
