"""Intake: the ack path. A customer message is stored, and its draft queued, in one short
transaction; drafting happens elsewhere, so the ack never waits behind a model."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bot import metrics
from bot.core.files import records_at_ack
from bot.domain.outcome import AuditLine
from bot.events import InboundMessage, MessageKind, ThreadRef
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
    """What the ack stored: the new draft and the drafts it superseded."""

    draft_id: str
    superseded: tuple[str, ...]


class Intake:
    """Records customer messages exactly once."""

    def __init__(self, db: Database, policy: PolicyStore, counters: Counter[str]) -> None:
        self.db = db
        self.policy = policy
        self.counters = counters
        self.on_received: Callable[[Received], None] = lambda _received: None
        #: Whether the thread's workspace is served (:class:`bot.core.allowlist.WorkspaceAllowlist`).
        self.served: Callable[[ThreadRef], bool] = lambda _thread: True

    def watched(self, message: InboundMessage) -> bool:
        watch = self.policy.current.channels.watch
        return not watch or message.kind is MessageKind.DIRECT or message.thread.channel in watch

    async def receive(self, message: InboundMessage) -> bool:
        """Store the message and queue its draft. False when the event was seen before (a
        redelivery), comes from a workspace not served or a channel the policy does not watch:
        nothing is done."""
        if not self.served(message.thread):
            metrics.event_received("ignored")
            return False
        if not self.watched(message):
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
            if not await conversation_rows.record_event(conn, message.event_id, now):
                self.counters["events_duplicate"] += 1
                metrics.event_received("duplicate")
                return False
            conversation_id = await conversation_rows.upsert_conversation(conn, message, now)
            if message.author.email:
                await conversation_rows.note_asker_email(conn, conversation_id, message.author.id, message.author.email)
            message_id = await conversation_rows.add_customer_message(
                conn, conversation_id, message, text, now, records_at_ack(message)
            )
            superseded = await draft_rows.supersede_open(conn, conversation_id, "a newer customer message", now)
            draft_id = await draft_rows.insert_draft(conn, conversation_id, message_id, now)
            await add_audit(
                conn,
                [AuditLine(conversation_id, None, "message", message.author.id, f"customer wrote: {text[:200]}")],
                now,
            )
        self.counters["events_received"] += 1
        metrics.event_received("accepted")
        log_event(
            log,
            "message_received",
            conversation=conversation_id,
            draft=draft_id,
            platform=message.thread.platform,
            event_id=message.event_id,
            kind=str(message.kind),
            author=message.author.id,
        )
        self.on_received(Received(draft_id, tuple(superseded)))
        return True

    async def has_conversation(self, thread: ThreadRef) -> bool:
        async with self.db.read() as conn:
            return await conversation_rows.has_conversation(conn, thread)
