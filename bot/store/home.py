"""What an agent's home reads: the cards waiting (oldest first), the open conversations assigned
to an agent, and the desk's figures since a moment (the start of the day); and who has opened
their home lately, for every instance to keep fresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import FeedbackKind
from bot.domain.states import ConversationOwner, ConversationStatus, DraftStatus, OutboxKind, OutboxStatus
from bot.ports import TodayFigures
from bot.store.dialect import dialect_insert
from bot.store.schema import Conversation, Draft, FeedbackRow, HomeViewer, Message, OutboxItem, table_of

_drafts, _conversations, _messages = table_of(Draft), table_of(Conversation), table_of(Message)
_outbox, _feedback, _viewers = table_of(OutboxItem), table_of(FeedbackRow), table_of(HomeViewer)
d, c, m = _drafts.c, _conversations.c, _messages.c


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """A card awaiting review, with what the queue shows of it."""

    draft_id: str
    created_at: datetime
    location: str
    customer: str
    text: str
    assignee: str


@dataclass(frozen=True, slots=True)
class AssignedRow:
    """An open conversation assigned to an agent."""

    conversation_id: str
    location: str
    customer: str
    status: ConversationStatus
    owner: ConversationOwner


def _awaiting() -> ColumnElement[bool]:
    return and_(d.status == DraftStatus.AWAITING_REVIEW, d.card_ref != "")


async def waiting(conn: AsyncConnection, limit: int) -> tuple[list[WaitingRow], int]:
    """Up to ``limit`` cards awaiting review, oldest first, and how many wait in all."""
    total = await conn.scalar(select(func.count()).select_from(_drafts).where(_awaiting()))
    rows = await conn.execute(
        select(d.id, d.created_at, c.location, c.customer_name, c.customer_id, m.text, c.assignee)
        .join(_conversations, c.id == d.conversation_id)
        .join(_messages, m.id == d.message_id)
        .where(_awaiting())
        .order_by(d.created_at, d.id)
        .limit(limit)
    )
    found = [WaitingRow(r[0], r[1], r[2], r[3] or r[4], r[5], r[6]) for r in rows]
    return found, int(total or 0)


async def assigned_to(conn: AsyncConnection, agent_id: str, limit: int) -> list[AssignedRow]:
    """The open conversations assigned to ``agent_id``, the most recently changed first."""
    rows = await conn.execute(
        select(c.id, c.location, c.customer_name, c.customer_id, c.status, c.owner)
        .where(c.assignee_id == agent_id, c.status != ConversationStatus.RESOLVED)
        .order_by(c.updated_at.desc())
        .limit(limit)
    )
    return [AssignedRow(r[0], r[1], r[2] or r[3], ConversationStatus(r[4]), ConversationOwner(r[5])) for r in rows]


async def figures_since(conn: AsyncConnection, since: datetime) -> TodayFigures:
    """Replies sent, conversations resolved and votes cast since ``since``; cards waiting now."""
    o, f = _outbox.c, _feedback.c
    sent = await conn.scalar(
        select(func.count()).where(o.kind == OutboxKind.REPLY, o.status == OutboxStatus.SENT, o.sent_at >= since)
    )
    waiting_now = await conn.scalar(select(func.count()).select_from(_drafts).where(_awaiting()))
    resolved = await conn.scalar(
        select(func.count()).where(c.status == ConversationStatus.RESOLVED, c.status_at >= since)
    )
    rows = await conn.execute(
        select(f.score, func.count()).where(f.kind == FeedbackKind.REPLY, f.updated_at >= since).group_by(f.score)
    )
    votes: dict[int, int] = {int(score): int(count) for score, count in rows}
    return TodayFigures(
        replies_sent=int(sent or 0),
        waiting=int(waiting_now or 0),
        resolved=int(resolved or 0),
        thumbs_up=int(votes.get(1, 0)),
        thumbs_down=int(votes.get(-1, 0)),
    )


async def viewer_opened(conn: AsyncConnection, desk: str, user_id: str, now: datetime, forget_before: datetime) -> None:
    """``user_id`` opened their home on ``desk`` at ``now``; viewers who last looked before
    ``forget_before`` are dropped (the table stays as small as the team)."""
    insert = dialect_insert(conn.dialect.name, _viewers).values(desk=desk, user_id=user_id, opened_at=now)
    await conn.execute(
        insert.on_conflict_do_update(index_elements=[_viewers.c.desk, _viewers.c.user_id], set_={"opened_at": now})
    )
    await conn.execute(delete(_viewers).where(_viewers.c.opened_at < forget_before))


async def viewers_since(conn: AsyncConnection, desk: str, since: datetime) -> list[str]:
    """Who opened their home on ``desk`` since ``since``, on any instance."""
    v = _viewers.c
    return list((await conn.scalars(select(v.user_id).where(v.desk == desk, v.opened_at >= since))).all())
