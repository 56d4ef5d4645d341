"""A conversation's life outside the review desk's clicks: escalation hands it to a human, and
the sweeper resolves conversations that waited on their customer too long.

The clicks (Take over, Hand back, Claim, Resolve) are decisions in :mod:`bot.core.review`; who is
speaking in a thread and what their message does is :mod:`bot.core.intake`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.outcome import AuditLine
from bot.domain.states import ConversationOwner, ConversationStatus
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.store import Database, records, utcnow
from bot.store import life as life_rows
from bot.store.conversations import ConversationState

log = logging.getLogger(__name__)

#: Conversations resolved per sweep at most (the rest wait for the next pass).
RESOLVE_BATCH = 100


def escalated(conversation: ConversationState, reason: str) -> ConversationState:
    """The conversation as :func:`on_escalated` left it (for the card drafting shows at once)."""
    if not reason or conversation.owner is ConversationOwner.HUMAN:
        return conversation
    return dataclasses.replace(conversation, owner=ConversationOwner.HUMAN, owner_reason=f"escalated: {reason}")


async def on_escalated(conn: AsyncConnection, conversation_id: str, reason: str, now: datetime) -> bool:
    """THE escalation hook, called in the transaction that records an escalated draft (ready or
    failed): the conversation becomes a human's, so the bot drafts nothing more there until an
    agent hands it back. Returns True when this call made it human-owned.

    When it returns True the caller claims the policy's hand-off text in the same transaction
    (:func:`bot.core.handoff.claim`, once per opening of the conversation)."""
    moved = await life_rows.move_owner(
        conn, conversation_id, ConversationOwner.BOT, ConversationOwner.HUMAN, now, reason=f"escalated: {reason}"
    )
    if moved:
        await records.add_audit(conn, [AuditLine(conversation_id, None, "escalated", "policy", reason[:300])], now)
    return moved


class AutoResolver:
    """Resolves conversations waiting on their customer longer than ``[desk] auto_resolve_hours``
    (run by the sweeper); each one's newest card is refreshed to show it."""

    def __init__(self, db: Database, policy: PolicyStore, refresh: Callable[[str], None]) -> None:
        self.db = db
        self.policy = policy
        self.refresh = refresh

    async def sweep(self) -> int:
        hours = self.policy.current.desk.auto_resolve_hours
        if hours <= 0:
            return 0
        now = utcnow()
        async with self.db.read() as conn:
            due = await life_rows.waiting_since(conn, now - timedelta(hours=hours), RESOLVE_BATCH)
        resolved = 0
        for conversation_id in due:
            async with self.db.write() as conn:
                if not await life_rows.move_status(
                    conn, conversation_id, ConversationStatus.WAITING_ON_CUSTOMER, ConversationStatus.RESOLVED, now
                ):
                    continue  # the customer wrote meanwhile
                card = await life_rows.latest_card(conn, conversation_id)
                if card is not None:
                    await life_rows.touch_card(conn, card, now)
                why = f"no answer from the customer in {hours:g} h"
                await records.add_audit(conn, [AuditLine(conversation_id, None, "resolved", "sweeper", why)], now)
            resolved += 1
            log_event(log, "conversation_resolved", conversation=conversation_id, by="auto_resolve")
            if card is not None:
                self.refresh(card)
        return resolved
