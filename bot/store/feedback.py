"""Customer feedback rows (:mod:`bot.domain.feedback`): kept with the draft they are about, one
per customer, kind and draft; a second answer replaces the first (``INSERT … ON CONFLICT``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import Feedback
from bot.store.dialect import dialect_insert
from bot.store.schema import Draft, FeedbackRow, table_of

_feedback = table_of(FeedbackRow)


async def record(conn: AsyncConnection, feedback: Feedback, now: datetime) -> bool:
    """Keep ``feedback`` (or replace the customer's earlier answer). False: no such draft."""
    conversation_id = await conn.scalar(select(Draft.conversation_id).where(Draft.id == feedback.draft_id))
    if conversation_id is None:
        return False
    statement = dialect_insert(conn.dialect.name, _feedback).values(
        conversation_id=conversation_id,
        draft_id=feedback.draft_id,
        kind=feedback.kind,
        score=feedback.score,
        author_id=feedback.author_id,
        created_at=now,
        updated_at=now,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["draft_id", "kind", "author_id"],
            set_={"score": statement.excluded.score, "updated_at": statement.excluded.updated_at},
        )
    )
    return True
