"""THE refund rule: one set of pure functions used by the tools and by the core alike.

``tools/`` may not import the core, so the rule lives here and ``bot/`` imports it. Everything is
plain data in, plain data out (no I/O, no clock): the core calls :func:`check_refunds` when a
draft finishes, again when an agent approves, and again right before the executor moves money;
``check_refund_eligibility`` calls :func:`eligibility` to report the same facts to the model.

What the rule holds, whatever the model wrote:

* the order's status must be refundable and the delivery inside the window; a delivered order
  with an unknown delivery date is not eligible without a manager;
* a refund goes only to the verified owner of the order;
* a refund naming items cannot exceed their price x quantity;
* per order: what was refunded + what is approved and pending + this draft's refunds <= total;
* per draft: the sum of its refunds <= ``max_amount``; the manager and two-approver thresholds
  apply to that sum;
* per customer per day: what was refunded or approved today + this draft's refunds <=
  ``max_per_customer_per_day`` (0 means no daily limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from tools.money import Money

__all__ = [
    "DraftVerdict",
    "Eligibility",
    "OrderFacts",
    "RefundLimits",
    "RefundProposal",
    "RefundRequest",
    "RefundVerdict",
    "check_refunds",
    "eligibility",
    "items_cap_cents",
]


@dataclass(frozen=True, slots=True)
class RefundLimits:
    """The policy's refund numbers, in cents. ``max_per_customer_per_day_cents`` 0 = no limit."""

    window_days: int = 30
    max_amount_cents: int = 50_000
    manager_threshold_cents: int = 10_000
    two_approvers_threshold_cents: int = 25_000
    max_per_customer_per_day_cents: int = 0
    refundable_statuses: tuple[str, ...] = ("delivered",)


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the rule needs to know about an order. ``items`` maps SKU to (quantity, unit price)."""

    order_id: str
    customer_id: str | None
    status: str
    currency: str
    total_cents: int
    refunded_cents: int
    delivered_at: datetime | None
    items: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def refundable_cents(self) -> int:
        return max(self.total_cents - self.refunded_cents, 0)


@dataclass(frozen=True, slots=True)
class RefundProposal:
    """A refund the model proposed: on which order (as it was when proposed: what the card shows
    as "relied on" and what the rule falls back to when the shop cannot be reached), how much,
    why, for which items, who asked and who code had verified them as. ``approved`` is the
    amount an agent approved (it may differ); :attr:`due` is THE amount the refund stands for."""

    order: OrderFacts
    amount: Money
    reason: str = ""
    items: tuple[str, ...] = ()
    asked_by: str = ""
    asker_verified_as: str = ""
    approved: Money | None = None

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def due(self) -> Money:
        """What the refund stands for: what an agent approved, else what was proposed."""
        return self.approved if self.approved is not None else self.amount

    def approve(self, amount: Money) -> RefundProposal:
        return replace(self, approved=amount)

    def request(self, amount: Money | None = None) -> RefundRequest:
        """The rule's view of this refund, for ``amount`` (default: :attr:`due`)."""
        return RefundRequest(self.order_id, (amount or self.due).cents, self.items)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """One proposed refund: an order, an amount, and the SKUs it is for (empty = not item-bound)."""

    order_id: str
    amount_cents: int
    items: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether an order may be refunded at all, and why. ``needs_manager`` with ``eligible``
    False means a manager may still approve (a delivered order whose delivery date is unknown)."""

    eligible: bool
    needs_manager: bool
    reasons: tuple[str, ...]
    blockers: tuple[str, ...]
    days_since_delivery: int | None
    within_window: bool | None


@dataclass(frozen=True, slots=True)
class RefundVerdict:
    """The rule's verdict on one refund of a draft. :meth:`DraftVerdict.final` adds what the
    draft's refunds together need (a manager, two approvers) and the card's line."""

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


@dataclass(frozen=True, slots=True)
class DraftVerdict:
    """The rule's verdict on all the refunds of one draft, taken together."""

    verdicts: tuple[RefundVerdict, ...]
    total_cents: int
    needs_manager: bool
    needs_two_approvers: bool

    @property
    def allowed(self) -> bool:
        return all(v.allowed for v in self.verdicts)

    def describe(self, index: int) -> str:
        """The card's line for refund ``index``."""
        verdict = self.verdicts[index]
        if not verdict.allowed:
            return f"refused by policy: {verdict.reason}"
        extra = []
        if self.needs_two_approvers:
            extra.append("needs two different approvers")
        if self.needs_manager or verdict.needs_manager:
            extra.append("needs a manager" + (f": {verdict.reason}" if verdict.needs_manager else ""))
        return "within policy" + (f" ({'; '.join(extra)})" if extra else "")

    def final(self) -> tuple[RefundVerdict, ...]:
        """One verdict per refund, each carrying the draft-level thresholds and its card line."""
        return tuple(
            RefundVerdict(
                allowed=v.allowed,
                reason=v.reason,
                needs_manager=v.allowed and (self.needs_manager or v.needs_manager),
                needs_two_approvers=v.allowed and self.needs_two_approvers,
                description=self.describe(i),
            )
            for i, v in enumerate(self.verdicts)
        )


def eligibility(order: OrderFacts, limits: RefundLimits, now: datetime) -> Eligibility:
    """Status and window: may this order be refunded at all?"""
    reasons: list[str] = []
    blockers: list[str] = []
    needs_manager = False
    status_ok = order.status in limits.refundable_statuses
    if status_ok:
        reasons.append(f"status {order.status} allows a refund")
    else:
        allowed = ", ".join(limits.refundable_statuses) or "none"
        blockers.append(f"status {order.status} does not allow a refund (allowed: {allowed})")
        reasons.append(blockers[-1])
    days: int | None = None
    within: bool | None = None
    if order.delivered_at is not None:
        days = max((now - order.delivered_at).days, 0)
        within = days <= limits.window_days
        window = f"delivered {days} days ago, %s the {limits.window_days}-day refund window"
        if within:
            reasons.append(window % "within")
        else:
            blockers.append(window % "outside")
            reasons.append(blockers[-1])
    elif status_ok:
        needs_manager = True
        blockers.append("the delivery date is unknown, so the refund window cannot be checked: needs a manager")
        reasons.append(blockers[-1])
    refunded = Money.of_cents(order.refunded_cents, order.currency)
    if order.refundable_cents > 0:
        reasons.append(
            f"{Money.of_cents(order.refundable_cents, order.currency)} is still refundable ({refunded} refunded so far)"
        )
    else:
        blockers.append(f"nothing is left to refund ({refunded} refunded)")
        reasons.append(blockers[-1])
    only_manager = needs_manager and len(blockers) == 1
    return Eligibility(
        eligible=not blockers,
        needs_manager=only_manager,
        reasons=tuple(reasons),
        blockers=tuple(blockers),
        days_since_delivery=days,
        within_window=within,
    )


def items_cap_cents(order: OrderFacts, skus: Sequence[str]) -> int | None:
    """The most a refund naming ``skus`` may be (their price x quantity), or None when it names
    none. An SKU not on the order caps the refund at 0."""
    if not skus:
        return None
    return sum(order.items[sku][0] * order.items[sku][1] if sku in order.items else 0 for sku in dict.fromkeys(skus))


def check_refunds(
    requests: Sequence[RefundRequest],
    orders: Mapping[str, OrderFacts],
    limits: RefundLimits,
    now: datetime,
    *,
    verified_customer_id: str | None,
    pending_cents: Mapping[str, int] | None = None,
    customer_today_cents: int = 0,
) -> DraftVerdict:
    """Check a draft's refunds together, in order. A refused refund does not count towards the
    sums; every allowed one does.

    ``orders`` maps each request's ``order_id`` to the order's current facts (an order missing
    from it is refused). ``pending_cents`` is what other drafts have approved and not yet
    executed, per order. ``customer_today_cents`` is what the verified customer was refunded or
    approved today outside this draft.
    """
    pending = pending_cents or {}
    verdicts: list[RefundVerdict] = []
    per_order: dict[str, int] = {}
    total = 0
    manager_needed = False
    for request in requests:
        verdict = _check_one(
            request,
            orders.get(request.order_id),
            limits,
            now,
            verified_customer_id,
            pending,
            per_order,
            total,
            customer_today_cents,
        )
        verdicts.append(verdict)
        if verdict.allowed:
            per_order[request.order_id] = per_order.get(request.order_id, 0) + request.amount_cents
            total += request.amount_cents
            manager_needed = manager_needed or verdict.needs_manager
    return DraftVerdict(
        verdicts=tuple(verdicts),
        total_cents=total,
        needs_manager=manager_needed or total > limits.manager_threshold_cents,
        needs_two_approvers=total > limits.two_approvers_threshold_cents,
    )


def _check_one(
    request: RefundRequest,
    order: OrderFacts | None,
    limits: RefundLimits,
    now: datetime,
    verified_customer_id: str | None,
    pending: Mapping[str, int],
    per_order: Mapping[str, int],
    total: int,
    customer_today: int,
) -> RefundVerdict:
    amount = request.amount_cents
    if amount <= 0:
        return RefundVerdict(False, "the amount must be positive")
    if order is None:
        return RefundVerdict(False, f"order {request.order_id} is not known")
    currency = order.currency
    if not verified_customer_id:
        return RefundVerdict(False, "the customer is not verified as the order's owner")
    if order.customer_id != verified_customer_id:
        return RefundVerdict(False, f"order {order.order_id} belongs to another customer than the verified one")
    facts = eligibility(order, limits, now)
    if not facts.eligible and not facts.needs_manager:
        return RefundVerdict(False, "; ".join(facts.blockers))
    cap = items_cap_cents(order, request.items)
    if cap is not None and amount > cap:
        return RefundVerdict(
            False,
            f"{Money.of_cents(amount, currency)} is above the price of the items it names "
            f"({Money.of_cents(cap, currency)})",
        )
    earlier = order.refunded_cents + pending.get(order.order_id, 0) + per_order.get(order.order_id, 0)
    if earlier + amount > order.total_cents:
        left = max(order.total_cents - earlier, 0)
        return RefundVerdict(
            False,
            f"{Money.of_cents(amount, currency)} is above the {Money.of_cents(left, currency)} left on order "
            f"{order.order_id} after what was refunded, approved or proposed",
        )
    if total + amount > limits.max_amount_cents:
        return RefundVerdict(
            False,
            f"this draft's refunds would total {Money.of_cents(total + amount, currency)}, above the policy maximum "
            f"{Money.of_cents(limits.max_amount_cents, currency)}",
        )
    daily = limits.max_per_customer_per_day_cents
    if daily and customer_today + total + amount > daily:
        return RefundVerdict(
            False,
            f"the customer's refunds today would total {Money.of_cents(customer_today + total + amount, currency)}, "
            f"above the daily limit {Money.of_cents(daily, currency)}",
        )
    if facts.needs_manager:
        return RefundVerdict(True, "the delivery date is unknown", needs_manager=True)
    return RefundVerdict(True, "within policy")
