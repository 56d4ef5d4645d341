"""The policy's fixed texts (acknowledgement, out of hours, hand-off) on their way to a customer.

They are the managers' words, never the model's, and go through the outbox like an approved
reply: :func:`claim` inserts the text under its idempotency key in the very transaction that
decides to send it (the key is unique, so a text is claimed once per key whoever decides it), and
the dispatcher posts it exactly once (a crash before the post leaves the row due; after it, the
next attempt finds the post by its key). A key names the conversation and its *opening*: the
first, plus one per ``reopened`` audit line (a customer writing after Resolve).

The language: the conversation's ``language`` fact; without one, the language detected in the
customer's words (:mod:`bot.core.language`), recorded as that fact; the policy's text for that
language when it has one, else its default text."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core import language as languages
from bot.domain.outcome import AuditLine
from bot.domain.states import OutboxKind
from bot.events import ThreadRef
from bot.store import conversations as conversation_rows
from bot.store import outbox as outbox_rows
from bot.store import records
from bot.store.schema import AuditEvent, Message, table_of

_audit, _messages = table_of(AuditEvent).c, table_of(Message).c
#: How many of the customer's newest messages the language is told from (handoff).
LANGUAGE_FROM_MESSAGES = 3


async def opening(conn: AsyncConnection, conversation_id: str) -> int:
    """Which opening of the conversation this is (1, then one more per reopening)."""
    reopened = await conn.scalar(
        select(func.count()).where(_audit.conversation_id == conversation_id, _audit.kind == "reopened")
    )
    return int(reopened or 0) + 1


def in_language(default: str, texts: Mapping[str, str], language: str | None) -> str:
    """The policy's text for ``language`` when it has one, else ``default``."""
    return (texts.get(language.strip().lower()) if language else None) or default


async def customer_text(conn: AsyncConnection, conversation_id: str) -> str:
    """The customer's newest few messages, oldest first (what their language is told from)."""
    rows = await conn.scalars(
        select(_messages.text)
        .where(_messages.conversation_id == conversation_id, _messages.role == "customer")
        .order_by(_messages.id.desc())
        .limit(LANGUAGE_FROM_MESSAGES)
    )
    return "\n".join(reversed(list(rows)))


async def language_of(conn: AsyncConnection, conversation_id: str, facts: Mapping[str, Any], text: str) -> str | None:
    """The conversation's language: its ``language`` fact, else the one detected in ``text``
    (then recorded as the fact); None when neither says."""
    known = facts.get("language")
    if isinstance(known, str) and known.strip():
        return known.strip().lower()
    detected = languages.detect(text)
    if detected is not None:
        await conversation_rows.note_fact(conn, conversation_id, "language", detected)
    return detected


async def claim(
    conn: AsyncConnection,
    kind: OutboxKind,
    conversation_id: str,
    thread: ThreadRef,
    key: str,
    text: str,
    now: datetime,
) -> bool:
    """Queue ``text`` for the customer under ``key``, with an audit line, in the caller's
    transaction; False (nothing queued) when that key was claimed before."""
    if not await outbox_rows.enqueue_text(conn, kind, conversation_id, thread.key, key, text, now):
        return False
    await records.add_audit(conn, [AuditLine(conversation_id, None, str(kind), "policy", key)], now)
    return True
