"""A draft that cannot run now waits in SQL, and the review desk hears of it once.

Kimi's breaker is open, a budget is spent, or the account's quota is used up: the draft is not
failed card by card. It keeps its place in the queue (its lease freed until it may try again) with
what it spent so far in the ledger, and the desk gets one notice per episode (the breaker until a
draft gets through; a budget per day and limit; the quota at most hourly).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from bot import metrics
from bot.core.budget import BudgetSpent, next_day
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper
from bot.domain.outcome import Spend
from bot.errors import KimiCircuitOpen
from bot.settings import Settings
from bot.store import Database, outcomes, records, utcnow
from bot.store import drafts as draft_rows
from bot.store.conversations import ConversationState
from bot.store.drafts import ClaimedDraft

log = logging.getLogger(__name__)

BUDGET_RECHECK_SWEEPS = 10  # a draft waiting for the budget looks again every ten sweeper passes


class DraftWaits:
    """Puts a draft back in the queue until it may run, and tells the desk once."""

    def __init__(self, settings: Settings, db: Database, publisher: CardPublisher, leases: LeaseKeeper) -> None:
        self.settings = settings
        self.db = db
        self.publisher = publisher
        self.leases = leases
        self.timing = leases.timing
        self._quota_alerted_at: float | None = None
        self._waiting_on: set[str] = set()  # episodes already on the desk: a budget's day, the breaker

    def got_through(self) -> None:
        """A draft got through: the next cool-down is news again."""
        self._waiting_on.discard("breaker")

    async def for_the_breaker(self, claimed: ClaimedDraft, exc: KimiCircuitOpen, spent: tuple[Spend, ...]) -> None:
        """The model is cooling down and no fallback can take the call: the draft waits in SQL
        (its lease free again after the cool-down), it does not fail."""
        wait = exc.retry_after or self.timing.model_cool_down.total_seconds()
        log.warning("draft %s waits %.0f s: %s", claimed.id, wait, exc)
        now = utcnow()
        await self._wait(claimed, spent, now + timedelta(seconds=wait))
        await self._notice_once(
            "breaker",
            f":warning: Kimi is failing ({exc}); drafts wait in the queue and resume by themselves "
            "when it answers again. Customers' messages are kept.",
        )

    async def for_the_budget(
        self, claimed: ClaimedDraft, conversation: ConversationState, exc: BudgetSpent, spent: tuple[Spend, ...]
    ) -> None:
        """A budget cannot take the next call: the draft waits (no failed card) and looks again
        every few sweeps, so a raised budget resumes it; midnight UTC at the latest frees the day."""
        now = utcnow()
        recheck = timedelta(seconds=max(1.0, self.settings.sweep_seconds * BUDGET_RECHECK_SWEEPS))
        until = min(next_day(now), now + recheck)
        log.warning("draft %s waits for the budget: %s", claimed.id, exc)
        metrics.budget_wait(exc.scope.partition(":")[0])
        await self._wait(claimed, spent, until)
        limit = exc.limit_usd  # the one the call met, not the policy as it may be by now
        if exc.scope == "daily":
            whose = "The daily model budget"
        else:
            who = conversation.customer_name or conversation.customer_id or conversation.id
            whose = f"The daily model budget of {who} ({conversation.thread.platform})"
        # one notice per budget, day and limit: a raised budget that runs out again says so again
        await self._notice_once(
            f"{exc.scope}@{now.date()}@{limit}",
            f":moneybag: {whose} ({limit:.2f} USD) is used up: drafts wait in the queue, no card fails; "
            "they resume by themselves at midnight UTC or as soon as the budget is raised in the policy. "
            "Customers' messages are kept.",
        )

    async def _wait(self, claimed: ClaimedDraft, spent: tuple[Spend, ...], until: datetime) -> None:
        """Record what the draft spent so far and keep it in the queue until ``until``."""
        now = utcnow()
        async with self.db.write() as conn:
            await records.add_usage(conn, outcomes.usage_rows(claimed, spent, now))
            await draft_rows.postpone(conn, claimed.id, self.leases.owner, until)

    async def _notice_once(self, episode: str, text: str) -> None:
        """One notice on the desk per episode (until a draft gets through again), not one per draft."""
        if episode in self._waiting_on:
            return
        self._waiting_on.add(episode)
        await self.publisher.notice(text)

    async def quota_alert(self) -> None:
        """One alert on the review desk, at most hourly, while Kimi says the quota is used up."""
        now = asyncio.get_running_loop().time()
        if (
            self._quota_alerted_at is not None
            and now - self._quota_alerted_at < self.timing.quota_alert_every.total_seconds()
        ):
            return
        self._quota_alerted_at = now
        await self.publisher.notice(
            ":rotating_light: Kimi says this account's quota is used up: drafts fail (each card says so) "
            "until the balance is topped up. Customers' messages are kept; regenerate their drafts after."
        )
