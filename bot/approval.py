"""Approval rules, decided in code whatever the model says: who may approve, and whether a
draft's proposed refunds are within the policy's limits.

The refund rule itself is :mod:`tools.refunds` (the tools report the same facts from it). This
module feeds it what only the core knows (what other drafts approved, what the customer got
today, who the conversation is verified as) and is called at the three moments money could
move: when a draft finishes, when an agent approves, and right before the executor refunds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.roles import listed
from bot.domain.states import ActionStatus
from bot.events import Actor
from bot.identity import refund_owner
from bot.policy import Policy
from bot.store import Database, ProposedAction
from bot.store import records as record_rows
from bot.store.conversations import ConversationState
from bot.store.records import StoredAction
from tools import ToolError
from tools.order_tools import order_facts
from tools.orders import OrderBackend
from tools.refunds import DraftVerdict, OrderFacts, RefundLimits, RefundRequest, check_refunds


@dataclass(frozen=True, slots=True)
class RefundVerdict:
    """The policy's verdict on one refund of a draft (the draft-level thresholds included)."""

    allowed: bool
    reason: str
    needs_manager: bool = False
    needs_two_approvers: bool = False
    description: str = ""

    def describe(self) -> str:
        if self.description:
            return self.description
        if not self.allowed:
            return f"refused by policy: {self.reason}"
        return "within policy"


def money(cents: int, currency: str = "") -> str:
    return f"{cents / 100:,.2f}" + (f" {currency}" if currency else "")


def parse_amount(text: str) -> int | None:
    """A decimal amount typed by an agent ("12.50") in cents, or None when it is not one."""
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        return None
    return int(value * 100)


def limits_of(policy: Policy) -> RefundLimits:
    """The policy's refund section as THE rule's numbers."""
    r = policy.refunds
    return RefundLimits(
        window_days=r.window_days,
        max_amount_cents=r.max_amount,
        manager_threshold_cents=r.manager_threshold,
        two_approvers_threshold_cents=r.two_approvers_threshold,
        max_per_customer_per_day_cents=r.max_per_customer_per_day,
        refundable_statuses=r.refundable_statuses,
    )


def facts_from_params(params: dict[str, Any]) -> OrderFacts:
    """The order facts a proposal recorded when it was made (used when the shop is unreachable)."""
    delivered = params.get("delivered_at")
    total = int(params.get("total_cents", params.get("refundable_cents", 0)))
    prices = params.get("item_prices") or {}
    return OrderFacts(
        order_id=str(params.get("order_id", "")),
        customer_id=params.get("customer_id"),
        status=str(params.get("order_status", "")),
        currency=str(params.get("currency", "")),
        total_cents=total,
        refunded_cents=max(total - int(params.get("refundable_cents", 0)), 0),
        delivered_at=datetime.fromisoformat(str(delivered)) if delivered else None,
        items={str(sku): (int(v[0]), int(v[1])) for sku, v in prices.items()},
    )


def amount_of(params: dict[str, Any]) -> int:
    """The amount a refund action stands for: what an agent approved, else what was proposed."""
    return int(params.get("approved_amount_cents") or params.get("amount_cents", 0))


async def current_facts(backend: OrderBackend, proposals: Sequence[dict[str, Any]]) -> dict[str, OrderFacts]:
    """The orders a draft's refunds name, fetched fresh from the shop; when the shop cannot be
    reached, the facts recorded with the proposal (the backend still refuses an over-refund).
    An order that no longer exists is left out (its refunds are refused)."""
    orders: dict[str, OrderFacts] = {}
    for params in proposals:
        order_id = str(params.get("order_id", ""))
        if order_id in orders:
            continue
        try:
            order = await backend.get_order(order_id)
        except ToolError:
            orders[order_id] = facts_from_params(params)
            continue
        if order is not None:
            orders[order_id] = order_facts(order)
    return orders


async def check_draft_refunds(
    conn: AsyncConnection,
    orders: Mapping[str, OrderFacts],
    policy: Policy,
    *,
    checked_ids: Sequence[str] = (),
    verified_customer_id: str,
    refunds: Sequence[tuple[dict[str, Any], int]],
    now: datetime,
) -> DraftVerdict:
    """THE refund rule over one draft's refunds (``(params, amount)`` each, in order), with the
    orders' facts, what other refunds (not ``checked_ids``, the rows being checked) were
    approved and not yet executed, and what the customer was refunded or approved today."""
    pending: dict[str, int] = {}
    today = 0
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    a = ProposedAction.__table__.c
    others = await conn.execute(
        select(a.params, a.status, a.executed_at).where(
            a.id.not_in(list(checked_ids)),
            a.kind == "refund",
            a.status.in_((ActionStatus.APPROVED, ActionStatus.EXECUTED)),
        )
    )
    for action in others:
        params = dict(action.params or {})
        amount = amount_of(params)
        if action.status == ActionStatus.APPROVED:
            order_id = str(params.get("order_id", ""))
            pending[order_id] = pending.get(order_id, 0) + amount
        same_customer = verified_customer_id and params.get("customer_id") == verified_customer_id
        executed_at = action.executed_at
        if executed_at is not None and executed_at.tzinfo is None:
            executed_at = executed_at.replace(tzinfo=start.tzinfo)
        executed_today = executed_at is not None and executed_at >= start
        if same_customer and (action.status == ActionStatus.APPROVED or executed_today):
            today += amount
    requests = [
        RefundRequest(str(p.get("order_id", "")), amount, tuple(str(i) for i in p.get("items") or ()))
        for p, amount in refunds
    ]
    return check_refunds(
        requests,
        orders,
        limits_of(policy),
        now,
        verified_customer_id=verified_customer_id or None,
        pending_cents=pending,
        customer_today_cents=today,
    )


def verdicts_of(batch: DraftVerdict) -> list[RefundVerdict]:
    """One verdict per refund, each carrying the draft-level thresholds."""
    return [
        RefundVerdict(
            allowed=v.allowed,
            reason=v.reason,
            needs_manager=v.allowed and (batch.needs_manager or v.needs_manager),
            needs_two_approvers=v.allowed and batch.needs_two_approvers,
            description=batch.describe(i),
        )
        for i, v in enumerate(batch.verdicts)
    ]


def _listed(actor: Actor, ids: tuple[str, ...]) -> bool:
    return listed(actor.id, actor.groups, ids)


def may_approve(actor: Actor, policy: Policy, *, on_desk: bool = True) -> bool:
    """Anyone in the review channel, unless the policy names approvers (managers always may).

    ``on_desk`` False: the decision comes from elsewhere than the review desk the card is on
    (the playground next to Slack or Discord). No channel membership vouches for the one
    deciding there, so only an approver the policy names by id may decide."""
    agents, managers = policy.approvers.agents, policy.approvers.managers
    if not agents and on_desk:
        return True
    return _listed(actor, agents) or _listed(actor, managers)


def is_manager(actor: Actor, policy: Policy) -> bool:
    return _listed(actor, policy.approvers.managers)


async def refusal_at_execution(
    db: Database,
    backend: OrderBackend,
    policy: Policy,
    conversation: ConversationState,
    actions: Sequence[StoredAction],
    now: datetime,
) -> str:
    """THE refund rule once more, right before the executor moves money. Returns why the
    approved refunds may not run ("" when they may); refused actions are marked so."""
    orders = await current_facts(backend, [a.params for a in actions])  # before any write lock
    async with db.write() as conn:
        batch = await check_draft_refunds(
            conn,
            orders,
            policy,
            checked_ids=[a.id for a in actions],
            verified_customer_id=refund_owner(conversation, [a.params for a in actions]),
            refunds=[(a.params, amount_of(a.params)) for a in actions],
            now=now,
        )
        reasons = []
        for action, verdict in zip(actions, batch.verdicts, strict=True):
            if not verdict.allowed:
                reasons.append(verdict.reason)
                await record_rows.move_action(
                    conn,
                    action.id,
                    ActionStatus.APPROVED,
                    ActionStatus.FAILED,
                    result={"error": f"refused at execution: {verdict.reason}"},
                )
    return "; ".join(reasons)
