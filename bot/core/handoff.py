"""The policy's fixed hand-off text (``[desk] handoff``, ``[desk.handoff_texts]``): what a
customer is told when an escalation hands their conversation to a human. The managers' words,
never the model's; off while empty.

Once per opening of a conversation: when :func:`bot.core.lifecycle.on_escalated` moved the
conversation from the bot to a human, :func:`claim` records a ``handoff`` audit line keyed
``handoff-<conversation>-<opening>`` in that same transaction, unless this opening already has one
(an agent handed it back and it escalated again). The opening counts the ``reopened`` lines: a
customer writing after Resolve starts the next one. The text is posted right after the commit with
that key as the post's idempotency key (in the background, like the greeting), not through the outbox (the outbox
holds one row per draft and the escalated draft may still be approved): a crash between the
commit and the post loses that one hand-off text.

The language: the bot detects none. The text of ``[desk.handoff_texts]`` named by the
conversation's ``language`` fact (when one was recorded) is used, else ``handoff``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import metrics
from bot.domain.outcome import AuditLine
from bot.events import ThreadRef
from bot.policy import DeskSlaFields
from bot.ports import CustomerChannel
from bot.store import conversations as conversation_rows
from bot.store import records
from bot.store.schema import AuditEvent

log = logging.getLogger(__name__)

_audit = AuditEvent.__table__.c


def handoff_text(desk: DeskSlaFields, facts: Mapping[str, Any]) -> str:
    """The hand-off text for a conversation with these facts ("": say nothing)."""
    language = facts.get("language")
    if isinstance(language, str):
        chosen = desk.handoff_texts.get(language.strip().lower())
        if chosen:
            return chosen
    return desk.handoff


@dataclass(frozen=True, slots=True)
class Handoff:
    """A hand-off text due in a customer's thread."""

    thread: ThreadRef
    text: str
    key: str


async def _count(conn: AsyncConnection, conversation_id: str, kind: str, summary: str | None = None) -> int:
    query = select(func.count()).where(_audit.conversation_id == conversation_id, _audit.kind == kind)
    if summary is not None:
        query = query.where(_audit.summary == summary)
    return int((await conn.execute(query)).scalar_one())


async def claim(conn: AsyncConnection, conversation_id: str, desk: DeskSlaFields, now: datetime) -> Handoff | None:
    """In the transaction where the conversation became a human's: the hand-off text to post,
    or None (none configured, or this opening had it already)."""
    if not desk.handoff and not desk.handoff_texts:
        return None
    conversation = await conversation_rows.load_conversation(conn, conversation_id)
    text = handoff_text(desk, conversation.facts)
    if not text:
        return None
    key = f"handoff-{conversation_id}-{await _count(conn, conversation_id, 'reopened') + 1}"
    if await _count(conn, conversation_id, "handoff", key):
        return None
    await records.add_audit(conn, [AuditLine(conversation_id, None, "handoff", "policy", key)], now)
    return Handoff(conversation.thread, text, key)


async def post(channels: Mapping[str, CustomerChannel], handoff: Handoff) -> None:
    """Post a claimed hand-off text (a failure is logged and counted, not retried)."""
    channel = channels.get(handoff.thread.platform)
    if channel is None:
        return
    try:
        await channel.post_reply(handoff.thread, handoff.text, idempotency_key=handoff.key)
    except Exception:
        log.exception("the hand-off text %s could not be posted", handoff.key)
        metrics.platform_error(handoff.thread.platform, "post_reply")
