"""Recovery while the bot runs: leases renewed by their owner, and a sweeper that hands work
whose owner died (lease expired) to a live worker — on one SQLite file or across instances on
PostgreSQL. After a kill -9 interrupted work is picked up as soon as its lease expires
(``WORK_LEASE_SECONDS``, default 10 s), not at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

from bot.core.timing import WorkTiming
from bot.store import Database, utcnow
from bot.store import drafts as draft_rows
from bot.store import outbox as outbox_rows

log = logging.getLogger(__name__)


class LeaseKeeper:
    """The drafts this worker is working on, their leases renewed together in one statement."""

    def __init__(self, db: Database, owner: str, timing: WorkTiming) -> None:
        self.db = db
        self.owner = owner
        self.timing = timing
        self.lease = timing.lease
        self._held: set[str] = set()

    @contextlib.contextmanager
    def hold(self, draft_id: str) -> Iterator[None]:
        self._held.add(draft_id)
        try:
            yield
        finally:
            self._held.discard(draft_id)

    async def hand_back(self) -> tuple[int, int]:
        """Free every draft and reply this worker still holds, once its work was cancelled, so
        the next worker (a restart, another instance) takes them at once instead of when the
        leases expire; returns (drafts, replies)."""
        now = utcnow()
        async with self.db.write() as conn:
            drafts = await draft_rows.release_all(conn, self.owner, now)
            replies = await outbox_rows.release_all(conn, self.owner, now)
        return drafts, replies

    async def renew_forever(self) -> None:
        interval = self.timing.renew_every
        while True:
            await asyncio.sleep(interval)
            held = sorted(self._held)
            if held:
                async with self.db.write() as conn:
                    kept = await draft_rows.renew_leases(conn, held, self.owner, utcnow() + self.lease)
                lost = set(held) - kept
                if lost:
                    log.warning("lost the lease of drafts %s (another worker took them over)", ", ".join(lost))


class Sweeper:
    """Finds work nobody live is doing and hands it to the room that does it."""

    def __init__(
        self,
        db: Database,
        *,
        timing: WorkTiming,
        redraft: Callable[[str], None],
        repost: Callable[[str], Awaitable[None]],
        refresh: Callable[[str], Awaitable[None]],
        find_lost: Callable[[str], Awaitable[None]],
        deliver: Callable[[], None],
        resolve_idle: Callable[[], Awaitable[int]] | None = None,
        translate_edits: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.db = db
        self._resolve_idle = resolve_idle
        self._translate_edits = translate_edits
        self.interval = timing.sweep_seconds
        self._redraft = redraft
        self._repost = repost
        self._refresh = refresh
        self._find_lost = find_lost
        self._deliver = deliver
        self.passes = 0

    async def sweep(self) -> None:
        """One pass: drafts to (re)draft, cards to (re)post, cards to bring up to date, cards of
        superseded drafts a dead worker may have left on the desk unrecorded, conversations idle
        on their customer too long to resolve, and agents' edits whose translation an earlier
        run left."""
        now = utcnow()
        async with self.db.read() as conn:
            drafting = await draft_rows.drafting_due(conn, now, 50)
            missing = await draft_rows.cards_missing(conn, now, 20)
            stale = await draft_rows.cards_stale(conn, now - timedelta(seconds=self.interval * 2), 20)
            lost = await draft_rows.lost_cards(conn, now, 20)
        for draft_id in drafting:
            self._redraft(draft_id)
        for draft_id in missing:
            await self._repost(draft_id)
        for draft_id in stale:
            await self._refresh(draft_id)
        for draft_id in lost:
            await self._find_lost(draft_id)
        if self._resolve_idle is not None:
            await self._resolve_idle()
        if self._translate_edits is not None:
            await self._translate_edits()
        self._deliver()
        self.passes += 1

    async def run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval)
