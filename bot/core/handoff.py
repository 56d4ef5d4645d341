"""The policy's fixed hand-off text (``[desk] handoff``, ``[desk.handoff_texts]``): what a
customer is told when an escalation hands their conversation to a human. The managers' words,
never the model's; off while empty.

Once per opening of a conversation: when :func:`bot.core.lifecycle.on_escalated` moved the
conversation from the bot to a human, :func:`claim` queues the text in the outbox under the key
``handoff-<conversation>-<opening>`` in that same transaction (:mod:`bot.core.fixed_texts`); an
opening that had it already (an agent handed it back and it escalated again) gets nothing more.
The dispatcher posts it exactly once, a crash before or during the post included.

The language: the conversation's ``language`` fact, else the one detected in the customer's
newest messages (recorded as that fact); its ``[desk.handoff_texts]`` text, else ``handoff``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core import fixed_texts
from bot.domain.states import OutboxKind
from bot.policy import DeskSlaFields
from bot.store import conversations as conversation_rows


async def claim(conn: AsyncConnection, conversation_id: str, desk: DeskSlaFields, now: datetime) -> bool:
    """In the transaction where the conversation became a human's: queue the hand-off text;
    False when none is configured or this opening had it already."""
    if not desk.handoff and not desk.handoff_texts:
        return False
    conversation = await conversation_rows.load_conversation(conn, conversation_id)
    language = None
    if desk.handoff_texts:
        said = await fixed_texts.customer_text(conn, conversation_id)
        language = await fixed_texts.language_of(conn, conversation_id, conversation.facts, said)
    text = fixed_texts.in_language(desk.handoff, desk.handoff_texts, language)
    if not text:
        return False
    key = f"handoff-{conversation_id}-{await fixed_texts.opening(conn, conversation_id)}"
    return await fixed_texts.claim(conn, OutboxKind.HANDOFF, conversation_id, conversation.thread, key, text, now)
