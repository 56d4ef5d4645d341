"""Record: a planned drafting outcome stored in the caller's one transaction.

The draft leaves ``drafting`` (compare-and-set on the lease), the usage is ledgered whatever
happens, and then, only when the draft was still ours, what the outcome carries: tool calls,
proposed actions, the conversation's facts, a follow-up draft, the audit lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.category import category_of, signals_of
from bot.domain.outcome import DraftOutcome, FactsUpdate, Failed, NoReply, Ready, Retry, Spend, ToolCallRecord
from bot.store import conversations, drafts, life, records
from bot.store.cards import CallLine, DraftCard, draft_card
from bot.store.drafts import ClaimedDraft
from bot.store.records import StoredAction
from bot.store.schema import Conversation, UsageRecord, new_id


@dataclass(frozen=True, slots=True)
class Recorded:
    """What storing an outcome did: the draft as its card now shows it (None: it was superseded
    while drafting and nothing but the usage was kept), the follow-up draft of a retry."""

    card: DraftCard | None
    new_draft: str | None = None


async def record(
    conn: AsyncConnection,
    claimed: ClaimedDraft,
    owner: str,
    outcome: DraftOutcome,
    now: datetime,
    *,
    policy_version: str = "",
) -> Recorded:
    """Store ``outcome`` of the draft ``claimed`` whose lease ``owner`` holds, written under the
    policy ``policy_version``. A ready or failed draft keeps its lease for its card; a superseded
    one, one that needs no reply (or one that was no longer ours) gives it back."""
    values = {
        **_draft_values(outcome, now),
        "policy_version": policy_version,
        "category": category_of(signals_of(outcome)).value,
    }
    await life.lock(conn, claimed.conversation_id)
    version = await drafts.finish(conn, claimed.id, owner, outcome.status, values)
    await records.add_usage(conn, usage_rows(claimed, outcome.spent, now))
    if version is None or isinstance(outcome, Retry | NoReply):
        await drafts.release(conn, claimed.id, owner)
    if version is None:
        return Recorded(None)
    actions = await _add_actions(conn, claimed.id, outcome, now) if isinstance(outcome, Ready) else ()
    calls = () if isinstance(outcome, Failed) else outcome.tool_calls
    await records.add_tool_calls(conn, _tool_call_rows(claimed.id, calls, now))
    columns = {**values, "id": claimed.id, "status": outcome.status, "revision": claimed.revision, "version": version}
    recorded = Recorded(draft_card(columns, tuple(CallLine(c.name, c.summary, c.error) for c in calls), actions))
    if isinstance(outcome, Retry):
        fresh = await drafts.insert_draft(
            conn,
            claimed.conversation_id,
            claimed.message_id,
            now,
            revision=claimed.revision + 1,
            instruction=outcome.instruction,
        )
        recorded = Recorded(recorded.card, new_draft=fresh)
    if not isinstance(outcome, NoReply) and outcome.facts is not None:
        await _save_facts(conn, claimed.conversation_id, outcome.facts, now)
    await records.add_audit(conn, outcome.audit, now)
    return recorded


async def spent_since(conn: AsyncConnection, start: datetime) -> int:
    """What the model calls cost since ``start``, in micro-USD (the daily budget's measure)."""
    spent = await conn.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost_microusd), 0)).where(UsageRecord.created_at >= start)
    )
    return int(spent or 0)


async def spent_by_customer_since(conn: AsyncConnection, platform: str, customer_id: str, start: datetime) -> int:
    """What the model calls for one customer's conversations cost since ``start``, in micro-USD."""
    spent = await conn.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost_microusd), 0))
        .join(Conversation, Conversation.id == UsageRecord.conversation_id)
        .where(
            UsageRecord.created_at >= start,
            Conversation.platform == platform,
            Conversation.customer_id == customer_id,
        )
    )
    return int(spent or 0)


async def spend(conn: AsyncConnection, *where: Any) -> tuple[int, int]:
    """What the model calls matching ``where`` used: tokens (prompt and completion) and micro-USD."""
    u = UsageRecord
    tokens = func.coalesce(func.sum(u.prompt_tokens + u.completion_tokens), 0)
    row = (await conn.execute(select(tokens, func.coalesce(func.sum(u.cost_microusd), 0)).where(*where))).one()
    return int(row[0]), int(row[1])


async def conversation_spend(conn: AsyncConnection, conversation_id: str) -> tuple[int, int]:
    """What a conversation's model calls used so far: tokens and micro-USD."""
    return await spend(conn, UsageRecord.conversation_id == conversation_id)


def usage_rows(claimed: ClaimedDraft, spent: Sequence[Spend], now: datetime) -> list[dict[str, Any]]:
    """The usage ledger's rows for what a draft's run spent."""
    return [
        {
            "conversation_id": claimed.conversation_id,
            "draft_id": claimed.id,
            "purpose": s.purpose,
            "model": s.model,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "cached_tokens": s.cached_tokens,
            "cost_microusd": s.cost_microusd,
            "created_at": now,
        }
        for s in spent
    ]


def _draft_values(outcome: DraftOutcome, now: datetime) -> dict[str, Any]:
    if isinstance(outcome, Ready):
        u = outcome.usage
        return {
            "text": outcome.text,
            "model": outcome.model,
            "notice": outcome.notice,
            "escalation": outcome.escalation,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cached_tokens": u.cached_tokens,
            "cost_microusd": u.cost_microusd,
            "guard_flags": list(outcome.flags),
            "updated_at": now,
        }
    if isinstance(outcome, Retry):
        return {"text": outcome.text, "notice": outcome.notice, "updated_at": now}
    if isinstance(outcome, NoReply):
        return {"model": outcome.model, "notice": outcome.notice, "updated_at": now}
    return {"failure": outcome.failure, "model": outcome.model, "escalation": outcome.escalation, "updated_at": now}


async def _add_actions(conn: AsyncConnection, draft_id: str, outcome: Ready, now: datetime) -> tuple[StoredAction, ...]:
    actions = []
    for refund in outcome.refunds:
        action_id = new_id()
        actions.append(
            StoredAction(
                id=action_id,
                draft_id=draft_id,
                kind="refund",
                proposal=refund.proposal,
                status=refund.status,
                allowed=refund.verdict.allowed,
                verdict=refund.verdict.describe(),
                approvals=[],
                idempotency_key=f"refund-{action_id}",
                result={},
            )
        )
    await records.add_actions(conn, actions, now)
    return tuple(actions)


def _tool_call_rows(draft_id: str, calls: Sequence[ToolCallRecord], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "draft_id": draft_id,
            "name": r.name,
            "arguments": r.arguments,
            "result": r.result[:4000],
            "summary": r.summary,
            "error": r.error,
            "duration_ms": r.duration_ms,
            "created_at": now,
        }
        for r in calls
    ]


async def _save_facts(conn: AsyncConnection, conversation_id: str, update: FactsUpdate, now: datetime) -> None:
    await conversations.save_facts(
        conn, conversation_id, update.facts, update.failed_drafts, now, dict(update.identity), update.notes
    )
