"""The rows the report reads (:mod:`bot.insight`): decided drafts with their decision facts,
each conversation's first message and first reply, the spend of resolved conversations, customers' feedback,
and the audit lines that count what happened without a card."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import FeedbackKind
from bot.domain.states import ConversationStatus, DraftStatus, OutboxStatus
from bot.store.outcomes import spend
from bot.store.schema import AuditEvent, Conversation, Draft, FeedbackRow, Message, OutboxItem, UsageRecord


@dataclass(frozen=True, slots=True)
class DecidedDraft:
    """A draft an agent decided, as the report needs it."""

    status: DraftStatus
    edited: bool
    decided_by: str
    model: str
    policy_version: str
    category: str
    shown_at: datetime | None
    decided_at: datetime
    edit_distance: float | None


@dataclass(frozen=True, slots=True)
class FirstResponse:
    """When a conversation's customer first wrote, and when the first reply reached them (None: not yet)."""

    asked_at: datetime
    answered_at: datetime | None


@dataclass(frozen=True, slots=True)
class FeedbackScore:
    """A customer's answer, with the category of the draft it is about."""

    kind: FeedbackKind
    score: int
    category: str


@dataclass(frozen=True, slots=True)
class ResolvedSpend:
    """The conversations resolved in the window and what their model calls cost."""

    conversations: int
    tokens: int
    cost_microusd: int


async def decided_drafts(conn: AsyncConnection, since: datetime) -> list[DecidedDraft]:
    """Drafts decided by an agent since ``since`` (decided_by is set only by a decision)."""
    d = Draft
    rows = await conn.execute(
        select(
            d.status,
            d.edited_text.is_not(None),
            d.decided_by,
            d.model,
            d.policy_version,
            d.category,
            d.shown_at,
            d.decided_at,
            d.edit_distance,
        )
        .where(d.decided_at >= since, d.decided_by != "")
        .order_by(d.decided_at)
    )
    return [
        DecidedDraft(DraftStatus(r[0]), bool(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8])
        for r in rows.all()
        if r[7] is not None
    ]


async def first_responses(conn: AsyncConnection, since: datetime) -> list[FirstResponse]:
    """Each conversation begun since ``since``: its first customer message and its first reply sent."""
    asked = (
        select(Message.conversation_id, func.min(Message.created_at).label("at"))
        .where(Message.role == "customer")
        .group_by(Message.conversation_id)
        .subquery()
    )
    answered = (
        select(Draft.conversation_id, func.min(OutboxItem.sent_at).label("at"))
        .join(OutboxItem, OutboxItem.draft_id == Draft.id)
        .where(OutboxItem.status == OutboxStatus.SENT)
        .group_by(Draft.conversation_id)
        .subquery()
    )
    rows = await conn.execute(
        select(asked.c.at, answered.c.at)
        .select_from(Conversation)
        .join(asked, asked.c.conversation_id == Conversation.id)
        .outerjoin(answered, answered.c.conversation_id == Conversation.id)
        .where(Conversation.created_at >= since)
    )
    return [FirstResponse(_aware(r[0]), _aware(r[1]) if r[1] is not None else None) for r in rows.all()]


async def resolved_spend(conn: AsyncConnection, since: datetime) -> ResolvedSpend:
    """Conversations resolved since ``since`` (and still resolved), with their whole spend."""
    resolved = select(Conversation.id).where(
        Conversation.status == ConversationStatus.RESOLVED, Conversation.status_at >= since
    )
    count = await conn.scalar(select(func.count()).select_from(resolved.subquery()))
    tokens, cost = await spend(conn, UsageRecord.conversation_id.in_(resolved))
    return ResolvedSpend(int(count or 0), tokens, cost)


async def feedback_scores(conn: AsyncConnection, since: datetime) -> list[FeedbackScore]:
    """Customers' answers given (or last changed) since ``since``."""
    rows = await conn.execute(
        select(FeedbackRow.kind, FeedbackRow.score, Draft.category)
        .join(Draft, Draft.id == FeedbackRow.draft_id)
        .where(FeedbackRow.updated_at >= since)
    )
    return [FeedbackScore(FeedbackKind(r[0]), int(r[1]), str(r[2])) for r in rows.all()]


async def audit_counts(conn: AsyncConnection, since: datetime, kinds: Iterable[str]) -> dict[str, int]:
    """How many audit lines of each of ``kinds`` were written since ``since``."""
    wanted = list(kinds)
    rows = await conn.execute(
        select(AuditEvent.kind, func.count())
        .where(AuditEvent.kind.in_(wanted), AuditEvent.created_at >= since)
        .group_by(AuditEvent.kind)
    )
    counts = dict.fromkeys(wanted, 0)
    counts.update({str(kind): int(n) for kind, n in rows.all()})
    return counts


def _aware(moment: datetime) -> datetime:
    """Aggregates bypass the column type: SQLite hands back naive UTC (or a string)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
