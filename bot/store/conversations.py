"""Conversations and their messages: what the ack writes, and what drafting reads back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.events import InboundMessage, ThreadRef
from bot.store.dialect import dialect_insert
from bot.store.schema import AttachmentRow, Conversation, Message, ProcessedEvent, new_id, table_of

_conversations = table_of(Conversation)
_messages = table_of(Message)
_attachments = table_of(AttachmentRow)
_events = table_of(ProcessedEvent)


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What drafting needs of a conversation: where it is, who asks, its memory."""

    id: str
    thread: ThreadRef
    location: str
    customer_id: str
    customer_name: str
    summary: str
    summary_through: int
    facts: dict[str, Any]
    failed_drafts: int
    verified_customer_id: str = ""
    verified_via: str = ""
    verify_attempts: int = 0
    asker_email: str = ""
    #: (customer message id, facts as the draft answering it left them), oldest first.
    fact_notes: tuple[tuple[int, dict[str, Any]], ...] = ()

    @property
    def platform(self) -> str:
        return self.thread.platform


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One turn as stored."""

    id: int
    role: str
    text: str
    attachments: list[Any]
    author_id: str = ""
    created_at: datetime | None = None


async def record_event(conn: AsyncConnection, event_id: str, now: datetime) -> bool:
    """Remember a platform delivery id; False when it was seen before (a redelivery)."""
    statement = dialect_insert(conn.dialect.name, _events).on_conflict_do_nothing()
    result = await conn.execute(statement, {"event_id": event_id, "received_at": now})
    return bool(result.rowcount == 1)


async def upsert_conversation(conn: AsyncConnection, message: InboundMessage, now: datetime) -> str:
    """The conversation of the message's thread, created on its first message; one statement."""
    thread = message.thread
    base = dialect_insert(conn.dialect.name, _conversations)
    statement = base.on_conflict_do_update(
        index_elements=[_conversations.c.thread_key], set_={"updated_at": base.excluded.updated_at}
    ).returning(_conversations.c.id)
    values = {
        "id": new_id(),
        "thread_key": thread.key,
        "platform": thread.platform,
        "workspace": thread.workspace,
        "channel": thread.channel,
        "thread": thread.thread,
        "location": message.location,
        "customer_id": message.author.id,
        "customer_name": message.author.display_name,
        "summary": "",
        "summary_through": 0,
        "facts": {},
        "fact_notes": [],
        "failed_drafts": 0,
        "created_at": now,
        "updated_at": now,
    }
    return str((await conn.execute(statement, values)).scalar_one())


async def add_customer_message(
    conn: AsyncConnection,
    conversation_id: str,
    message: InboundMessage,
    text: str,
    now: datetime,
    files: list[dict[str, Any]],
) -> int:
    """Store the customer's message with what is known of its ``files`` (the core's
    :func:`bot.core.files.records_at_ack`), and the image bytes its adapter handed over."""
    sent_at = message.sent_at if message.sent_at.tzinfo else now
    result = await conn.execute(
        _messages.insert().returning(_messages.c.id),
        {
            "conversation_id": conversation_id,
            "role": "customer",
            "platform_message_id": message.message_id,
            "author_id": message.author.id,
            "author_name": message.author.display_name,
            "text": text,
            "attachments": files,
            "draft_id": None,
            "created_at": sent_at,
        },
    )
    message_id = int(result.scalar_one())
    images = [
        {"message_id": message_id, "filename": a.filename, "content_type": a.content_type, "data": a.data}
        for a in message.attachments
        if a.is_image and a.data
    ]
    if images:
        await conn.execute(_attachments.insert(), images)
    return message_id


async def add_reply(
    conn: AsyncConnection, conversation_id: str, draft_id: str, text: str, platform_message_id: str, now: datetime
) -> None:
    """Store a reply that reached the customer, as a turn of the conversation."""
    await conn.execute(
        _messages.insert(),
        {
            "conversation_id": conversation_id,
            "role": "assistant",
            "platform_message_id": platform_message_id,
            "author_id": "",
            "author_name": "",
            "text": text,
            "attachments": [],
            "draft_id": draft_id,
            "created_at": now,
        },
    )


async def has_conversation(conn: AsyncConnection, thread: ThreadRef) -> bool:
    found = await conn.scalar(select(_conversations.c.id).where(_conversations.c.thread_key == thread.key))
    return found is not None


async def load_conversation(conn: AsyncConnection, conversation_id: str) -> ConversationState:
    c = _conversations.c
    row = (
        await conn.execute(
            select(
                c.id,
                c.platform,
                c.workspace,
                c.channel,
                c.thread,
                c.location,
                c.customer_id,
                c.customer_name,
                c.summary,
                c.summary_through,
                c.facts,
                c.failed_drafts,
                c.verified_customer_id,
                c.verified_via,
                c.verify_attempts,
                c.asker_email,
                c.fact_notes,
            ).where(c.id == conversation_id)
        )
    ).one()
    return ConversationState(
        id=row.id,
        thread=ThreadRef(row.platform, row.workspace, row.channel, row.thread),
        location=row.location,
        customer_id=row.customer_id,
        customer_name=row.customer_name,
        summary=row.summary,
        summary_through=row.summary_through,
        facts=dict(row.facts or {}),
        failed_drafts=row.failed_drafts,
        verified_customer_id=row.verified_customer_id,
        verified_via=row.verified_via,
        verify_attempts=row.verify_attempts,
        asker_email=row.asker_email,
        fact_notes=tuple((int(at), dict(facts)) for at, facts in row.fact_notes or []),
    )


async def turns_since(
    conn: AsyncConnection, conversation_id: str, after_message_id: int, upto_message_id: int
) -> list[StoredMessage]:
    """The turns not yet folded into the summary, up to the one being answered."""
    m = _messages.c
    rows = await conn.execute(
        select(m.id, m.role, m.text, m.attachments, m.author_id, m.created_at)
        .where(m.conversation_id == conversation_id, m.id > after_message_id, m.id <= upto_message_id)
        .order_by(m.id)
    )
    return [StoredMessage(r.id, r.role, r.text, list(r.attachments or []), r.author_id, r.created_at) for r in rows]


async def save_files(
    conn: AsyncConnection, message_id: int, files: list[dict[str, Any]], images: list[tuple[str, str, bytes]]
) -> None:
    """Record what became of a message's files, and the bytes of those downloaded
    (``(filename, content_type, data)``)."""
    await conn.execute(update(_messages).where(_messages.c.id == message_id).values(attachments=files))
    if images:
        await conn.execute(
            _attachments.insert(),
            [
                {"message_id": message_id, "filename": name, "content_type": content_type, "data": data}
                for name, content_type, data in images
            ],
        )


async def images_of(conn: AsyncConnection, message_id: int) -> list[tuple[str, bytes]]:
    a = _attachments.c
    rows = await conn.execute(select(a.content_type, a.data).where(a.message_id == message_id))
    return [(r.content_type, r.data) for r in rows]


async def save_summary(conn: AsyncConnection, conversation_id: str, summary: str, through: int, now: datetime) -> None:
    await conn.execute(
        update(_conversations)
        .where(_conversations.c.id == conversation_id)
        .values(summary=summary, summary_through=through, updated_at=now)
    )


async def save_facts(
    conn: AsyncConnection,
    conversation_id: str,
    facts: dict[str, Any],
    failed_drafts: int,
    now: datetime,
    identity: dict[str, Any] | None = None,
    fact_notes: Sequence[tuple[int, dict[str, Any]]] | None = None,
) -> None:
    """The conversation's facts after a draft, where they changed (``fact_notes``, when they did)
    and what the tools established about who the customer is (``identity``: columns of
    :func:`bot.identity.identity_values`), in one UPDATE."""
    notes = {} if fact_notes is None else {"fact_notes": [[at, noted] for at, noted in fact_notes]}
    await conn.execute(
        update(_conversations)
        .where(_conversations.c.id == conversation_id)
        .values(facts=facts, failed_drafts=failed_drafts, updated_at=now, **notes, **(identity or {}))
    )


async def note_asker_email(conn: AsyncConnection, conversation_id: str, author_id: str, email: str) -> None:
    """Remember the platform profile e-mail of the conversation's customer (counted only when the
    policy says so). Someone else writing in the thread never sets it."""
    c = _conversations.c
    await conn.execute(
        update(_conversations)
        .where(c.id == conversation_id, c.customer_id == author_id, c.asker_email != email[:320])
        .values(asker_email=email[:320])
    )
