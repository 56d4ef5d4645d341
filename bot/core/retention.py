"""The retention job: every ``RETENTION_SWEEP_SECONDS``, what conversations hold that is older
than the policy's ``[retention] days`` is erased (:mod:`bot.store.retention`): messages, images,
drafts, tool calls, sent replies, summaries; the audit trail keeps its lines as hashes.

It works in batches of :data:`BATCH` rows, one short transaction each, so the single SQLite writer
is never held for long; a conversation with work in flight (a draft being written, awaiting review,
or a reply being sent) is left whole until it settles. Each pass logs one INFO line with what it
erased and adds it to the ``retention_purged_<kind>`` counters of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta

from bot.policy import PolicyStore
from bot.store import Database, utcnow
from bot.store.retention import ERASERS, settled

log = logging.getLogger(__name__)

#: Rows erased per transaction.
BATCH = 200

#: The counters a pass adds to, one per kind of row.
COUNTERS = tuple(f"retention_purged_{kind}" for kind in ERASERS)


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
                while True:
                    async with self.db.write() as conn:
                        erased = await erase(conn, settled, before, BATCH)
                    purged[kind] += erased
                    if erased < BATCH:
                        break
                    await asyncio.sleep(0)  # other writers get the database between batches
            for kind in ERASERS:
                self.counters[f"retention_purged_{kind}"] += purged[kind]
            log.info(
                "retention: erased what is older than %d days: %s",
                days,
                ", ".join(f"{purged[kind]} {kind.replace('_', ' ')}" for kind in ERASERS),
            )
        self.passes += 1
        return purged

    async def run(self) -> None:
        while True:
            await self.purge()
            await asyncio.sleep(self.interval)
