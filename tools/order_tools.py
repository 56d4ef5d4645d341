"""The order tools the drafting agent may call.

``get_order_status`` and ``check_refund_eligibility`` report facts. ``propose_refund`` records
a refund *proposal* for a human to approve on the review card; no tool here moves money (the
core calls :meth:`OrderBackend.execute_refund` after approval).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

from tools._args import ARGS_CONFIG
from tools.base import Tool, ToolContext, ToolError, ToolResult
from tools.money import Money
from tools.orders import MAX_ORDER_ID_LENGTH, Order, OrderBackend
from tools.refunds import OrderFacts, RefundProposal, eligibility

__all__ = [
    "CheckRefundEligibility",
    "GetOrderStatus",
    "OrderIdArgs",
    "ProposeRefund",
    "ProposeRefundArgs",
    "VerifyCustomer",
    "VerifyCustomerArgs",
    "order_facts",
    "owns",
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


def order_facts(order: Order) -> OrderFacts:
    """The facts THE refund rule (:mod:`tools.refunds`) looks at."""
    items: dict[str, tuple[int, int]] = {}
    for item in order.items:
        quantity, _ = items.get(item.sku, (0, item.unit_price_cents))
        items[item.sku] = (quantity + item.quantity, item.unit_price_cents)
    return OrderFacts(
        order_id=order.order_id,
        customer_id=order.customer_id,
        status=order.status,
        currency=order.currency,
        total_cents=order.total_cents,
        refunded_cents=order.refunded_cents,
        delivered_at=order.delivered_at,
        items=items,
    )


def owns(ctx: ToolContext, order: Order) -> bool:
    """Whether the person asking is this order's verified customer.

    A conversation not yet verified becomes verified here when the policy lets the platform
    profile e-mail count (``ctx.asker_email`` is then set) and it equals the order's e-mail.
    """
    if not ctx.identity_checks:
        return True
    if ctx.verified_customer_id:
        return order.customer_id == ctx.verified_customer_id
    if (
        ctx.asker_email
        and order.customer_id
        and order.customer_email
        and _normal_email(ctx.asker_email) == _normal_email(order.customer_email)
    ):
        ctx.verified_customer_id = order.customer_id
        ctx.verified_via = "platform profile e-mail"
        return True
    return False


VERIFICATION_NOTE = (
    "Verification needed: the person asking is not verified as this order's customer, so nothing "
    "personal about it can be shared. Ask them to confirm the order's e-mail address, or their name "
    "and postal code, and check it with verify_customer. Do not guess or repeat any order details."
)


def _withhold(ctx: ToolContext, order: Order) -> None:
    """Note another customer's order and the personal data kept from the model (for the
    verification pass over the draft and for the card)."""
    ctx.foreign_orders.add(order.order_id)
    for value in (order.customer_name, order.customer_email, order.tracking_number, order.customer_postal_code):
        if value and len(value.strip()) >= 4:
            ctx.withheld.add(value.strip())


PUBLIC_PLACE_NOTE = (
    "This conversation is in a public place others can read: share only the order's status and "
    "expected delivery here. For its items, amounts, address or tracking, ask the customer to write "
    "to us in a direct message."
)


def _note_details(ctx: ToolContext, order: Order) -> None:
    """Note the verified owner's order details a tool touched, with what each is, for the core's
    check of the draft in a public place (see :class:`~tools.base.ToolContext`)."""
    money = [order.total_cents, order.refunded_cents, order.refundable_cents]
    money += [item.unit_price_cents for item in order.items]
    found = [
        (order.customer_name, "name"),
        (order.customer_email, "e-mail"),
        (order.customer_postal_code, "postal code"),
        (order.tracking_number, "tracking number"),
        *((item.name, "item") for item in order.items),
        *((Money.of_cents(cents).format(), "amount") for cents in money if cents > 0),
    ]
    for value, kind in found:
        if value and len(value.strip()) >= 4:
            ctx.order_details.setdefault(value.strip(), kind)


async def _unknown_to_anyone(backend: OrderBackend, ctx: ToolContext) -> bool:
    """Whether "no such order" may be said of a missing order: to a verified asker, with the
    identity checks off, or when the store holds no orders at all (nothing to reveal then).
    Otherwise an unverified asker hears "verification needed" either way (no probing for ids)."""
    return bool(ctx.verified_customer_id) or not ctx.identity_checks or await backend.holds_no_orders()


def _verification_needed(ctx: ToolContext, order_id: str, order: Order | None, *, status: bool) -> ToolResult:
    shown = order.order_id if order is not None else order_id.strip()
    data: dict[str, Any] = {"order_id": shown, "verification": "needed", "note": VERIFICATION_NOTE}
    summary = f"{shown}: verification needed, nothing personal shown"
    if order is not None:
        _withhold(ctx, order)
        if status and ctx.unverified_may_see_status:
            estimate, _basis = _delivery_estimate(order)
            data["status"] = order.status
            data["estimated_delivery"] = _iso(estimate)
            summary = f"{shown}: {order.status} (verification needed, status only)"
    return ToolResult(data=data, summary=summary)


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
        order_id = _expect(args, OrderIdArgs).order_id
        found = await self._backend.get_order(order_id)
        if found is None or not owns(ctx, found):
            if found is None and await _unknown_to_anyone(self._backend, ctx):
                raise ToolError("not_found", f"No order with id {order_id.strip()}")
            return _verification_needed(ctx, order_id, found, status=True)
        order = found
        _note_details(ctx, order)
        estimate, basis = _delivery_estimate(order)
        data: dict[str, Any] = {
            "order_id": order.order_id,
            "status": order.status,
            "customer_name": order.customer_name,
            "currency": order.currency,
            "total": Money.of_cents(order.total_cents).format(),
            "refunded": Money.of_cents(order.refunded_cents).format(),
            "items": [
                {
                    "sku": item.sku,
                    "name": item.name,
                    "quantity": item.quantity,
                    "unit_price": Money.of_cents(item.unit_price_cents).format(),
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
        if ctx.public_place:
            shown = ("order_id", "status", "estimated_delivery", "estimate_basis")
            data = {key: data[key] for key in shown} | {"note": PUBLIC_PLACE_NOTE}
            summary += " (public place: status only shown)"
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
        order_id = _expect(args, OrderIdArgs).order_id
        found = await self._backend.get_order(order_id)
        if found is None or not owns(ctx, found):
            if found is None and await _unknown_to_anyone(self._backend, ctx):
                raise ToolError("not_found", f"No order with id {order_id.strip()}")
            return _verification_needed(ctx, order_id, found, status=False)
        order = found
        _note_details(ctx, order)
        rules = ctx.refund_rules
        currency = order.currency
        facts = eligibility(order_facts(order), rules, self._clock())
        reasons = list(facts.reasons)
        blockers = list(facts.blockers)
        status_ok = order.status in rules.refundable_statuses
        days = facts.days_since_delivery
        within_window = facts.within_window
        if order.refundable_cents > rules.max_amount_cents:
            reasons.append(f"a single refund is capped at {Money.of_cents(rules.max_amount_cents, currency)}")
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
            "total": Money.of_cents(order.total_cents).format(),
            "refunded": Money.of_cents(order.refunded_cents).format(),
            "refundable": Money.of_cents(order.refundable_cents).format(),
            "max_refund": Money.of_cents(rules.max_amount_cents).format(),
            "eligible": eligible,
            "needs_manager": facts.needs_manager,
            "reasons": reasons,
        }
        if eligible:
            summary = f"{order.order_id}: eligible, up to {Money.of_cents(order.refundable_cents, currency)}"
        elif facts.needs_manager:
            summary = f"{order.order_id}: not eligible without a manager ({'; '.join(blockers)})"
        else:
            summary = f"{order.order_id}: not eligible ({'; '.join(blockers)})"
        if ctx.public_place:  # the verdict without the order's amounts; the card's summary keeps them
            shown = ("order_id", "status", "status_refundable", "within_window", "eligible", "needs_manager")
            data = {key: data[key] for key in shown} | {"note": PUBLIC_PLACE_NOTE}
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
        found = await self._backend.get_order(a.order_id)
        if found is None and not await _unknown_to_anyone(self._backend, ctx):
            return _verification_needed(ctx, a.order_id, None, status=False)
        order = found if found is not None else await _find(self._backend, a.order_id)
        mine = owns(ctx, order)
        if not mine:
            _withhold(ctx, order)
        currency = order.currency
        money = Money.parse(a.amount, currency)
        if money.cents <= 0:
            raise ToolError("invalid", "A refund amount must be more than 0.00")
        # An amount above what is refundable is still recorded: the core refuses it by policy and
        # the agents see on the card what was asked for and why it cannot happen.
        skus = {item.sku for item in order.items}
        unknown = [sku for sku in a.items if sku not in skus]
        if unknown:
            raise ToolError("invalid", f"Order {order.order_id} has no item with SKU {', '.join(unknown)}")
        items = list(dict.fromkeys(a.items))
        amount = money.format(currency=False)
        proposal = RefundProposal(
            order=order_facts(order),
            amount=money,
            reason=a.reason,
            items=tuple(items),
            # Who asked, and who code had verified them as (THE refund rule checks the owner).
            asked_by=ctx.asker,
            asker_verified_as=ctx.verified_customer_id or "",
        )
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
        if not mine:
            data["note"] = VERIFICATION_NOTE + " This proposal will be refused."
        elif money.cents > order.refundable_cents:
            data["note"] = (
                f"Only {Money.of_cents(order.refundable_cents, currency)} is left to refund on order "
                f"{order.order_id}; this proposal will be refused. Do not promise it to the customer."
            )
        summary = f"Proposed refund of {amount} {currency} on {order.order_id}: {a.reason[:80]}"
        return ToolResult(data=data, summary=summary, proposal=proposal)


class VerifyCustomerArgs(BaseModel):
    """Arguments of ``verify_customer``: the order, and what the customer stated about themselves."""

    model_config = ARGS_CONFIG

    order_id: _OrderId
    email: str = Field(
        default="", max_length=320, description="The e-mail address the customer says the order was placed with"
    )
    name: str = Field(default="", max_length=200, description="The customer's full name, as they state it")
    postal_code: str = Field(
        default="", max_length=32, description="The postal code of the order's address, as the customer states it"
    )


def _folded(text: str) -> str:
    """``text`` as compared: NFKC (full-width ``Ｌｉ １００－０００１``, as Chinese and Japanese
    input methods type it, is ``Li 100-0001``), case folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _normal_name(text: str) -> str:
    return " ".join(_folded(text).split())


def _normal_postal(text: str) -> str:
    return "".join(_folded(text).split()).replace("-", "")


def _normal_email(text: str) -> str:
    return _folded(text).strip()


class VerifyCustomer(Tool):
    """``verify_customer``: checks in code what the customer states (e-mail, or name and postal
    code) against the order's customer, with a bounded number of attempts. Reveals nothing
    about the order until it matches."""

    name = "verify_customer"
    description = (
        "Verify that the person writing is the customer of an order, before sharing anything about "
        "it or proposing a refund. Pass exactly what the customer stated: the order's e-mail address, "
        "or their full name and postal code. Answers only whether it matched; never guess values."
    )
    Args = VerifyCustomerArgs
    kind = "read"

    def __init__(self, backend: OrderBackend) -> None:
        self._backend = backend

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        a = _expect(args, VerifyCustomerArgs)
        email = a.email.strip()
        name, postal = a.name.strip(), a.postal_code.strip()
        if not email and not (name and postal):
            raise ToolError("invalid", "Give the order's e-mail address, or the customer's name and postal code")
        if not ctx.verification_in_conversation:
            raise ToolError("unavailable", "Verification in the conversation is switched off; a team member will help")
        order = await self._backend.get_order(a.order_id)
        target = order.customer_id if order is not None and order.customer_id else "order:" + _normal_order(a.order_id)
        if ctx.attempts is not None:
            counted = await ctx.attempts.check(ctx.asker, target)
            ctx.locked_until = counted.locked_until
        if ctx.verification_locked:
            until = f" until {ctx.locked_until:%H:%M} UTC" if ctx.locked_until is not None else ""
            raise ToolError(
                "locked",
                f"Too many failed verification attempts: verification is locked{until} and a human agent "
                "takes over. Do not ask for more details.",
            )
        matched = order is not None and bool(order.customer_id) and _matches(order, email, name, postal)
        if order is not None and matched and order.customer_id:
            ctx.verified_customer_id = order.customer_id
            ctx.verified_via = "verified in the conversation (" + ("e-mail" if email else "name and postal code") + ")"
            data: dict[str, Any] = {"verified": True, "order_id": order.order_id}
            return ToolResult(data=data, summary=f"customer verified for {order.order_id} ({ctx.verified_via})")
        ctx.verify_attempts += 1
        if ctx.attempts is not None:
            counted = await ctx.attempts.failed(ctx.asker, target)
            ctx.verify_attempts = max(ctx.verify_attempts, counted.failures)
            ctx.locked_until = counted.locked_until
        left = 0 if ctx.verification_locked else max(ctx.max_verify_attempts - ctx.verify_attempts, 0)
        data = {
            "verified": False,
            "attempts_left": left,
            "note": "The details do not match. Share nothing about the order"
            + (". No attempts are left: tell the customer a team member will follow up." if not left else "."),
        }
        summary = f"verification failed (attempt {ctx.verify_attempts} of {ctx.max_verify_attempts})"
        return ToolResult(data=data, summary=summary)


def _normal_order(order_id: str) -> str:
    return _folded(order_id).strip().lstrip("#")


def _matches(order: Order, email: str, name: str, postal: str) -> bool:
    if email:
        return bool(order.customer_email) and _normal_email(email) == _normal_email(order.customer_email or "")
    return (
        bool(order.customer_name and order.customer_postal_code)
        and _normal_name(name) == _normal_name(order.customer_name or "")
        and _normal_postal(postal) == _normal_postal(order.customer_postal_code or "")
    )
