"""The order tools the drafting agent may call.

``get_order_status`` and ``check_refund_eligibility`` report facts. ``propose_refund`` records
a refund *proposal* for a human to approve on the review card; no tool here moves money (the
core calls :meth:`OrderBackend.execute_refund` after approval).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

from tools._args import ARGS_CONFIG
from tools.base import Tool, ToolContext, ToolError, ToolResult
from tools.money import format_amount, parse_amount
from tools.orders import MAX_ORDER_ID_LENGTH, Order, OrderBackend

__all__ = [
    "CheckRefundEligibility",
    "GetOrderStatus",
    "OrderIdArgs",
    "ProposeRefund",
    "ProposeRefundArgs",
]

SHIPPING_ESTIMATE_DAYS = 5
"""A shipped order without the shop's estimate is expected this many days after it was placed."""

_FINAL_STATUSES = ("delivered", "cancelled", "returned")

_OrderId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ORDER_ID_LENGTH,
        description="The order id exactly as the customer gave it, e.g. #W2611340",
    ),
]


class OrderIdArgs(BaseModel):
    """Arguments of the tools that take just an order id."""

    model_config = ARGS_CONFIG

    order_id: _OrderId


class ProposeRefundArgs(BaseModel):
    """Arguments of ``propose_refund``."""

    model_config = ARGS_CONFIG

    order_id: _OrderId
    amount: str = Field(
        pattern=r"^[0-9]{1,7}(\.[0-9]{1,2})?$",
        description="Amount to refund in the order's currency, as a decimal string, e.g. 12.50",
    )
    reason: str = Field(
        min_length=1, max_length=500, description="Why the customer should get this refund, in one sentence"
    )
    items: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=50,
        description="SKUs of the refunded items when the refund is for specific items; else empty",
    )


_A = TypeVar("_A", bound=BaseModel)


def _expect(args: BaseModel, model: type[_A]) -> _A:
    if not isinstance(args, model):
        raise TypeError(f"expected {model.__name__}, got {type(args).__name__}")
    return args


async def _find(backend: OrderBackend, order_id: str) -> Order:
    order = await backend.get_order(order_id)
    if order is None:
        raise ToolError("not_found", f"No order with id {order_id.strip()}")
    return order


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _delivery_estimate(order: Order) -> tuple[date | None, str | None]:
    """The expected delivery date and what it rests on, for orders still on their way."""
    if order.status in _FINAL_STATUSES:
        return None, None
    if order.estimated_delivery is not None:
        return order.estimated_delivery, "shop_estimate"
    if order.status == "shipped":
        return order.placed_at.date() + timedelta(days=SHIPPING_ESTIMATE_DAYS), "placed_at_plus_5_days"
    return None, None


class GetOrderStatus(Tool):
    """``get_order_status``: where an order is, what is in it, and when it should arrive."""

    name = "get_order_status"
    description = (
        "Look up an order by its id: status, items, amounts, carrier and tracking number, delivery "
        "date or expected delivery. estimate_basis 'placed_at_plus_5_days' means a rough guess, "
        "not the carrier's estimate."
    )
    Args = OrderIdArgs
    kind = "read"

    def __init__(self, backend: OrderBackend) -> None:
        self._backend = backend

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        order = await _find(self._backend, _expect(args, OrderIdArgs).order_id)
        estimate, basis = _delivery_estimate(order)
        data: dict[str, Any] = {
            "order_id": order.order_id,
            "status": order.status,
            "customer_name": order.customer_name,
            "currency": order.currency,
            "total": format_amount(order.total_cents),
            "refunded": format_amount(order.refunded_cents),
            "items": [
                {
                    "sku": item.sku,
                    "name": item.name,
                    "quantity": item.quantity,
                    "unit_price": format_amount(item.unit_price_cents),
                }
                for item in order.items
            ],
            "carrier": order.carrier,
            "tracking_number": order.tracking_number,
            "placed_at": _iso(order.placed_at),
            "delivered_at": _iso(order.delivered_at),
            "estimated_delivery": _iso(estimate),
            "estimate_basis": basis,
        }
        summary = f"{order.order_id}: {order.status}"
        if order.status == "shipped" and order.carrier:
            summary += f" via {order.carrier}"
            if order.tracking_number:
                summary += f" {order.tracking_number}"
        if order.delivered_at is not None and order.status == "delivered":
            summary += f" {order.delivered_at.date().isoformat()}"
        if estimate is not None:
            summary += f", ETA {'~' if basis == 'placed_at_plus_5_days' else ''}{estimate.isoformat()}"
        return ToolResult(data=data, summary=summary)


class CheckRefundEligibility(Tool):
    """``check_refund_eligibility``: the facts the refund rules look at, and whether they pass.

    ``clock`` returns the current UTC time (tests pass a fixed one)."""

    name = "check_refund_eligibility"
    description = (
        "Check an order against the refund rules: whether its status allows a refund, days since "
        "delivery against the refund window, what was refunded already and what is still "
        "refundable. Call this before proposing a refund."
    )
    Args = OrderIdArgs
    kind = "read"

    def __init__(self, backend: OrderBackend, clock: Callable[[], datetime] | None = None) -> None:
        self._backend = backend
        self._clock = clock or (lambda: datetime.now(UTC))

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        order = await _find(self._backend, _expect(args, OrderIdArgs).order_id)
        rules = ctx.refund_rules
        currency = order.currency
        status_ok = order.status in rules.refundable_statuses
        days = None
        if order.delivered_at is not None:
            days = max((self._clock() - order.delivered_at).days, 0)
        within_window = None if days is None else days <= rules.window_days

        reasons: list[str] = []  # every check, in order
        blockers: list[str] = []  # the checks that failed
        if status_ok:
            reasons.append(f"status {order.status} allows a refund")
        else:
            allowed = ", ".join(rules.refundable_statuses) or "none"
            blockers.append(f"status {order.status} does not allow a refund (allowed: {allowed})")
            reasons.append(blockers[-1])
        if days is not None:
            window = f"delivered {days} days ago, %s the {rules.window_days}-day refund window"
            if within_window:
                reasons.append(window % "within")
            else:
                blockers.append(window % "outside")
                reasons.append(blockers[-1])
        elif status_ok:
            blockers.append("the delivery date is unknown, so the refund window cannot be checked")
            reasons.append(blockers[-1])
        refunded = f"{format_amount(order.refunded_cents)} {currency}"
        if order.refundable_cents > 0:
            left = format_amount(order.refundable_cents)
            reasons.append(f"{left} {currency} is still refundable ({refunded} refunded so far)")
        else:
            blockers.append(f"nothing is left to refund ({refunded} refunded)")
            reasons.append(blockers[-1])
        if order.refundable_cents > rules.max_amount_cents:
            reasons.append(f"a single refund is capped at {format_amount(rules.max_amount_cents)} {currency}")
        eligible = not blockers

        data: dict[str, Any] = {
            "order_id": order.order_id,
            "status": order.status,
            "status_refundable": status_ok,
            "refundable_statuses": list(rules.refundable_statuses),
            "delivered_at": _iso(order.delivered_at),
            "days_since_delivery": days,
            "window_days": rules.window_days,
            "within_window": within_window,
            "currency": currency,
            "total": format_amount(order.total_cents),
            "refunded": format_amount(order.refunded_cents),
            "refundable": format_amount(order.refundable_cents),
            "max_refund": format_amount(rules.max_amount_cents),
            "eligible": eligible,
            "reasons": reasons,
        }
        if eligible:
            summary = f"{order.order_id}: eligible, up to {format_amount(order.refundable_cents)} {currency}"
        else:
            summary = f"{order.order_id}: not eligible ({'; '.join(blockers)})"
        return ToolResult(data=data, summary=summary)


class ProposeRefund(Tool):
    """``propose_refund``: records a refund proposal for a human to approve. Moves no money."""

    name = "propose_refund"
    description = (
        "Propose a refund on an order. This does NOT refund anything: it puts the proposal in front "
        "of a human, who approves or rejects it. Never tell the customer the refund is done; say it "
        "is being reviewed."
    )
    Args = ProposeRefundArgs
    kind = "action"

    def __init__(self, backend: OrderBackend) -> None:
        self._backend = backend

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        a = _expect(args, ProposeRefundArgs)
        order = await _find(self._backend, a.order_id)
        currency = order.currency
        amount_cents = parse_amount(a.amount)
        if amount_cents <= 0:
            raise ToolError("invalid", "A refund amount must be more than 0.00")
        # An amount above what is refundable is still recorded: the core refuses it by policy and
        # the agents see on the card what was asked for and why it cannot happen.
        skus = {item.sku for item in order.items}
        unknown = [sku for sku in a.items if sku not in skus]
        if unknown:
            raise ToolError("invalid", f"Order {order.order_id} has no item with SKU {', '.join(unknown)}")
        items = list(dict.fromkeys(a.items))
        amount = format_amount(amount_cents)

        proposal: dict[str, Any] = {
            "kind": "refund",
            "order_id": order.order_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "reason": a.reason,
            "items": items,
            "refundable_cents": order.refundable_cents,
            "order_status": order.status,
            "delivered_at": _iso(order.delivered_at),
        }
        data: dict[str, Any] = {
            "status": "proposed",
            "order_id": order.order_id,
            "amount": amount,
            "currency": currency,
            "reason": a.reason,
            "items": items,
            "note": (
                "The refund is only PROPOSED. No money has moved. A human must approve it first: tell "
                "the customer the refund request is being reviewed, not that it was refunded."
            ),
        }
        if amount_cents > order.refundable_cents:
            data["note"] = (
                f"Only {format_amount(order.refundable_cents)} {currency} is left to refund on order "
                f"{order.order_id}; this proposal will be refused. Do not promise it to the customer."
            )
        summary = f"Proposed refund of {amount} {currency} on {order.order_id}: {a.reason[:80]}"
        return ToolResult(data=data, summary=summary, proposal=proposal)
