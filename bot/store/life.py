"""A conversation's life: its status (open, waiting on customer, resolved), its owner (the bot
drafts, or a human answers) and its assignee. Every move is a compare-and-set on the current
value, checked against its transition table (:mod:`bot.domain.states`) before it is issued, so
the first writer wins and an illegal move is a programming error, never a silent write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import ConversationOwner, ConversationStatus, check_transition
from bot.store.schema import Conversation, Draft, Message, table_of

_conversations = table_of(Conversation)
_drafts = table_of(Draft)
_messages = table_of(Message)
c = _conversations.c


@dataclass(frozen=True, slots=True)
class Life:
    """A conversation's life as stored, with its customer (who is speaking is decided against it)."""

    conversation_id: str
    customer_id: str
    status: ConversationStatus = ConversationStatus.OPEN
    owner: ConversationOwner = ConversationOwner.BOT
    owner_reason: str = ""
    assignee_id: str = ""
    assignee: str = ""


async def lock(conn: AsyncConnection, conversation_id: str | ScalarSelect[Any]) -> None:
    """On PostgreSQL, lock the conversation's row for the caller's transaction, before any of its
    drafts: every transaction that writes a conversation and its drafts takes the conversation
    first (a message superseding drafts, a click, a draft's outcome saving facts), so two of them
    queue instead of deadlocking. SQLite has one writer and needs no row lock."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(c.id).where(c.id == conversation_id).with_for_update())


async def load(conn: AsyncConnection, conversation_id: str) -> Life | None:
    """The conversation's life; on PostgreSQL its row is locked for the caller's transaction
    (a decision and a message about the same conversation then take turns)."""
    query = select(*LIFE_COLUMNS).where(c.id == conversation_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else life_of_row(row)


#: The columns a :class:`Life` is read from (:func:`life_of_row`).
LIFE_COLUMNS = (c.id, c.customer_id, c.status, c.owner, c.owner_reason, c.assignee_id, c.assignee)


def life_of_row(row: Any) -> Life:
    """A :class:`Life` from a row holding :data:`LIFE_COLUMNS`."""
    return Life(
        row.id,
        row.customer_id,
        ConversationStatus(row.status),
        ConversationOwner(row.owner),
        row.owner_reason,
        row.assignee_id,
        row.assignee,
    )


async def move_status(
    conn: AsyncConnection,
    conversation_id: str,
    current: ConversationStatus,
    target: ConversationStatus,
    now: datetime,
) -> bool:
    """``current → target``, by exactly one writer."""
    check_transition(current, target)
    result = await conn.execute(
        update(_conversations)
        .where(c.id == conversation_id, c.status == current)
        .values(status=target, status_at=now, updated_at=now)
    )
    return bool(result.rowcount == 1)


async def move_owner(
    conn: AsyncConnection,
    conversation_id: str,
    current: ConversationOwner,
    target: ConversationOwner,
    now: datetime,
    *,
    reason: str,
    **assign: Any,
) -> bool:
    """``current → target`` with why (``reason``, shown on the card) and, optionally, the new
    assignee (``assignee_id``, ``assignee``), by exactly one writer."""
    check_transition(current, target)
    unknown = set(assign) - {"assignee_id", "assignee"}
    if unknown:
        raise TypeError(f"move_owner sets only the assignee, not {', '.join(sorted(unknown))}")
    result = await conn.execute(
        update(_conversations)
        .where(c.id == conversation_id, c.owner == current)
        .values(owner=target, owner_reason=reason[:500], updated_at=now, **assign)
    )
    return bool(result.rowcount == 1)


async def assign(
    conn: AsyncConnection, conversation_id: str, current_id: str, assignee_id: str, assignee: str, now: datetime
) -> bool:
    """Set the assignee, if it is still ``current_id`` (a claim: the first click wins)."""
    result = await conn.execute(
        update(_conversations)
        .where(c.id == conversation_id, c.assignee_id == current_id)
        .values(assignee_id=assignee_id, assignee=assignee[:255], updated_at=now)
    )
    return bool(result.rowcount == 1)


async def waiting_since(conn: AsyncConnection, before: datetime, limit: int) -> list[str]:
    """Conversations waiting on their customer since before ``before`` (auto-resolve)."""
    rows = await conn.execute(
        select(c.id)
        .where(c.status == ConversationStatus.WAITING_ON_CUSTOMER, c.status_at < before)
        .order_by(c.status_at)
        .limit(limit)
    )
    return [str(r) for r in rows.scalars()]


async def latest_card(conn: AsyncConnection, conversation_id: str) -> str | None:
    """The draft whose card is the conversation's newest on the desk (None: no card yet)."""
    d = _drafts.c
    found = await conn.scalar(
        select(d.id)
        .where(d.conversation_id == conversation_id, d.card_ref != "")
        .order_by(d.created_at.desc(), d.revision.desc())
        .limit(1)
    )
    return None if found is None else str(found)


async def customer_wrote_since(conn: AsyncConnection, conversation_id: str, message_id: int) -> str:
    """The customer's newest message after ``message_id`` (what a card of an older message shows
    when nobody drafts for it: the conversation is a human's), or ""."""
    m = _messages.c
    text = await conn.scalar(
        select(m.text)
        .where(m.conversation_id == conversation_id, m.id > message_id, m.role == "customer")
        .order_by(m.id.desc())
        .limit(1)
    )
    return str(text or "")


async def touch_card(conn: AsyncConnection, draft_id: str, now: datetime) -> None:
    """The conversation a card shows changed: bump the draft's version, so its card is refreshed
    (and, should that fail, the sweeper finds it stale and refreshes it again)."""
    d = _drafts.c
    await conn.execute(update(_drafts).where(d.id == draft_id).values(version=d.version + 1, updated_at=now))


async def unanswered_customer_message(conn: AsyncConnection, conversation_id: str) -> int | None:
    """The id of the conversation's newest message when the customer wrote it (nobody answered
    since: not the bot, not an agent), else None."""
    m = _messages.c
    row = (
        await conn.execute(
            select(m.id, m.role)
            .where(m.conversation_id == conversation_id, m.role != "outsider")
            .order_by(m.id.desc())
            .limit(1)
        )
    ).first()
    return int(row.id) if row is not None and row.role == "customer" else None
