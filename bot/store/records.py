"""Append-only records: the audit trail, tool calls, the usage ledger, decisions and proposed
actions. Each is written in the caller's transaction, many rows in one statement.

A proposed action changes state only through :func:`move_action` / :func:`move_actions_of`, a
compare-and-set on its current status checked against ``ACTION_TRANSITIONS``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.outcome import AuditLine
from bot.domain.states import ACTION_START_STATES, ActionStatus, IllegalTransition, check_transition
from bot.store.proposals import params_of, proposal_of
from bot.store.schema import AuditEvent, Decision, ProposedAction, ToolCall, UsageRecord, table_of
from tools.refunds import RefundProposal

_audit = table_of(AuditEvent)
_tool_calls = table_of(ToolCall)
_usage = table_of(UsageRecord)
_decisions = table_of(Decision)
_actions = table_of(ProposedAction)


@dataclass(frozen=True, slots=True)
class StoredAction:
    """A proposed side effect as stored: a refund, its verdict, approvals and result."""

    id: str
    draft_id: str
    kind: str
    proposal: RefundProposal
    status: ActionStatus
    allowed: bool
    verdict: str
    approvals: list[str]
    idempotency_key: str
    result: dict[str, Any]


async def add_audit(conn: AsyncConnection, lines: Sequence[AuditLine], now: datetime) -> None:
    if not lines:
        return
    await conn.execute(
        _audit.insert(),
        [
            {
                "conversation_id": line.conversation_id,
                "draft_id": line.draft_id,
                "kind": line.kind,
                "actor": line.actor,
                "summary": line.summary,
                "detail": line.detail or {},
                "created_at": now,
            }
            for line in lines
        ],
    )


async def add_tool_calls(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_tool_calls.insert(), list(rows))


async def add_usage(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_usage.insert(), list(rows))


async def add_actions(conn: AsyncConnection, actions: Sequence[StoredAction], now: datetime) -> None:
    for action in actions:
        if ActionStatus(action.status) not in ACTION_START_STATES:
            raise IllegalTransition(f"a proposed action cannot start as {action.status}")
    if actions:
        await conn.execute(_actions.insert(), [_action_row(a, now) for a in actions])


def _action_row(action: StoredAction, now: datetime) -> dict[str, Any]:
    return {
        "id": action.id,
        "draft_id": action.draft_id,
        "kind": action.kind,
        "params": params_of(action.proposal),
        "status": action.status,
        "allowed": action.allowed,
        "verdict": action.verdict,
        "approvals": list(action.approvals),
        "idempotency_key": action.idempotency_key,
        "result": action.result,
        "created_at": now,
    }


async def add_decision(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(_decisions.insert(), values)


def _action(row: Any) -> StoredAction:
    return StoredAction(
        id=row.id,
        draft_id=row.draft_id,
        kind=row.kind,
        proposal=proposal_of(row.params or {}),
        status=ActionStatus(row.status),
        allowed=bool(row.allowed),
        verdict=row.verdict,
        approvals=[str(a) for a in row.approvals or []],
        idempotency_key=row.idempotency_key,
        result=dict(row.result or {}),
    )


async def actions_of(conn: AsyncConnection, draft_id: str, *, status: ActionStatus | None = None) -> list[StoredAction]:
    a = _actions.c
    query = select(_actions).where(a.draft_id == draft_id)
    if status is not None:
        query = query.where(a.status == status)
    rows = await conn.execute(query.order_by(a.created_at, a.id))
    return [_action(r) for r in rows]


async def move_action(
    conn: AsyncConnection,
    action_id: str,
    current: ActionStatus,
    target: ActionStatus,
    *,
    proposal: RefundProposal | None = None,
    approvals: list[str] | None = None,
    result: dict[str, Any] | None = None,
    executed_at: datetime | None = None,
) -> bool:
    """Move one action ``current → target`` (raises on a move ``ACTION_TRANSITIONS`` does not
    allow), with what the move records; False when it was no longer in ``current``."""
    check_transition(current, target)
    values = _action_values(proposal=proposal, approvals=approvals, result=result, executed_at=executed_at)
    a = _actions.c
    moved = await conn.execute(
        update(_actions).where(a.id == action_id, a.status == current).values(status=target, **values)
    )
    return bool(moved.rowcount == 1)


async def move_actions_of(
    conn: AsyncConnection, draft_ids: Sequence[str], current: ActionStatus, target: ActionStatus
) -> None:
    """Move every action of these drafts that is in ``current`` to ``target`` (a rejected or
    superseded draft drops its proposals)."""
    check_transition(current, target)
    a = _actions.c
    await conn.execute(update(_actions).where(a.draft_id.in_(draft_ids), a.status == current).values(status=target))


async def amend_proposal(
    conn: AsyncConnection, action_id: str, *, proposal: RefundProposal, approvals: list[str]
) -> bool:
    """A first of two approvals: the amount and approvers recorded, still ``proposed``."""
    a = _actions.c
    amended = await conn.execute(
        update(_actions)
        .where(a.id == action_id, a.status == ActionStatus.PROPOSED)
        .values(**_action_values(proposal=proposal, approvals=approvals))
    )
    return bool(amended.rowcount == 1)


async def note_attempt(conn: AsyncConnection, action_id: str, result: dict[str, Any]) -> bool:
    """An approved action the backend could not take yet: the error kept, still ``approved``
    (tried again with the reply)."""
    a = _actions.c
    noted = await conn.execute(
        update(_actions).where(a.id == action_id, a.status == ActionStatus.APPROVED).values(result=result)
    )
    return bool(noted.rowcount == 1)


def _action_values(*, proposal: RefundProposal | None = None, **values: Any) -> dict[str, Any]:
    """The columns a move writes: those given, the proposal as its stored JSON."""
    if proposal is not None:
        values["params"] = params_of(proposal)
    return {name: value for name, value in values.items() if value is not None}


async def tool_calls_of(conn: AsyncConnection, draft_id: str) -> list[Any]:
    t = _tool_calls.c
    rows = await conn.execute(select(t.name, t.summary, t.error).where(t.draft_id == draft_id).order_by(t.id))
    return list(rows)
