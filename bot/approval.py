"""Approval rules, decided in code whatever the model says: who may approve, and whether a
draft's proposed refunds are within the policy's limits.

The refund rule itself is :mod:`tools.refunds` (the tools report the same facts from it). This
module feeds it what only the core knows (what other drafts approved, what the customer got
today, who the conversation is verified as) and is called at the three moments money could
move: when a draft finishes, when an agent approves, and right before the executor refunds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.roles import listed
from bot.domain.states import ActionStatus
from bot.events import Actor
from bot.identity import refund_owner
from bot.policy import Policy
from bot.store import Database, ProposedAction
from bot.store import records as record_rows
from bot.store.conversations import ConversationState
from bot.store.proposals import proposal_of
from bot.store.records import StoredAction
from tools import ToolError
from tools.order_tools import order_facts
from tools.orders import OrderBackend
from tools.refunds import OrderFacts, RefundLimits, RefundProposal, RefundRequest, RefundVerdict, check_refunds


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


async def current_facts(backend: OrderBackend, proposals: Sequence[RefundProposal]) -> dict[str, OrderFacts]:
    """The orders a draft's refunds name, fetched fresh from the shop; when the shop cannot be
    reached, the facts recorded with the proposal (the backend still refuses an over-refund).
    An order that no longer exists is left out (its refunds are refused)."""
    orders: dict[str, OrderFacts] = {}
    for proposal in proposals:
        order_id = proposal.order_id
        if order_id in orders:
            continue
        try:
            order = await backend.get_order(order_id)
        except ToolError:
            orders[order_id] = proposal.order
            continue
        if order is not None:
            orders[order_id] = order_facts(order)
    return orders


@dataclass(frozen=True, slots=True)
class RefundHistory:
    """What other refunds stand for, as THE rule counts them: approved and not yet executed,
    per order, and what the verified customer was refunded or approved today."""

    pending_cents: dict[str, int] = field(default_factory=dict)
    customer_today_cents: int = 0


async def refund_history(
    conn: AsyncConnection, *, checked_ids: Sequence[str] = (), verified_customer_id: str, now: datetime
) -> RefundHistory:
    """The other refunds (not ``checked_ids``, the rows being checked) as they are now."""
    history = RefundHistory()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    a = ProposedAction.__table__.c
    others = await conn.execute(
        select(a.params, a.status, a.executed_at).where(
            a.id.not_in(list(checked_ids)),
            a.kind == "refund",
            # Executed refunds count only on the day they ran (checked below, exactly), so only the
            # last two days' are read: the read stays small however long the shop has run.
            or_(
                a.status == ActionStatus.APPROVED,
                and_(a.status == ActionStatus.EXECUTED, a.executed_at >= start - timedelta(days=1)),
            ),
        )
    )
    today = 0
    for action in others:
        refund = proposal_of(action.params or {})
        amount = refund.due.cents
        if action.status == ActionStatus.APPROVED:
            pending = history.pending_cents
            pending[refund.order_id] = pending.get(refund.order_id, 0) + amount
        same_customer = verified_customer_id and refund.order.customer_id == verified_customer_id
        executed_at = action.executed_at
        if executed_at is not None and executed_at.tzinfo is None:
            executed_at = executed_at.replace(tzinfo=start.tzinfo)
        executed_today = executed_at is not None and executed_at >= start
        if same_customer and (action.status == ActionStatus.APPROVED or executed_today):
            today += amount
    return dataclasses.replace(history, customer_today_cents=today)


def judge_refunds(
    orders: Mapping[str, OrderFacts],
    policy: Policy,
    history: RefundHistory,
    *,
    verified_customer_id: str,
    refunds: Sequence[RefundRequest],
    now: datetime,
) -> tuple[RefundVerdict, ...]:
    """THE refund rule over one draft's refunds (in order), with the orders' facts and the other
    refunds' ``history``: one final verdict per refund."""
    batch = check_refunds(
        refunds,
        orders,
        limits_of(policy),
        now,
        verified_customer_id=verified_customer_id or None,
        pending_cents=history.pending_cents,
        customer_today_cents=history.customer_today_cents,
    )
    return batch.final()


async def check_draft_refunds(
    conn: AsyncConnection,
    orders: Mapping[str, OrderFacts],
    policy: Policy,
    *,
    checked_ids: Sequence[str] = (),
    verified_customer_id: str,
    refunds: Sequence[RefundRequest],
    now: datetime,
) -> tuple[RefundVerdict, ...]:
    """:func:`judge_refunds` with the history read in ``conn`` (at approval and execution)."""
    history = await refund_history(conn, checked_ids=checked_ids, verified_customer_id=verified_customer_id, now=now)
    return judge_refunds(orders, policy, history, verified_customer_id=verified_customer_id, refunds=refunds, now=now)


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
    proposals = [a.proposal for a in actions]
    orders = await current_facts(backend, proposals)  # before any write lock
    async with db.write() as conn:
        verdicts = await check_draft_refunds(
            conn,
            orders,
            policy,
            checked_ids=[a.id for a in actions],
            verified_customer_id=refund_owner(conversation, proposals),
            refunds=[p.request() for p in proposals],
            now=now,
        )
        reasons = []
        for action, verdict in zip(actions, verdicts, strict=True):
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
