"""Review cards on the desk: posted once, adopted after a crash, refreshed after every change.

A card carries its draft's key (``card-<draft id>``). Before posting a card whose earlier post
may have reached the desk (the worker died in between), the publisher asks the desk for the key
and adopts the card it finds. Every change a card shows bumps the draft's ``version``; the card
records the version it shows, so a failed update is retried by the sweeper until it is true.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from bot import metrics
from bot.cards import build_card
from bot.core.timing import WorkTiming
from bot.errors import PlatformError, PlatformRateLimited
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.ports import ReviewCard, ReviewDesk
from bot.store import Database, utcnow
from bot.store import cards as card_rows
from bot.store import drafts as draft_rows
from bot.store.cards import CardSource

log = logging.getLogger(__name__)


#: How many times one refresh updates a card that keeps falling behind (each change of the
#: draft also asks for its own refresh).
REFRESH_ROUNDS = 3


def card_key(draft_id: str) -> str:
    return f"card-{draft_id}"


class CardPublisher:
    """Puts cards on the review desk and keeps them true."""

    def __init__(
        self, db: Database, policy: PolicyStore, counters: Counter[str], owner: str, timing: WorkTiming
    ) -> None:
        self.db = db
        self.timing = timing
        self.policy = policy
        self.counters = counters
        self.owner = owner
        self.desks: dict[str, ReviewDesk] = {}
        self.desk: ReviewDesk | None = None

    def add_desk(self, desk: ReviewDesk, *, preferred: bool = False) -> None:
        """Register a review desk; the preferred one (or the first) receives new cards."""
        self.desks[desk.name] = desk
        if preferred or self.desk is None:
            self.desk = desk

    def card(self, source: CardSource, desk_name: str) -> ReviewCard:
        return build_card(source, self.policy.current, desk_name)

    async def open(self, source: CardSource, *, adopt: bool) -> str | None:
        """Put a card up while the draft is still being written (it fills in as Kimi streams);
        the reference is recorded when the draft is done. None: no card yet (it is posted then).
        ``adopt``: a card from an earlier, interrupted attempt may be there; take it over."""
        desk = self.desk
        if desk is None:
            return None
        key = card_key(source.draft_id)
        try:
            ref = await desk.find_card(key) if adopt else None
            if ref is not None:
                await desk.update_card(ref, self.card(source, desk.name))
                return ref
            return await desk.post_card(self.card(source, desk.name), idempotency_key=key)
        except PlatformError as exc:
            _failed(exc, "opening the card of draft %s failed; it is posted when the draft is done", source.draft_id)
            metrics.platform_error(desk.name, "post_card")
            return None

    async def show_progress(self, ref: str, source: CardSource, steps: tuple[str, ...] = ()) -> None:
        """The draft so far, and the steps drafting took, on its open card (best effort: the
        final card follows anyway)."""
        desk = self.desk
        if desk is None:
            return
        try:
            await desk.update_card(ref, replace(self.card(source, desk.name), progress=steps))
        except PlatformError as exc:
            log.warning("updating the forming card of draft %s failed: %s", source.draft_id, exc)
            metrics.platform_error(desk.name, "update_card")

    async def publish(self, source: CardSource, version: int, *, adopt: bool = False, ref: str | None = None) -> bool:
        """Show a card for a draft whose lease this worker holds, then release the lease.
        ``adopt``: an earlier post may have reached the desk; look for it first. ``ref``: the
        card opened while the draft was being written, which this updates."""
        desk = self.desk
        if desk is None:
            log.error("no review desk is configured: draft %s waits in the database", source.draft_id)
            return False
        card = self.card(source, desk.name)
        key = card_key(source.draft_id)
        shown_at = utcnow()  # before the post: an agent may click before it returns
        try:
            if ref is None and adopt:
                ref = await desk.find_card(key)
                if ref is not None:
                    self.counters["cards_adopted"] += 1
            if ref is not None:
                await desk.update_card(ref, card)
            else:
                ref = await desk.post_card(card, idempotency_key=key)
                self.counters["cards_posted"] += 1
        except PlatformError as exc:
            _failed(exc, "posting the card of draft %s failed; it will be retried", source.draft_id)
            metrics.platform_error(desk.name, "post_card")
            async with self.db.write() as conn:
                await draft_rows.postpone(conn, source.draft_id, self.owner, utcnow() + self.timing.card_retry_after)
            return False
        async with self.db.write() as conn:
            current = await draft_rows.card_posted(conn, source.draft_id, self.owner, desk.name, ref, version, shown_at)
        desk.cards_changed()
        log_event(log, "card_posted", draft=source.draft_id, platform=desk.name, card=ref, adopted=adopt)
        if current is not None and current > version:
            await self.refresh(source.draft_id)  # a click or a newer message changed it meanwhile
        return True

    async def recover(self, draft_id: str) -> None:
        """Post (or adopt) the card of a draft whose card never made it to the desk."""
        async with self.db.write() as conn:
            if not await draft_rows.claim_for_card(conn, draft_id, self.owner, utcnow(), self.timing.card_claim):
                return
        source = await self.load(draft_id)
        if source is not None:
            await self.publish(source, source.draft.version, adopt=True)

    async def find_lost_card(self, draft_id: str) -> None:
        """A draft superseded while the worker that was posting (or streaming) its card died: the
        card may be on the desk with no record of it here, still offering Approve on words
        nobody should send. Found, it is recorded and made to say the draft is superseded; not
        found, nothing is posted (the newer draft has its own card). A desk that fails is asked
        again once the claim runs out."""
        async with self.db.write() as conn:
            if not await draft_rows.claim_lost_card(conn, draft_id, self.owner, utcnow(), self.timing.card_claim):
                return
        desk, source = self.desk, await self.load(draft_id)
        ref: str | None = None
        try:
            if desk is not None and source is not None:
                ref = await desk.find_card(card_key(draft_id))
                if ref is not None:
                    await desk.update_card(ref, self.card(source, desk.name))
        except PlatformError as exc:
            _failed(exc, "looking for the card of superseded draft %s failed; it will be retried", draft_id)
            return
        async with self.db.write() as conn:
            if desk is None or source is None or ref is None:
                await draft_rows.release(conn, draft_id, self.owner)
                return
            await draft_rows.card_posted(conn, draft_id, self.owner, desk.name, ref, source.draft.version, utcnow())
        self.counters["cards_adopted"] += 1
        desk.cards_changed()
        log_event(log, "card_found", draft=draft_id, platform=desk.name, card=ref)

    async def keep_superseded(self, ref: str, draft_id: str) -> None:
        """The card opened while a draft was being written, whose draft was superseded before it
        was done: recorded, and made to say so (it would otherwise stay half-written)."""
        desk, source = self.desk, await self.load(draft_id)
        if desk is None or source is None:
            return
        shown = source.draft.version
        try:
            await desk.update_card(ref, self.card(source, desk.name))
        except PlatformError as exc:
            _failed(exc, "updating the card of superseded draft %s failed; it will be retried", draft_id)
            shown = 0  # out of date: the sweeper refreshes it
        async with self.db.write() as conn:
            await draft_rows.card_recorded(conn, draft_id, desk.name, ref, shown)
        desk.cards_changed()

    async def refresh(self, draft_id: str) -> None:
        """Update a draft's card to what the draft is now.

        Two updates of one card may cross on their way to the desk (a click's, held back by a
        rate limit, lands after the delivery's): the one that showed an older version learns it
        when it records what it showed, and updates the card again."""
        for _ in range(REFRESH_ROUNDS):
            source = await self.load(draft_id)
            if source is None:
                return
            version, ref = source.draft.version, source.draft.card_ref
            desk = self.desks.get(source.draft.card_desk)
            if desk is None or not ref:
                return  # not on a desk yet: recovery posts it, already up to date
            try:
                await desk.update_card(ref, self.card(source, desk.name))
            except PlatformError as exc:
                _failed(exc, "updating the card of draft %s failed; it will be retried", draft_id)
                metrics.platform_error(desk.name, "update_card")
                return
            async with self.db.write() as conn:
                current = await draft_rows.card_shown(conn, draft_id, version)
            if current is None or current <= version:
                return

    async def load(self, draft_id: str) -> CardSource | None:
        """The card's facts as stored (with its version and where it is shown)."""
        async with self.db.read() as conn:
            return await card_rows.load_card(conn, draft_id, self.policy.current.desk.language)

    async def notice(self, text: str) -> None:
        """A plain notice for the agents on every desk (a policy that failed to reload)."""
        for desk in self.desks.values():
            try:
                await desk.post_notice(text)
            except PlatformError as exc:
                log.error("could not post a notice to %s: %s", desk.name, exc)


def _failed(error: PlatformError, message: str, draft_id: str) -> None:
    """A desk call that failed and is retried later: a rate limit the platform's client could not
    sit through is one warning line (it passes); any other refusal is an error with its cause."""
    if isinstance(error, PlatformRateLimited):
        log.warning(message + ": %s", draft_id, error)
    else:
        log.error(message, draft_id, exc_info=error)
