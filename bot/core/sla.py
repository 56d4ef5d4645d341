"""SLA nudges: a card nobody decides does not wait in silence.

With ``[desk] first_response_minutes`` set, a card still awaiting review after that much
business time (``[desk.hours]``; all the time when absent) gets one reminder in its thread on the
review desk, mentioning the on-call group, and after twice that it is marked overdue (the card
says so, ``supportbot_cards_overdue_total`` counts it). Each mark is claimed in SQL before its
effect (:func:`bot.store.sla.mark_once`), so a restart or a second instance never repeats it;
the price is that a crash between the claim and the post loses that one reminder (the overdue
mark is still shown: the sweeper's stale-card pass brings the card up to date).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot import metrics
from bot.cards import on_call_for
from bot.domain.business_time import business_elapsed
from bot.policy import PolicyStore
from bot.ports import ReviewDesk
from bot.store import Database, utcnow
from bot.store import sla as sla_rows

log = logging.getLogger(__name__)

#: Cards looked at per pass (the oldest first).
BATCH = 50


def minutes(span: timedelta) -> str:
    """``span`` as a short figure for people: "12 min", "0.5 min" for tiny test SLAs."""
    value = span.total_seconds() / 60
    return f"{value:.0f} min" if value >= 1 else f"{value:.2g} min"


class SlaWatch:
    """Reminds the on-call group of undecided cards and marks them overdue, once each."""

    def __init__(
        self,
        db: Database,
        policy: PolicyStore,
        desks: dict[str, ReviewDesk],
        counters: Counter[str],
        refresh: Callable[[str], Awaitable[None]],
    ) -> None:
        self.db = db
        self.policy = policy
        self.desks = desks
        self.counters = counters
        self._refresh = refresh

    async def check(self, now: datetime | None = None) -> None:
        """One pass over the cards whose SLA may be due."""
        desk_policy = self.policy.current.desk
        if desk_policy.first_response_minutes <= 0:
            return
        now = now or utcnow()
        sla = timedelta(minutes=desk_policy.first_response_minutes)
        hours = desk_policy.hours.business_hours() if desk_policy.hours is not None else None
        # Business time never runs faster than wall time: younger cards cannot be due.
        async with self.db.read() as conn:
            waiting = await sla_rows.waiting_cards(conn, now - sla, BATCH)
        for card in waiting:
            waited = business_elapsed(hours, card.created_at, now)
            if waited >= sla and not card.reminded:
                await self._remind(card, waited, sla, now)
            if waited >= sla * 2:
                await self._mark_overdue(card, waited, now)

    async def _remind(self, card: sla_rows.WaitingCard, waited: timedelta, sla: timedelta, now: datetime) -> None:
        text = (
            f"This card has waited {minutes(waited)} for a decision "
            f"(first response is due within {minutes(sla)}). Please take it."
        )
        async with self.db.write() as conn:
            if not await sla_rows.mark_once(conn, card, sla_rows.REMINDED, f"reminder: {text}", now):
                return
        desk = self.desks.get(card.card_desk)
        if desk is None:
            log.warning("no desk %r to remind about draft %s", card.card_desk, card.draft_id)
            return
        try:
            await desk.post_in_card_thread(card.card_ref, text, on_call=on_call_for(self.policy.current, desk.name))
        except Exception:
            log.exception("the SLA reminder for draft %s could not be posted", card.draft_id)
            metrics.platform_error(desk.name, "post_in_card_thread")
            return
        self.counters["sla_reminders"] += 1

    async def _mark_overdue(self, card: sla_rows.WaitingCard, waited: timedelta, now: datetime) -> None:
        mark = f"Overdue: waiting {minutes(waited)}"
        async with self.db.write() as conn:
            if not await sla_rows.mark_once(conn, card, sla_rows.OVERDUE, mark, now, show=True):
                return
        self.counters["cards_overdue"] += 1
        await self._refresh(card.draft_id)

    async def run(self, interval: float) -> None:
        while True:
            await self.check()
            await asyncio.sleep(interval)
