"""Intake: the ack path. A customer message is stored, and its draft queued, in one short
transaction; drafting happens elsewhere, so the ack never waits behind a model."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot import metrics
from bot.core import edits
from bot.core.files import records_at_ack
from bot.domain.outcome import AuditLine
from bot.events import InboundMessage, MessageDeleted, MessageKind, ThreadRef
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.store import Database, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store.records import add_audit

log = logging.getLogger(__name__)

MAX_CUSTOMER_TEXT = 20_000


@dataclass(frozen=True, slots=True)
class Received:
    """What the ack stored: the new draft (None after a deletion that only retired one) and the
    drafts it superseded."""

    draft_id: str | None
    superseded: tuple[str, ...]
    #: The thread of a conversation this message opened, and its id (to greet the customer).
    opened: ThreadRef | None = None
    conversation_id: str = ""


class Intake:
    """Records customer messages exactly once."""

    def __init__(self, db: Database, policy: PolicyStore, counters: Counter[str]) -> None:
        self.db = db
        self.policy = policy
        self.counters = counters
        self.on_received: Callable[[Received], None] = lambda _received: None

    def watched(self, message: InboundMessage) -> bool:
        watch = self.policy.current.channels.watch
        return not watch or message.kind is MessageKind.DIRECT or message.thread.channel in watch

    async def receive(self, message: InboundMessage) -> bool:
        """Store the message and queue its draft. False when the event was seen before (a
        redelivery) or comes from a channel the policy does not watch: nothing is done. An edit
        (``edited``, or a message already stored under the same thread and id) goes to
        :func:`bot.core.edits.amend` instead: at most one fresh draft, never a second message."""
        if not message.edited and not self.watched(message):
            self.counters["messages_ignored_unwatched"] += 1
            metrics.event_received("ignored")
            return False
        try:
            return await self._record(message)
        except Exception:
            metrics.event_received("failed")
            raise

    async def _record(self, message: InboundMessage) -> bool:
        text = message.text[:MAX_CUSTOMER_TEXT]
        now = utcnow()
        async with self.db.write() as conn:
            if not await self._first_delivery(conn, message.event_id, now):
                return False
            # An edit, or the same message again under a new event id (Slack re-sends an edited
            # mention as a new app_mention): never a second message, draft or card. For a new
            # message the conversation row is upserted first: that locks it (PostgreSQL) until
            # this commits, so a concurrent copy of the message finds it stored; a conversation
            # this statement created holds no message yet (one statement less on the ack).
            conversation_id, created = "", False
            if not message.edited:
                conversation_id, created = await conversation_rows.open_conversation(conn, message, now)
            earlier = None
            if not created:
                earlier = await conversation_rows.find_message(conn, message.thread, message.message_id)
            repeated = message.edited or earlier is not None
            if repeated:
                amended = await edits.amend(conn, earlier, text, message.author.id, now)
            else:
                received = await self._store(conn, conversation_id, message, text, now)
                if created:
                    received = replace(received, opened=message.thread, conversation_id=conversation_id)
        if repeated:
            return self._amended(amended, "message_edited", message.event_id)
        self.counters["events_received"] += 1
        metrics.event_received("accepted")
        log_event(
            log,
            "message_received",
            conversation=conversation_id,
            draft=received.draft_id,
            platform=message.thread.platform,
            event_id=message.event_id,
            kind=str(message.kind),
            author=message.author.id,
        )
        self.on_received(received)
        return True

    async def _store(
        self, conn: AsyncConnection, conversation_id: str, message: InboundMessage, text: str, now: datetime
    ) -> Received:
        """Store a new customer message and queue its draft, in the ack's transaction."""
        if message.author.email:
            await conversation_rows.note_asker_email(conn, conversation_id, message.author.id, message.author.email)
        message_id = await conversation_rows.add_customer_message(
            conn,
            conversation_id,
            message,
            text,
            now,
            records_at_ack(message, self.policy.current.limits.max_images_per_message),
        )
        superseded = await draft_rows.supersede_open(conn, conversation_id, "a newer customer message", now)
        draft_id = await draft_rows.insert_draft(conn, conversation_id, message_id, now)
        await add_audit(
            conn,
            [AuditLine(conversation_id, None, "message", message.author.id, f"customer wrote: {text[:200]}")],
            now,
        )
        return Received(draft_id, tuple(superseded))

    async def retract(self, deleted: MessageDeleted) -> bool:
        """A customer deleted a message (see :mod:`bot.core.edits`): one short transaction, like
        the ack of a message. False when nothing changed."""
        now = utcnow()
        async with self.db.write() as conn:
            if not await self._first_delivery(conn, deleted.event_id, now):
                return False
            stored = await conversation_rows.find_message(conn, deleted.thread, deleted.message_id)
            amended = await edits.retract(conn, stored, now)
        return self._amended(amended, "message_deleted", deleted.event_id)

    async def _first_delivery(self, conn: AsyncConnection, event_id: str, now: datetime) -> bool:
        """Record a platform delivery id; False (counted) for a redelivery."""
        if await conversation_rows.record_event(conn, event_id, now):
            return True
        self.counters["events_duplicate"] += 1
        metrics.event_received("duplicate")
        return False

    def _amended(self, amended: edits.Amended | None, what: str, event_id: str) -> bool:
        """After an edit or deletion committed: log it and hand its drafts on."""
        metrics.event_received("accepted" if amended else "ignored")
        if amended is None:
            return False
        log_event(
            log,
            what,
            conversation=amended.conversation_id,
            draft=amended.new_draft or "",
            superseded=",".join(amended.superseded),
            event_id=event_id,
        )
        if amended.new_draft is not None or amended.superseded:
            self.on_received(Received(amended.new_draft, amended.superseded))
        return True

    async def has_conversation(self, thread: ThreadRef) -> bool:
        async with self.db.read() as conn:
            return await conversation_rows.has_conversation(conn, thread)
