"""The retention job: every ``RETENTION_SWEEP_SECONDS``, what conversations hold that is older
than the policy's ``[retention] days`` is erased (:mod:`bot.store.retention`): messages, images,
drafts, tool calls, sent replies, summaries; the audit trail keeps its lines as hashes.

It works in batches of :data:`BATCH` rows, one short transaction each, so the single SQLite writer
is never held for long; a conversation with work in flight (a draft being written, awaiting review,
or a reply being sent) is left whole until it settles. Each pass logs one INFO line with what it
erased and adds it to the ``retention_purged_<kind>`` counters of ``/metrics``.

Whatever the policy, each pass also forgets the platforms' delivery ids older than
:data:`DELIVERY_MEMORY` (``deliveries_forgotten``): Slack and Discord redeliver within minutes, and
the table would otherwise grow with every message for as long as the bot runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot.policy import PolicyStore
from bot.store import Database, utcnow
from bot.store.conversations import forget_deliveries
from bot.store.retention import ERASERS, settled

log = logging.getLogger(__name__)

#: Rows erased per transaction.
BATCH = 200

#: How long a delivery id (and a deletion's mark) is remembered.
DELIVERY_MEMORY = timedelta(days=7)

#: The counters a pass adds to, one per kind of row.
COUNTERS = (*(f"retention_purged_{kind}" for kind in ERASERS), "deliveries_forgotten")


class RetentionJob:
    """Erases what is older than the policy's retention window, in short batches."""

    def __init__(self, db: Database, policy: PolicyStore, counters: Counter[str], *, interval: float) -> None:
        self.db = db
        self.policy = policy
        self.counters = counters
        self.interval = interval
        self.passes = 0

    async def purge(self) -> Counter[str]:
        """One pass; what it erased, per kind (nothing when the policy keeps everything)."""
        days = self.policy.current.retention.days
        purged: Counter[str] = Counter()
        if days:
            before = utcnow() - timedelta(days=days)
            for kind, erase in ERASERS.items():
                purged[kind] = await self._in_batches(erase, settled, before)
            for kind in ERASERS:
                self.counters[f"retention_purged_{kind}"] += purged[kind]
            log.info(
                "retention: erased what is older than %d days: %s",
                days,
                ", ".join(f"{purged[kind]} {kind.replace('_', ' ')}" for kind in ERASERS),
            )
        forget_before = utcnow() - DELIVERY_MEMORY
        self.counters["deliveries_forgotten"] += await self._in_batches(forget_deliveries, forget_before)
        self.passes += 1
        return purged

    async def _in_batches(self, erase: Callable[..., Awaitable[int]], *args: object) -> int:
        """Run ``erase(conn, *args, BATCH)`` one transaction at a time until it erases fewer than
        :data:`BATCH` rows; how many in all."""
        total = 0
        while True:
            async with self.db.write() as conn:
                erased = await erase(conn, *args, BATCH)
            total += erased
            if erased < BATCH:
                return total
            await asyncio.sleep(0)  # other writers get the database between batches

    async def run(self) -> None:
        while True:
            await self.purge()
            await asyncio.sleep(self.interval)
