"""Customer feedback rows (:mod:`bot.domain.feedback`): kept with the draft they are about, one
per customer, kind and draft; a second answer replaces the first (``INSERT … ON CONFLICT``). Also
the 👍 / 👎 a customer gave a reply and the per-reply counts (with the agent and model behind it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import Feedback, FeedbackKind
from bot.events import Vote
from bot.store.dialect import dialect_insert
from bot.store.schema import Draft, FeedbackRow, table_of

_feedback = table_of(FeedbackRow)
_drafts = table_of(Draft).c


@dataclass(frozen=True, slots=True)
class FeedbackCount:
    """The thumbs on one reply over a period: the draft, the agent who decided it (their
    platform id and name), the model that drafted it."""

    draft_id: str
    agent_id: str
    agent: str
    model: str
    up: int
    down: int


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


async def vote_of(conn: AsyncConnection, draft_id: str, author_id: str) -> Vote | None:
    """The customer's current 👍 / 👎 on the reply of ``draft_id``, if any."""
    found = await conn.scalar(
        select(_feedback.c.score).where(
            _feedback.c.draft_id == draft_id,
            _feedback.c.kind == FeedbackKind.REPLY,
            _feedback.c.author_id == author_id,
        )
    )
    return Vote.of_score(int(found)) if found is not None else None


async def counts(conn: AsyncConnection, since: datetime, until: datetime) -> list[FeedbackCount]:
    """The 👍 / 👎 per reply whose current answer was given in ``[since, until)``, with the agent
    and model behind it."""
    f = _feedback.c
    up = func.sum(case((f.score > 0, 1), else_=0))
    down = func.sum(case((f.score < 0, 1), else_=0))
    rows = await conn.execute(
        select(f.draft_id, _drafts.decided_by_id, _drafts.decided_by, _drafts.model, up, down)
        .join(table_of(Draft), _drafts.id == f.draft_id)
        .where(f.kind == FeedbackKind.REPLY, f.updated_at >= since, f.updated_at < until)
        .group_by(f.draft_id, _drafts.decided_by_id, _drafts.decided_by, _drafts.model)
        .order_by(f.draft_id)
    )
    return [FeedbackCount(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in rows]
