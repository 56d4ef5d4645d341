"""Review cards on the desk: posted once, adopted after a crash, refreshed after every change.

A card carries its draft's key (``card-<draft id>``). Before posting a card whose earlier post
may have reached the desk (the worker died in between), the publisher asks the desk for the key
and adopts the card it finds. Every change a card shows bumps the draft's ``version``; the card
records the version it shows, so a failed update is retried by the sweeper until it is true.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from bot import identity, metrics
from bot.cards import CardSource, build_card, life_of
from bot.core.files import card_lines
from bot.domain.states import DraftStatus
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.ports import ReviewCard, ReviewDesk, ToolLookup
from bot.store import Database, records, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store import outbox as outbox_rows
from bot.store.schema import Conversation, Draft, Message

log = logging.getLogger(__name__)

RETRY_AFTER = timedelta(seconds=3)


def card_key(draft_id: str) -> str:
    return f"card-{draft_id}"


class CardPublisher:
    """Puts cards on the review desk and keeps them true."""

    def __init__(self, db: Database, policy: PolicyStore, counters: Counter[str], owner: str) -> None:
        self.db = db
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
        except Exception:
            log.exception("opening the card of draft %s failed; it is posted when the draft is done", source.draft_id)
            metrics.platform_error(desk.name, "post_card")
            return None

    async def show_progress(self, ref: str, source: CardSource) -> None:
        """The draft so far on its open card (best effort: the final card follows anyway)."""
        desk = self.desk
        if desk is None:
            return
        try:
            await desk.update_card(ref, self.card(source, desk.name))
        except Exception:
            log.warning("updating the forming card of draft %s failed", source.draft_id, exc_info=True)
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
        except Exception:
            log.exception("posting the card of draft %s failed; it will be retried", source.draft_id)
            metrics.platform_error(desk.name, "post_card")
            async with self.db.write() as conn:
                await draft_rows.postpone(conn, source.draft_id, self.owner, utcnow() + RETRY_AFTER)
            return False
        async with self.db.write() as conn:
            current = await draft_rows.card_posted(conn, source.draft_id, self.owner, desk.name, ref, version)
        log_event(log, "card_posted", draft=source.draft_id, platform=desk.name, card=ref, adopted=adopt)
        if current is not None and current > version:
            await self.refresh(source.draft_id)  # a click or a newer message changed it meanwhile
        return True

    async def recover(self, draft_id: str) -> None:
        """Post (or adopt) the card of a draft whose card never made it to the desk."""
        async with self.db.write() as conn:
            if not await draft_rows.claim_for_card(conn, draft_id, self.owner, utcnow(), RETRY_AFTER * 4):
                return
        loaded = await self.load(draft_id)
        if loaded is None:
            return
        source, version, _desk, _ref = loaded
        await self.publish(source, version, adopt=True)

    async def refresh(self, draft_id: str) -> None:
        """Update a draft's card to what the draft is now."""
        loaded = await self.load(draft_id)
        if loaded is None:
            return
        source, version, desk_name, ref = loaded
        desk = self.desks.get(desk_name)
        if desk is None or not ref:
            return  # not on a desk yet: recovery posts it, already up to date
        try:
            await desk.update_card(ref, self.card(source, desk.name))
        except Exception:
            log.exception("updating the card of draft %s failed; it will be retried", draft_id)
            metrics.platform_error(desk.name, "update_card")
            return
        async with self.db.write() as conn:
            await draft_rows.card_shown(conn, draft_id, version)

    async def load(self, draft_id: str) -> tuple[CardSource, int, str, str] | None:
        """The card's facts as stored: (source, version, desk name, card ref)."""
        d, c, m = Draft.__table__.c, Conversation.__table__.c, Message.__table__.c
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        d.id,
                        d.conversation_id,
                        d.message_id,
                        d.status,
                        d.revision,
                        d.text,
                        d.edited_text,
                        d.model,
                        d.failure,
                        d.notice,
                        d.escalation,
                        d.decided_by,
                        d.decided_at,
                        d.version,
                        d.card_desk,
                        d.card_ref,
                        c.customer_name,
                        c.customer_id,
                        c.location,
                        c.thread_key,
                        m.text.label("customer_text"),
                        m.attachments,
                        m.author_id,
                        d.guard_flags,
                    )
                    .join(Conversation.__table__, c.id == d.conversation_id)
                    .join(Message.__table__, m.id == d.message_id)
                    .where(d.id == draft_id)
                )
            ).first()
            if row is None:
                return None
            conversation = await conversation_rows.load_conversation(conn, row.conversation_id)
            calls = await records.tool_calls_of(conn, draft_id)
            actions = await records.actions_of(conn, draft_id)
            sent = await outbox_rows.of_draft(conn, draft_id)
            wrote = await life_rows.customer_wrote_since(conn, row.conversation_id, row.message_id)
        source = CardSource(
            draft_id=row.id,
            status=DraftStatus(row.status),
            revision=row.revision,
            asked_by=row.customer_name or row.customer_id,
            where=row.location or row.thread_key,
            customer_text=row.customer_text,
            text=row.text,
            edited_text=row.edited_text,
            model=row.model,
            failure=row.failure,
            notice=row.notice,
            escalation=row.escalation,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            attachments=card_lines(row.attachments or []),
            lookups=tuple(ToolLookup(t.name, t.summary, ok=not t.error) for t in calls),
            actions=actions,
            outbox=sent,
            identity=identity.card_line(conversation, row.author_id),
            flags=tuple(str(f) for f in row.guard_flags or ()),
            life=life_of(conversation, customer_wrote=wrote),
        )
        return source, int(row.version), row.card_desk, row.card_ref

    async def notice(self, text: str) -> None:
        """A plain notice for the agents on every desk (a policy that failed to reload)."""
        for desk in self.desks.values():
            try:
                await desk.post_notice(text)
            except Exception:
                log.exception("could not post a notice to %s", desk.name)
