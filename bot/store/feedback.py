"""The customers' ratings of delivered replies (``feedback``): one row per customer per reply,
whose vote a second click changes, and the counts a report reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.events import Vote
from bot.store.dialect import dialect_insert
from bot.store.schema import Draft, Feedback, table_of

_feedback = table_of(Feedback)
_drafts = table_of(Draft).c


@dataclass(frozen=True, slots=True)
class FeedbackCount:
    """The votes on one reply over a period: the draft, the agent who decided it (their
    platform id and name), the model that drafted it."""

    draft_id: str
    agent_id: str
    agent: str
    model: str
    up: int
    down: int


async def record(
    conn: AsyncConnection, draft_id: str, conversation_id: str, customer_id: str, vote: Vote, now: datetime
) -> None:
    """Keep ``customer_id``'s ``vote`` on the reply of ``draft_id``: a first click adds the row,
    a later one changes its vote (never a second row)."""
    insert = dialect_insert(conn.dialect.name, _feedback).values(
        draft_id=draft_id,
        conversation_id=conversation_id,
        customer_id=customer_id,
        vote=vote,
        votes=1,
        created_at=now,
        updated_at=now,
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[_feedback.c.draft_id, _feedback.c.customer_id],
            set_={"vote": vote, "votes": _feedback.c.votes + 1, "updated_at": now},
        )
    )


async def vote_of(conn: AsyncConnection, draft_id: str, customer_id: str) -> Vote | None:
    """The customer's current vote on the reply, if any."""
    found = await conn.scalar(
        select(_feedback.c.vote).where(_feedback.c.draft_id == draft_id, _feedback.c.customer_id == customer_id)
    )
    return Vote(found) if found is not None else None


async def counts(conn: AsyncConnection, since: datetime, until: datetime) -> list[FeedbackCount]:
    """The 👍 / 👎 per reply whose current vote was cast in ``[since, until)``, with the agent and
    model behind it (a report sums them per agent, model or, joined on the draft, category)."""
    f = _feedback.c
    up = func.sum(case((f.vote == Vote.UP.value, 1), else_=0))
    down = func.sum(case((f.vote == Vote.DOWN.value, 1), else_=0))
    rows = await conn.execute(
        select(f.draft_id, _drafts.decided_by_id, _drafts.decided_by, _drafts.model, up, down)
        .join(table_of(Draft), _drafts.id == f.draft_id)
        .where(f.updated_at >= since, f.updated_at < until)
        .group_by(f.draft_id, _drafts.decided_by_id, _drafts.decided_by, _drafts.model)
        .order_by(f.draft_id)
    )
    return [FeedbackCount(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in rows]
