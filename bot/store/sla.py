"""The SLA's marks on a card, kept as audit lines (no column of their own): ``sla_reminder``
once the on-call group was reminded, ``sla_overdue`` once the card was marked overdue (its
summary is what the card shows). Each is written at most once per draft: :func:`mark_once`
takes the draft row's lock before it looks for the line, so two sweepers (two instances, or a
restart racing a slow pass) serialise on the row and the second sees the first's line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import DraftStatus
from bot.store.schema import AuditEvent, Draft, table_of

REMINDED = "sla_reminder"
OVERDUE = "sla_overdue"

_drafts = table_of(Draft)
_audit = table_of(AuditEvent)
d = _drafts.c
a = _audit.c


@dataclass(frozen=True, slots=True)
class WaitingCard:
    """A card on the desk awaiting a decision, old enough that the SLA may be due."""

    draft_id: str
    conversation_id: str
    created_at: datetime
    card_desk: str
    card_ref: str
    reminded: bool


def _of_draft(kind: str) -> Any:
    """The draft's ``kind`` lines, found through the indexed conversation id (audit_events has
    no index on draft_id; a conversation has few lines)."""
    return and_(a.conversation_id == d.conversation_id, a.draft_id == d.id, a.kind == kind)


def _marked(kind: str) -> Any:
    return exists().where(_of_draft(kind))


def overdue_column() -> Any:
    """The overdue mark of the draft in the enclosing query ("" when none), as a column, so the
    card's load reads it in the same statement."""
    return select(a.summary).where(_of_draft(OVERDUE)).order_by(a.id).limit(1).scalar_subquery().label("overdue")


async def waiting_cards(conn: AsyncConnection, created_before: datetime, limit: int) -> list[WaitingCard]:
    """Undecided cards created before ``created_before`` not yet marked overdue, oldest first."""
    rows = await conn.execute(
        select(d.id, d.conversation_id, d.created_at, d.card_desk, d.card_ref, _marked(REMINDED).label("reminded"))
        .where(
            and_(d.status == DraftStatus.AWAITING_REVIEW, d.card_ref != "", d.created_at < created_before),
            ~_marked(OVERDUE),
        )
        .order_by(d.created_at)
        .limit(limit)
    )
    return [WaitingCard(r.id, r.conversation_id, r.created_at, r.card_desk, r.card_ref, bool(r.reminded)) for r in rows]


async def mark_once(
    conn: AsyncConnection, card: WaitingCard, kind: str, summary: str, now: datetime, *, show: bool = False
) -> bool:
    """Write the ``kind`` mark of a card still awaiting review unless it is there already; True
    when this call wrote it (the caller then does the one thing the mark stands for). ``show``
    bumps the draft's version so the card is brought up to date (and retried by the sweeper's
    stale-card pass if that update fails)."""
    # Take the row's lock first (the UPDATE), then look: a concurrent marker waits here until
    # this transaction commits and its look then sees this line. A decided card matches nothing.
    locked = await conn.execute(
        update(_drafts)
        .where(d.id == card.draft_id, d.status == DraftStatus.AWAITING_REVIEW)
        .values(version=d.version + 1 if show else d.version)
    )
    if locked.rowcount != 1:
        return False
    line = and_(a.conversation_id == card.conversation_id, a.draft_id == card.draft_id, a.kind == kind)
    if await conn.scalar(select(exists().where(line))):
        return False
    await conn.execute(
        _audit.insert(),
        {
            "conversation_id": card.conversation_id,
            "draft_id": card.draft_id,
            "kind": kind,
            "actor": "sla",
            "summary": summary,
            "detail": {},
            "created_at": now,
        },
    )
    return True
