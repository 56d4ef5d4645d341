"""The corrections ``supportbot suggest`` learns from (:mod:`bot.learning`): drafts an agent
edited before sending, drafts rejected with the reason given, and replies a customer scored
badly (a thumbs down, or a CSAT of 1 or 2), each with the customer's message it answered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import FeedbackKind
from bot.domain.lessons import Lesson, LessonKind
from bot.domain.states import DraftStatus
from bot.store.schema import AuditEvent, Draft, FeedbackRow, Message

LOW_CSAT = 2


def _answered(at: Any, *extra: Any) -> Select[Any]:
    """A lesson's columns: conversation, draft, category, ``at``, the customer's message, the
    draft's text, then ``extra``; the message joined."""
    d = Draft
    columns = (d.conversation_id, d.id, d.category, at, Message.text, d.text, *extra)
    return select(*columns).join(Message, Message.id == d.message_id)


def _lesson(kind: LessonKind, row: Sequence[Any], **more: Any) -> Lesson:
    return Lesson(kind, row[0], row[1], row[2], row[3], row[4], row[5], **more)


async def edited(conn: AsyncConnection, since: datetime) -> list[Lesson]:
    """Drafts decided since ``since`` whose text an agent changed."""
    rows = await conn.execute(
        _answered(Draft.decided_at, Draft.edited_text)
        .where(Draft.decided_at >= since, Draft.edited_text.is_not(None), Draft.decided_by != "")
        .order_by(Draft.decided_at)
    )
    return [
        _lesson(LessonKind.EDIT, r, sent=r[6] or "")
        for r in rows.all()
        if r[3] is not None and (r[6] or "").strip() != r[5].strip()
    ]


async def rejected(conn: AsyncConnection, since: datetime) -> list[Lesson]:
    """Drafts rejected since ``since``, with the reason the agent gave (the audit's reject line)."""
    rows = await conn.execute(
        _answered(Draft.decided_at, AuditEvent.summary)
        .outerjoin(AuditEvent, and_(AuditEvent.draft_id == Draft.id, AuditEvent.kind == "reject"))
        .where(Draft.decided_at >= since, Draft.status == DraftStatus.REJECTED)
        .order_by(Draft.decided_at)
    )
    return [_lesson(LessonKind.REJECT, r, reason=r[6] or "rejected") for r in rows.all() if r[3] is not None]


async def scored_badly(conn: AsyncConnection, since: datetime) -> list[Lesson]:
    """Replies a customer gave a thumbs down, or a CSAT of ``LOW_CSAT`` or less, since ``since``."""
    rows = await conn.execute(
        _answered(FeedbackRow.updated_at, Draft.edited_text, FeedbackRow.score)
        .join(FeedbackRow, FeedbackRow.draft_id == Draft.id)
        .where(
            FeedbackRow.updated_at >= since,
            or_(
                and_(FeedbackRow.kind == FeedbackKind.REPLY, FeedbackRow.score < 0),
                and_(FeedbackRow.kind == FeedbackKind.CSAT, FeedbackRow.score <= LOW_CSAT),
            ),
        )
        .order_by(FeedbackRow.updated_at)
    )
    return [_lesson(LessonKind.FEEDBACK, r, sent=r[6] or r[5], score=int(r[7])) for r in rows.all()]


async def lessons(conn: AsyncConnection, since: datetime) -> list[Lesson]:
    """Every correction since ``since``: edits, rejections, negative feedback."""
    return [*await edited(conn, since), *await rejected(conn, since), *await scored_badly(conn, since)]
