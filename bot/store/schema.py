"""The SQL schema: every step of the flow leaves a row here, so a restart resumes where it
stopped. Created and evolved by the Alembic migrations in ``bot/migrations``.

Work in flight on a row (a draft being written or its card posted; a reply being sent) is held by
a short lease (``lease_owner``, ``lease_until``) that its owner renews while working; when the
owner dies the lease expires and the sweeper hands the row to another worker.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

import tools.orders
from bot.domain.feedback import FeedbackKind
from bot.domain.states import ActionStatus, ConversationOwner, ConversationStatus, DraftStatus, OutboxKind, OutboxStatus
from bot.domain.text import TOOL_NAME_LENGTH, cut_label, storable
from bot.events import Place, ThreadRef


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """An opaque id safe in Slack button values and Discord custom_ids."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class PlainString(TypeDecorator[str]):
    """A VARCHAR column whose values are :func:`~bot.domain.text.storable`: odd text from a
    customer, an agent, a tool or the model is stored, never a failed transaction."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else storable(value)


class PlainText(PlainString):
    """A TEXT column whose values are :func:`~bot.domain.text.storable`."""

    impl = Text
    cache_ok = True


class Label(PlainString):
    """A short text people read (a name, an e-mail, a file name, a content type, the tool the
    model named), as a platform, a person or the model gave it: cut to the column's length, its
    last character an ellipsis, rather than failing the transaction (PostgreSQL enforces VARCHAR
    lengths; SQLite does not). Keys and ids stay :class:`PlainString`: cut, two of them could
    become one."""

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        value = super().process_bind_param(value, dialect)
        length = cast(String, self.impl_instance).length
        return value if value is None or length is None else cut_label(value, length)


def state_column(states: type[StrEnum], constraint: str, length: int) -> Enum:
    """A state column: the enum's values as plain strings (VARCHAR), kept to them by a CHECK
    constraint named ``constraint``. Not a native PostgreSQL enum, so a new state later is an
    ordinary migration (a new CHECK) on SQLite and PostgreSQL alike; writes of anything but the
    enum's values fail in Python before SQL, reads come back as the enum."""
    return Enum(
        states,
        name=constraint,
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
        length=length,
    )


class Base(DeclarativeBase):
    """Declarative base of the core's tables."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class ProcessedEvent(Base):
    """A platform delivery id seen once; a redelivery hits the primary key and does nothing."""

    __tablename__ = "processed_events"
    event_id: Mapped[str] = mapped_column(PlainString(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    """One customer thread, with its rolling summary and structured facts."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(PlainString(32), primary_key=True, default=new_id)
    thread_key: Mapped[str] = mapped_column(PlainString(512), unique=True)
    platform: Mapped[str] = mapped_column(PlainString(32))
    workspace: Mapped[str] = mapped_column(PlainString(128))
    channel: Mapped[str] = mapped_column(PlainString(128))
    thread: Mapped[str] = mapped_column(PlainString(128))
    location: Mapped[str] = mapped_column(PlainText, default="")
    customer_id: Mapped[str] = mapped_column(PlainString(128), default="")
    customer_name: Mapped[str] = mapped_column(Label(255), default="")
    summary: Mapped[str] = mapped_column(PlainText, default="")
    summary_through: Mapped[int] = mapped_column(Integer, default=0)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # [[message id, facts], ...]: the facts as each draft left them, keyed to the customer message
    # it answered, so the prompt shows each change where it happened (append-only, cache-friendly).
    fact_notes: Mapped[list[Any]] = mapped_column(default=list)
    failed_drafts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Identity (bot/identity.py): the shop customer this conversation is verified as, and how.
    verified_customer_id: Mapped[str] = mapped_column(PlainString(200), default="")
    verified_via: Mapped[str] = mapped_column(PlainString(120), default="")
    verify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    asker_email: Mapped[str] = mapped_column(Label(320), default="")
    # Its life (bot/store/life.py): a status, who answers (the bot drafts, or a human does) and the
    # agent it is assigned to; ``status_at`` is when the status last changed (auto-resolve).
    status: Mapped[ConversationStatus] = mapped_column(
        state_column(ConversationStatus, "ck_conversations_status", 24),
        default=ConversationStatus.OPEN,
        server_default=ConversationStatus.OPEN.value,
    )
    owner: Mapped[ConversationOwner] = mapped_column(
        state_column(ConversationOwner, "ck_conversations_owner", 8),
        default=ConversationOwner.BOT,
        server_default=ConversationOwner.BOT.value,
    )
    owner_reason: Mapped[str] = mapped_column(PlainText, default="", server_default="")
    assignee_id: Mapped[str] = mapped_column(PlainString(128), default="", server_default="")
    assignee: Mapped[str] = mapped_column(Label(255), default="", server_default="")
    status_at: Mapped[datetime | None] = mapped_column(default=None)
    # Who can read its thread, as the adapter last reported (bot/core/public_places.py); NULL
    # (never written by this version) reads as public, the safe side.
    place: Mapped[Place | None] = mapped_column(
        state_column(Place, "ck_conversations_place", 8), default=Place.PUBLIC, server_default=Place.PUBLIC.value
    )

    @property
    def thread_ref(self) -> ThreadRef:
        """The thread this conversation lives in."""
        return ThreadRef(self.platform, self.workspace, self.channel, self.thread)


# Auto-resolve looks for conversations waiting on their customer too long (bot/store/life.py).
Index("ix_conversations_waiting", Conversation.status, Conversation.status_at)


class Message(Base):
    """A turn in a conversation: a customer message or a reply that was sent."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    role: Mapped[str] = mapped_column(PlainString(16))  # customer | assistant | agent | outsider
    platform_message_id: Mapped[str] = mapped_column(PlainString(128), default="")
    author_id: Mapped[str] = mapped_column(PlainString(128), default="")
    author_name: Mapped[str] = mapped_column(Label(255), default="")
    text: Mapped[str] = mapped_column(PlainText, default="")
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    draft_id: Mapped[str | None] = mapped_column(PlainString(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttachmentRow(Base):
    """Image bytes downloaded on arrival (platform URLs expire), kept for vision models."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(Label(255))
    content_type: Mapped[str] = mapped_column(Label(128))
    data: Mapped[bytes] = mapped_column()


class Draft(Base):
    """A drafted reply and its review state (see ``DraftStatus``)."""

    __tablename__ = "drafts"
    id: Mapped[str] = mapped_column(PlainString(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    status: Mapped[DraftStatus] = mapped_column(state_column(DraftStatus, "ck_drafts_status", 24), index=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    text: Mapped[str] = mapped_column(PlainText, default="")
    edited_text: Mapped[str | None] = mapped_column(PlainText, default=None)
    instruction: Mapped[str | None] = mapped_column(PlainText, default=None)
    model: Mapped[str] = mapped_column(PlainString(64), default="")
    failure: Mapped[str] = mapped_column(PlainText, default="")
    notice: Mapped[str] = mapped_column(PlainText, default="")
    escalation: Mapped[str] = mapped_column(PlainText, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_microusd: Mapped[int] = mapped_column(BigInteger, default=0)
    card_desk: Mapped[str] = mapped_column(PlainString(32), default="")
    card_ref: Mapped[str] = mapped_column(PlainString(255), default="")
    decided_by: Mapped[str] = mapped_column(Label(255), default="")
    decided_by_id: Mapped[str] = mapped_column(PlainString(128), default="")
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_message_id: Mapped[str] = mapped_column(PlainString(128), default="")
    #: Bumped on every change a card shows; ``card_version`` is the version the card shows.
    version: Mapped[int] = mapped_column(Integer, default=1)
    card_version: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str] = mapped_column(PlainString(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    guard_flags: Mapped[list[Any]] = mapped_column(default=list)  # bot/verification.py, shown on the card
    # What the team learns (bot/insight): the policy the draft was written under (Policy.version),
    # its category (bot/domain/category.py), when its card was first shown ready for review; at the
    # decision, how far the sent reply is from the draft (0..1) and what the conversation had cost.
    policy_version: Mapped[str] = mapped_column(PlainString(16), default="", server_default="")
    category: Mapped[str] = mapped_column(PlainString(24), default="", server_default="")
    shown_at: Mapped[datetime | None] = mapped_column(default=None)
    edit_distance: Mapped[float | None] = mapped_column(Float, default=None)
    conversation_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    conversation_cost_microusd: Mapped[int | None] = mapped_column(BigInteger, default=None)


Index("ix_drafts_work", Draft.status, Draft.lease_until)
# The sweeper's looks every second (bot/store/drafts.py): cards never posted, and cards showing an
# older version than their draft's (a partial index: only those rows are in it).
Index("ix_drafts_without_card", Draft.card_ref, Draft.status)
Index(
    "ix_drafts_stale_cards",
    Draft.updated_at,
    sqlite_where=Draft.card_version < Draft.version,
    postgresql_where=Draft.card_version < Draft.version,
)


class FeedbackRow(Base):
    """A customer's answer about a draft's reply (bot/domain/feedback.py): one per customer, kind
    and draft; a changed mind replaces it."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("draft_id", "kind", "author_id", name="uq_feedback_answer"),
        CheckConstraint(
            "(kind = 'reply' AND abs(score) = 1) OR (kind = 'csat' AND score BETWEEN 1 AND 5)",
            name="ck_feedback_score",
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    draft_id: Mapped[str] = mapped_column(ForeignKey("drafts.id"))
    kind: Mapped[FeedbackKind] = mapped_column(state_column(FeedbackKind, "ck_feedback_kind", 8))
    score: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[str] = mapped_column(PlainString(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProposedAction(Base):
    """A side effect the model asked for (a refund). Executes only after approval, once."""

    __tablename__ = "proposed_actions"
    id: Mapped[str] = mapped_column(PlainString(32), primary_key=True, default=new_id)
    draft_id: Mapped[str] = mapped_column(ForeignKey("drafts.id"), index=True)
    kind: Mapped[str] = mapped_column(PlainString(32))
    params: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[ActionStatus] = mapped_column(state_column(ActionStatus, "ck_proposed_actions_status", 24))
    allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    verdict: Mapped[str] = mapped_column(PlainText, default="")
    approvals: Mapped[list[Any]] = mapped_column(default=list)
    idempotency_key: Mapped[str] = mapped_column(PlainString(64), unique=True)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    executed_at: Mapped[datetime | None] = mapped_column(default=None)


class ToolCall(Base):
    """One tool call the model made while drafting."""

    __tablename__ = "tool_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    draft_id: Mapped[str] = mapped_column(ForeignKey("drafts.id"), index=True)
    name: Mapped[str] = mapped_column(Label(TOOL_NAME_LENGTH))  # as the model wrote it, cut
    arguments: Mapped[str] = mapped_column(PlainText)
    result: Mapped[str] = mapped_column(PlainText, default="")
    summary: Mapped[str] = mapped_column(PlainText, default="")
    error: Mapped[str] = mapped_column(PlainText, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Decision(Base):
    """A click on a review card, whether it won or not."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    draft_id: Mapped[str] = mapped_column(PlainString(32), index=True)
    action: Mapped[str] = mapped_column(PlainString(16))
    actor_platform: Mapped[str] = mapped_column(PlainString(32))
    actor_id: Mapped[str] = mapped_column(PlainString(128))
    actor_name: Mapped[str] = mapped_column(Label(255), default="")
    accepted: Mapped[bool] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(PlainText, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxItem(Base):
    """A text waiting to be posted in a customer's thread, claimed by one dispatcher: an approved
    reply (one per draft), or a fixed text of the policy (``kind``; no draft, its conversation and
    the post's idempotency key instead, unique so a text is claimed once)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    draft_id: Mapped[str | None] = mapped_column(ForeignKey("drafts.id"), unique=True, default=None)
    kind: Mapped[OutboxKind] = mapped_column(
        state_column(OutboxKind, "ck_outbox_kind", 16), default=OutboxKind.REPLY, server_default="reply"
    )
    #: Set for every row this version writes (an older instance leaves it empty on its replies).
    conversation_id: Mapped[str | None] = mapped_column(PlainString(32), default=None)
    #: A fixed text's post key (``greeting-…``, ``handoff-…``); a reply's is ``draft-<draft_id>``.
    idempotency_key: Mapped[str | None] = mapped_column(PlainString(160), default=None)
    thread_key: Mapped[str] = mapped_column(PlainString(512))
    text: Mapped[str] = mapped_column(PlainText)
    status: Mapped[OutboxStatus] = mapped_column(
        state_column(OutboxStatus, "ck_outbox_status", 16), default=OutboxStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str] = mapped_column(PlainString(64), default="")
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    platform_message_id: Mapped[str] = mapped_column(PlainString(128), default="")
    last_error: Mapped[str] = mapped_column(PlainText, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


Index("ix_outbox_due", OutboxItem.status, OutboxItem.next_attempt_at)
Index("ix_outbox_idempotency_key", OutboxItem.idempotency_key, unique=True)


class UsageRecord(Base):
    """One model call's token usage and cost."""

    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(PlainString(32), index=True)
    draft_id: Mapped[str | None] = mapped_column(PlainString(32), default=None)
    purpose: Mapped[str] = mapped_column(PlainString(16))  # drafting | summarizing
    model: Mapped[str] = mapped_column(PlainString(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    cost_microusd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class KnowledgeFile(Base):
    """A knowledge file uploaded to Kimi's files API once per content (bot.llm.knowledge)."""

    __tablename__ = "knowledge_files"
    content_hash: Mapped[str] = mapped_column(PlainString(64), primary_key=True)  # sha256 of the bytes
    name: Mapped[str] = mapped_column(Label(255))
    file_id: Mapped[str] = mapped_column(PlainString(64))
    size: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(PlainText)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class TranslationRow(Base):
    """A translation made for a card, kept so each text is translated once (bot/core/translation.py)."""

    __tablename__ = "translations"
    key: Mapped[str] = mapped_column(PlainString(64), primary_key=True)  # sha256 of the target language and the text
    language: Mapped[str] = mapped_column(PlainString(16))  # what it was translated into
    text: Mapped[str] = mapped_column(PlainText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingEdit(Base):
    """An agent's edit waiting for its translation into the customer's language
    (bot/core/edit_translation.py): kept from the click's transaction until the translated edit is
    back on the card, so a crash between the two loses nothing. ``lease_until``: until then the
    instance that took it is translating it; after, any instance may."""

    __tablename__ = "pending_edits"
    draft_id: Mapped[str] = mapped_column(PlainString(32), primary_key=True)
    edit: Mapped[str] = mapped_column(PlainText)
    language: Mapped[str] = mapped_column(PlainString(16))  # the customer's, what the edit goes into
    actor_id: Mapped[str] = mapped_column(PlainString(255))
    actor_name: Mapped[str] = mapped_column(Label(255), default="")
    lease_until: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HomeViewer(Base):
    """Who opened their home on a desk (Slack's App Home) and when: every instance refreshes the
    homes of those who looked lately when the queue changes, whichever instance they opened it on,
    and a restart keeps them."""

    __tablename__ = "home_viewers"
    desk: Mapped[str] = mapped_column(PlainString(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(PlainString(255), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """The audit trail: every message, draft, tool call, decision and executed action."""

    __tablename__ = "audit_events"
    # The identity checks count failed attempts, and the reports read decisions, by kind and time.
    __table_args__ = (Index("ix_audit_events_kind_created_at", "kind", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(PlainString(32), index=True)
    draft_id: Mapped[str | None] = mapped_column(PlainString(32), default=None)
    kind: Mapped[str] = mapped_column(PlainString(32))
    actor: Mapped[str] = mapped_column(PlainString(255), default="")
    summary: Mapped[str] = mapped_column(PlainText)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def audit(
    session: Any,
    conversation_id: str,
    draft_id: str | None,
    kind: str,
    actor: str,
    summary: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one line to the audit trail, in the caller's transaction."""
    session.add(
        AuditEvent(
            conversation_id=conversation_id,
            draft_id=draft_id,
            kind=kind,
            actor=actor,
            summary=summary,
            detail=detail or {},
        )
    )


ALL_METADATA = (Base.metadata, tools.orders.metadata)


def table_of(model: type[Base]) -> Table:
    """A model's table, typed as a :class:`Table` for Core statements."""
    return cast(Table, model.__table__)
