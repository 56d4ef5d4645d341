"""The conversations ``supportbot eval export`` turns into eval cases (:mod:`bot.evaluation.export`):
each conversation with replies an agent approved or edited and that were sent, with the customer's
messages they answered, the tools the drafts used, the refunds executed, and the orders touched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.domain.states import ActionStatus, DraftStatus
from bot.store.proposals import proposal_of
from bot.store.schema import Conversation, Draft, Message, ProposedAction, ToolCall
from tools.orders import Order, SqlOrderBackend, linked_customer


@dataclass(frozen=True, slots=True)
class UsedTool:
    """A tool call of a sent draft: its name, arguments and (JSON) result."""

    name: str
    arguments: dict[str, Any]
    result: Any


@dataclass(frozen=True, slots=True)
class SentTurn:
    """A customer's message and the reply sent to it: the draft's text, and what went out."""

    asked: str
    draft: str
    sent: str
    edited: bool
    decided_by_id: str
    tools: tuple[UsedTool, ...]
    refunds: tuple[tuple[str, int], ...] = ()  # (order id, cents) executed on this reply


@dataclass(frozen=True, slots=True)
class SentConversation:
    """A conversation as an eval case needs it."""

    id: str
    platform: str
    user_id: str
    display_name: str
    email: str
    started_at: datetime
    turns: tuple[SentTurn, ...]
    orders: tuple[Order, ...]
    linked_customer: str | None

    @property
    def refunds(self) -> dict[str, int]:
        """Cents executed in the conversation, by order id."""
        total: dict[str, int] = {}
        for turn in self.turns:
            for order_id, cents in turn.refunds:
                total[order_id] = total.get(order_id, 0) + cents
        return total


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


async def sent_conversations(engine: AsyncEngine, since: datetime, limit: int = 500) -> list[SentConversation]:
    """Conversations with a reply approved or edited since ``since`` and sent, oldest first."""
    async with engine.connect() as conn:
        drafts = (
            await conn.execute(
                select(
                    Draft.id, Draft.conversation_id, Message.text, Draft.text, Draft.edited_text, Draft.decided_by_id
                )
                .join(Message, Message.id == Draft.message_id)
                .where(Draft.status == DraftStatus.SENT, Draft.decided_by != "", Draft.decided_at >= since)
                .order_by(Draft.decided_at)
            )
        ).all()
        ids = list(dict.fromkeys(row[1] for row in drafts))[:limit]
        c = Conversation
        people = {
            row[0]: row
            for row in (
                await conn.execute(
                    select(c.id, c.platform, c.customer_id, c.customer_name, c.asker_email, c.created_at).where(
                        c.id.in_(ids)
                    )
                )
            ).all()
        }
        draft_ids = [row[0] for row in drafts if row[1] in people]
        tools = await _tools(conn, draft_ids)
        refunds = await _refunds(conn, draft_ids)
    orders = SqlOrderBackend(engine)
    found: list[SentConversation] = []
    for conversation_id in ids:
        _, platform, user_id, display_name, email, started_at = people[conversation_id]
        rows = [row for row in drafts if row[1] == conversation_id]
        turns = tuple(
            SentTurn(
                r[2],
                r[3],
                r[4] if r[4] is not None else r[3],
                r[4] is not None,
                r[5],
                tuple(tools.get(r[0], [])),
                tuple(refunds.get(r[0], [])),
            )
            for r in rows
        )
        known = [order for order in [await orders.get_order(o) for o in _order_ids(turns)] if order is not None]
        found.append(
            SentConversation(
                conversation_id,
                platform,
                user_id,
                display_name,
                email,
                started_at,
                turns,
                tuple(known),
                await linked_customer(engine, f"{platform}:{user_id}"),
            )
        )
    return found


async def _tools(conn: AsyncConnection, draft_ids: list[str]) -> dict[str, list[UsedTool]]:
    """The tool calls that succeeded, by draft, in the order they were made."""
    tools: dict[str, list[UsedTool]] = {}
    rows = await conn.execute(
        select(ToolCall.draft_id, ToolCall.name, ToolCall.arguments, ToolCall.result)
        .where(ToolCall.draft_id.in_(draft_ids), ToolCall.error == "")
        .order_by(ToolCall.id)
    )
    for draft_id, name, arguments, result in rows.all():
        parsed = _json(arguments)
        tools.setdefault(draft_id, []).append(UsedTool(name, parsed if isinstance(parsed, dict) else {}, _json(result)))
    return tools


async def _refunds(conn: AsyncConnection, draft_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    """The refunds executed, by draft: (order id, cents as approved)."""
    refunds: dict[str, list[tuple[str, int]]] = {}
    rows = await conn.execute(
        select(ProposedAction.draft_id, ProposedAction.params).where(
            ProposedAction.draft_id.in_(draft_ids), ProposedAction.status == ActionStatus.EXECUTED
        )
    )
    for draft_id, params in rows.all():
        proposal = proposal_of(params)
        refunds.setdefault(draft_id, []).append((proposal.order_id, proposal.due.cents))
    return refunds


def _order_ids(turns: Sequence[SentTurn]) -> list[str]:
    seen: dict[str, None] = {}
    for turn in turns:
        for tool in turn.tools:
            order_id = tool.arguments.get("order_id")
            if isinstance(order_id, str) and order_id:
                seen[order_id] = None
    return list(seen)
