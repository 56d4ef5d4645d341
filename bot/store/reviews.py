"""The draft a review decision is about, read (and on PostgreSQL row-locked) inside the
decision's transaction, and the texts an edit form starts from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import DraftStatus
from bot.events import Place
from bot.store import life
from bot.store.schema import Conversation, Draft, table_of

_drafts = table_of(Draft)
_conversations = table_of(Conversation)


@dataclass(slots=True)
class DraftUnderReview:
    """The draft a decision is about, as read inside the decision's transaction."""

    id: str
    conversation_id: str
    thread_key: str
    message_id: int
    status: DraftStatus
    revision: int
    text: str
    edited_text: str | None
    decided_by: str
    shown_at: datetime | None
    #: Where the conversation is (an older instance's row, without one, reads as public).
    place: Place = Place.PUBLIC
    #: What the card says about the draft (:func:`bot.public_places.by_direct_message` reads it).
    notice: str = ""


async def load_for_review(conn: AsyncConnection, draft_id: str) -> DraftUnderReview | None:
    d, c = _drafts.c, _conversations.c
    query = (
        select(
            d.id,
            d.conversation_id,
            c.thread_key,
            d.message_id,
            d.status,
            d.revision,
            d.text,
            d.edited_text,
            d.decided_by,
            d.shown_at,
            c.place,
            d.notice,
        )
        .join(_conversations, c.id == d.conversation_id)
        .where(d.id == draft_id)
    )
    if conn.dialect.name == "postgresql":
        await life.lock(conn, select(d.conversation_id).where(d.id == draft_id).scalar_subquery())
        query = query.with_for_update(of=_drafts)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return DraftUnderReview(
        row.id,
        row.conversation_id,
        row.thread_key,
        row.message_id,
        DraftStatus(row.status),
        row.revision,
        row.text,
        row.edited_text,
        row.decided_by,
        row.shown_at,
        Place(row.place or Place.PUBLIC),
        row.notice,
    )


async def reply_text(conn: AsyncConnection, draft_id: str) -> str | None:
    """The reply an edit form starts from (an earlier edit, else the draft); None: no draft."""
    d = _drafts.c
    row = (await conn.execute(select(d.text, d.edited_text).where(d.id == draft_id))).first()
    return None if row is None else str(row.edited_text or row.text)
