"""Approval rules, decided in code whatever the model says: who may approve, and whether a
proposed refund is within the policy's limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.events import Actor
from bot.policy import Policy


@dataclass(frozen=True, slots=True)
class RefundVerdict:
    """The policy's verdict on a refund amount."""

    allowed: bool
    reason: str
    needs_manager: bool = False
    needs_two_approvers: bool = False

    def describe(self) -> str:
        if not self.allowed:
            return f"refused by policy: {self.reason}"
        extra = []
        if self.needs_two_approvers:
            extra.append("needs two different approvers")
        if self.needs_manager:
            extra.append("needs a manager")
        return "within policy" + (f" ({', '.join(extra)})" if extra else "")


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


def check_refund(params: dict[str, Any], amount_cents: int, policy: Policy, now: datetime) -> RefundVerdict:
    """Check a refund of ``amount_cents`` on the order facts in ``params`` against the policy."""
    rules = policy.refunds
    currency = str(params.get("currency", ""))
    if amount_cents <= 0:
        return RefundVerdict(False, "the amount must be positive")
    status = str(params.get("order_status", ""))
    if status not in rules.refundable_statuses:
        return RefundVerdict(False, f"order status {status or 'unknown'!r} is not refundable")
    delivered = params.get("delivered_at")
    if delivered and rules.window_days >= 0:
        delivered_at = datetime.fromisoformat(str(delivered))
        age = (now - delivered_at).days
        if age > rules.window_days:
            return RefundVerdict(False, f"delivered {age} days ago, outside the {rules.window_days}-day window")
    refundable = int(params.get("refundable_cents", 0))
    if amount_cents > refundable:
        return RefundVerdict(
            False, f"{money(amount_cents, currency)} is above the refundable {money(refundable, currency)}"
        )
    if amount_cents > rules.max_amount:
        return RefundVerdict(
            False,
            f"{money(amount_cents, currency)} is above the policy maximum {money(rules.max_amount, currency)}",
        )
    return RefundVerdict(
        True,
        "within policy",
        needs_manager=amount_cents > rules.manager_threshold,
        needs_two_approvers=amount_cents > rules.two_approvers_threshold,
    )


def _listed(actor: Actor, ids: tuple[str, ...]) -> bool:
    return actor.id in ids or bool(actor.groups & set(ids))


def may_approve(actor: Actor, policy: Policy) -> bool:
    """Anyone in the review channel, unless the policy names approvers (managers always may)."""
    agents, managers = policy.approvers.agents, policy.approvers.managers
    if not agents:
        return True
    return _listed(actor, agents) or _listed(actor, managers)


def is_manager(actor: Actor, policy: Policy) -> bool:
    return _listed(actor, policy.approvers.managers)
