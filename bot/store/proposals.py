"""A refund proposal as stored: the one place :class:`tools.refunds.RefundProposal` becomes the
JSON of ``proposed_actions.params`` and back.

The keys are the ones every earlier version wrote and read (an older instance may still run
next to this one), so nothing is migrated: the amounts are integer cents, the order's facts as
they were when the refund was proposed sit beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tools.money import Money
from tools.refunds import OrderFacts, RefundProposal


def params_of(proposal: RefundProposal) -> dict[str, Any]:
    """The proposal as the JSON the ``params`` column holds."""
    order = proposal.order
    params: dict[str, Any] = {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "order_status": order.status,
        "currency": order.currency,
        "total_cents": order.total_cents,
        "refundable_cents": order.refundable_cents,
        "delivered_at": order.delivered_at.isoformat() if order.delivered_at else None,
        "item_prices": {sku: [qty, price] for sku, (qty, price) in order.items.items()},
        "kind": "refund",
        "amount_cents": proposal.amount.cents,
        "reason": proposal.reason,
        "items": list(proposal.items),
        "asked_by": proposal.asked_by,
        "asker_verified_as": proposal.asker_verified_as,
    }
    approved = {} if proposal.approved is None else {"approved_amount_cents": proposal.approved.cents}
    return params | approved


class _Stored(BaseModel):
    """The ``params`` JSON as read back: every key optional (rows of every version)."""

    model_config = ConfigDict(extra="ignore")

    order_id: str = ""
    customer_id: str | None = None
    order_status: str = ""
    currency: str = ""
    total_cents: int | None = None
    refundable_cents: int = 0
    delivered_at: datetime | None = None
    item_prices: dict[str, tuple[int, int]] = Field(default_factory=dict)
    amount_cents: int = 0
    reason: str = ""
    items: list[str] = Field(default_factory=list)
    asked_by: str | None = None
    asker_verified_as: str | None = None
    approved_amount_cents: int | None = None


def proposal_of(params: Mapping[str, Any]) -> RefundProposal:
    """The proposal a ``params`` column holds (rows written by any version)."""
    stored = _Stored.model_validate(params)
    total = stored.refundable_cents if stored.total_cents is None else stored.total_cents
    order = OrderFacts(
        order_id=stored.order_id,
        customer_id=stored.customer_id,
        status=stored.order_status,
        currency=stored.currency,
        total_cents=total,
        refunded_cents=max(total - stored.refundable_cents, 0),
        delivered_at=stored.delivered_at,
        items=stored.item_prices,
    )
    approved = stored.approved_amount_cents
    return RefundProposal(
        order=order,
        amount=Money.of_cents(stored.amount_cents, stored.currency),
        reason=stored.reason,
        items=tuple(stored.items),
        asked_by=stored.asked_by or "",
        asker_verified_as=stored.asker_verified_as or "",
        approved=None if approved is None else Money.of_cents(approved, stored.currency),
    )
