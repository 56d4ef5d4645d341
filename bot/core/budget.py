"""Model budgets reserved before a call: the daily budget and one per customer.

A budget that is only *checked* lets concurrent drafts overspend it: each reads the ledger, each
sees room, each calls. Here every model call of a draft first *reserves* its worst case (the
prompt estimate plus ``max_tokens`` at the model's input-miss and output prices) against both
budgets; after the call the reservation shrinks to what the call cost, and the whole hold is let
go once the draft's usage rows are in the ledger. A reservation is granted only when

    ledger spent since midnight UTC + every hold of this instance + the new worst case <= budget

for the daily budget and for the customer's, so drafts running side by side can never spend more
than either budget. The holds live in this process's memory: instances sharing one database each
see the others' spend only once it is in the ledger (run one drafting instance per budget, or
give each its share).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.errors import DraftingError
from bot.policy import LimitsSection

MICRO = 1_000_000


class BudgetSpent(DraftingError):
    """The call's worst case does not fit the daily or the customer's budget: the draft waits."""

    def __init__(self, message: str, *, scope: str, limit_usd: float) -> None:
        super().__init__(message)
        self.scope = scope  # "daily" or "customer:<id>"
        self.limit_usd = limit_usd  # the limit in force when the call was turned back


@dataclass(frozen=True, slots=True)
class Spent:
    """What the ledger says was spent today, in micro-USD: by everyone and by one customer."""

    total: int
    customer: int


SpentReader = Callable[[datetime], Awaitable[Spent]]


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day: the budgets' day."""
    return (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)


def next_day(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


@dataclass(slots=True)
class _Hold:
    customer: str
    amount: int = 0


@dataclass(slots=True)
class Reservations:
    """This instance's holds on the budgets, one per running draft."""

    _holds: dict[str, _Hold] = field(default_factory=dict)
    _granted: int = 0  # every micro-USD ever granted: what was granted during a ledger read

    def held(self, customer: str | None = None) -> int:
        return sum(h.amount for h in self._holds.values() if customer is None or h.customer == customer)

    async def reserve(
        self, draft_id: str, customer: str, worst_case: int, limits: LimitsSection, read_spent: SpentReader
    ) -> None:
        """Hold ``worst_case`` micro-USD for ``draft_id``'s next call, or raise :class:`BudgetSpent`."""
        daily = round(limits.daily_budget_usd * MICRO)
        per_customer = round(limits.customer_daily_budget_usd * MICRO)
        if daily <= 0 and per_customer <= 0:
            return
        # Holds taken before the read; a hold let go during the read may be counted twice (in the
        # ledger and here), never not at all; holds granted during the read are added below.
        held_total, held_customer, granted = self.held(), self.held(customer), self._granted
        spent = await read_spent(day_start())
        during = self._granted - granted
        if daily > 0 and spent.total + held_total + during + worst_case > daily:
            raise BudgetSpent(
                f"the daily model budget ({limits.daily_budget_usd:.2f} USD) is used up",
                scope="daily",
                limit_usd=limits.daily_budget_usd,
            )
        if per_customer > 0 and spent.customer + held_customer + during + worst_case > per_customer:
            raise BudgetSpent(
                f"this customer's daily model budget ({limits.customer_daily_budget_usd:.2f} USD) is used up",
                scope=f"customer:{customer}",
                limit_usd=limits.customer_daily_budget_usd,
            )
        self._holds.setdefault(draft_id, _Hold(customer)).amount += worst_case
        self._granted += worst_case

    def settle(self, draft_id: str, worst_case: int, cost: int) -> None:
        """The call cost ``cost``: the rest of its worst case is free again."""
        hold = self._holds.get(draft_id)
        if hold is not None:
            hold.amount = max(0, hold.amount - worst_case + cost)

    def release(self, draft_id: str) -> None:
        """The draft's spend is in the ledger (or it spent nothing): its hold goes."""
        self._holds.pop(draft_id, None)


@dataclass(slots=True)
class DraftBudget:
    """One draft's :class:`~bot.agent.CallGate`: each model call reserves its worst case against
    the budgets and takes ``tenant``'s place in Kimi's round-robin."""

    reservations: Reservations
    draft_id: str
    tenant: str  # the customer: "<platform>:<customer id>"
    limits: LimitsSection
    read_spent: SpentReader
    worst_case: Callable[[str, list[dict[str, Any]], list[dict[str, Any]] | None, int], int]

    async def reserve(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, max_tokens: int
    ) -> int:
        cost = self.worst_case(model, messages, tools, max_tokens)
        await self.reservations.reserve(self.draft_id, self.tenant, cost, self.limits, self.read_spent)
        return cost

    def settle(self, worst_case: int, cost: int) -> None:
        self.reservations.settle(self.draft_id, worst_case, cost)
