"""Conversations and their messages: what the ack writes, and what drafting reads back."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, exists, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import ConversationOwner, ConversationStatus
from bot.events import InboundMessage, Place, ThreadRef
from bot.store import life
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
    #: Its life (:mod:`bot.store.life`) as it was read.
    status: ConversationStatus = ConversationStatus.OPEN
    owner: ConversationOwner = ConversationOwner.BOT
    owner_reason: str = ""
    assignee: str = ""
    #: Who can read its thread, as the adapter last reported (unknown reads as public).
    place: Place = Place.PUBLIC

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


class Delivery(StrEnum):
    """What a platform delivery is to us: the first of its id, one seen before, or a message
    its author deleted before it reached us."""

    FIRST = "first"
    REPEATED = "repeated"
    WITHDRAWN = "withdrawn"


def deletion_mark(thread: ThreadRef, message_id: str) -> str:
    """The delivery id under which a deletion of a message never stored is remembered: the late
    message then finds it (a fixed length, whatever the platform's ids)."""
    digest = hashlib.sha256(f"{thread.key}\n{message_id}".encode()).hexdigest()
    return f"deleted:{digest}"


async def record_event(conn: AsyncConnection, event_id: str, now: datetime, *, unless: str = "") -> Delivery:
    """Remember a platform delivery id, in one statement. ``unless``: a :func:`deletion_mark`
    that, remembered already, makes this delivery :attr:`Delivery.WITHDRAWN` (not recorded; a
    second statement tells that apart from a redelivery, only when nothing was recorded)."""
    insert = dialect_insert(conn.dialect.name, _events)
    e = _events.c
    if unless:
        row = select(literal(event_id, e.event_id.type), literal(now, e.received_at.type))
        statement = insert.from_select([e.event_id, e.received_at], row.where(~exists().where(e.event_id == unless)))
        result = await conn.execute(statement.on_conflict_do_nothing())
    else:
        result = await conn.execute(insert.on_conflict_do_nothing(), {"event_id": event_id, "received_at": now})
    if result.rowcount == 1:
        return Delivery.FIRST
    if unless and await conn.scalar(select(e.event_id).where(e.event_id == unless)) is not None:
        return Delivery.WITHDRAWN
    return Delivery.REPEATED


async def forget_deliveries(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` delivery ids (and deletion marks) received before ``before``; how
    many. A redelivery that old changes nothing anyway: its message is stored (or erased)."""
    e = _events.c
    # No index on received_at: every ack's insert stays one index cheaper, and this reads a week
    # of ids once a pass (hourly by default).
    oldest = select(e.event_id).where(e.received_at < before).limit(limit)
    result = await conn.execute(delete(_events).where(e.event_id.in_(oldest)))
    return int(result.rowcount)


async def upsert_conversation(conn: AsyncConnection, message: InboundMessage, now: datetime) -> str:
    """The conversation of the message's thread, created on its first message; one statement."""
    return (await open_conversation(conn, message, now))[0].conversation_id


async def open_conversation(conn: AsyncConnection, message: InboundMessage, now: datetime) -> tuple[life.Life, bool]:
    """The conversation of the message's thread, created on its first message (its author is then
    its customer), with its life as it stands, and whether this statement created it (then no
    message of it can be stored yet); one statement, which also holds the conversation's row for
    the caller's transaction (a click on it waits). Who can read the thread (``place``) is the
    adapter's latest report: a channel made private, or shared with another organisation, counts
    from its next message."""
    thread = message.thread
    c = _conversations.c
    created_id = new_id()
    base = dialect_insert(conn.dialect.name, _conversations)
    statement = base.on_conflict_do_update(
        index_elements=[c.thread_key], set_={"updated_at": base.excluded.updated_at, "place": base.excluded.place}
    ).returning(*life.LIFE_COLUMNS)
    values = {
        "id": created_id,
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
        "status": ConversationStatus.OPEN,
        "owner": ConversationOwner.BOT,
        "status_at": now,
        "place": message.place,
    }
    opened = life.life_of_row((await conn.execute(statement, values)).one())
    return opened, opened.conversation_id == created_id


async def add_customer_message(
    conn: AsyncConnection,
    conversation_id: str,
    message: InboundMessage,
    text: str,
    now: datetime,
    files: list[dict[str, Any]],
    role: str = "customer",
) -> int:
    """Store the customer's message with what is known of its ``files`` (the core's
    :func:`bot.core.files.records_at_ack`), and the image bytes its adapter handed over of those
    the records mark ``held`` (the drafting worker replaces them with their small version).
    ``role``: who wrote it (:class:`bot.domain.roles.Role`): the customer, an agent answering by
    hand, or an outsider whose words are context."""
    sent_at = message.sent_at if message.sent_at.tzinfo else now
    result = await conn.execute(
        _messages.insert().returning(_messages.c.id),
        {
            "conversation_id": conversation_id,
            "role": role,
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
        for a, record in zip(message.attachments, files, strict=True)
        if a.data and record.get("held")
    ]
    if images:
        await conn.execute(_attachments.insert(), images)
    return message_id


async def add_reply(
    conn: AsyncConnection, conversation_id: str, draft_id: str, text: str, platform_message_id: str, now: datetime
) -> None:
    """Store a reply that reached the customer, as a turn of the conversation; an open
    conversation now waits on its customer."""
    await life.move_status(conn, conversation_id, ConversationStatus.OPEN, ConversationStatus.WAITING_ON_CUSTOMER, now)
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
    return await conversation_at(conn, thread) is not None


async def conversation_at(conn: AsyncConnection, thread: ThreadRef) -> str | None:
    """The id of the conversation in ``thread``, or None."""
    found = await conn.scalar(select(_conversations.c.id).where(_conversations.c.thread_key == thread.key))
    return None if found is None else str(found)


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
                c.status,
                c.owner,
                c.owner_reason,
                c.assignee,
                c.place,
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
        status=ConversationStatus(row.status),
        owner=ConversationOwner(row.owner),
        owner_reason=row.owner_reason,
        assignee=row.assignee,
        place=Place(row.place or Place.PUBLIC),
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
    conn: AsyncConnection,
    message_id: int,
    files: list[dict[str, Any]],
    images: list[tuple[str, str, bytes]],
    *,
    replace: bool = False,
) -> None:
    """Record what became of a message's files, and the bytes of the images to send
    (``(filename, content_type, data)``); ``replace`` drops the bytes stored at the ack first."""
    await conn.execute(update(_messages).where(_messages.c.id == message_id).values(attachments=files))
    if replace:
        await conn.execute(delete(_attachments).where(_attachments.c.message_id == message_id))
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
    rows = await conn.execute(select(a.content_type, a.data).where(a.message_id == message_id).order_by(a.id))
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


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A stored message found by its platform id: what an edit or a deletion of it needs."""

    id: int
    conversation_id: str
    role: str
    text: str


async def find_message(conn: AsyncConnection, thread: ThreadRef, platform_message_id: str) -> StoredTurn | None:
    """The message stored under ``platform_message_id`` in ``thread`` (the first, should an older
    instance have stored it twice), or None."""
    m = _messages.c
    row = (
        await conn.execute(
            select(m.id, m.conversation_id, m.role, m.text)
            .join(_conversations, _conversations.c.id == m.conversation_id)
            .where(_conversations.c.thread_key == thread.key, m.platform_message_id == platform_message_id)
            .order_by(m.id)
            .limit(1)
        )
    ).first()
    return None if row is None else StoredTurn(row.id, row.conversation_id, row.role, row.text)


async def replace_text(conn: AsyncConnection, message_id: int, old: str, new: str) -> bool:
    """A message's text as its author changed it, compare-and-set on the text the caller read:
    False when another transaction changed it first (Slack delivers an edit twice, at once)."""
    m = _messages.c
    result = await conn.execute(update(_messages).where(m.id == message_id, m.text == old).values(text=new))
    return bool(result.rowcount == 1)


async def facts_of(conn: AsyncConnection, conversation_id: str) -> dict[str, Any]:
    facts = await conn.scalar(select(_conversations.c.facts).where(_conversations.c.id == conversation_id))
    return dict(facts or {})


async def note_fact(conn: AsyncConnection, conversation_id: str, name: str, value: Any) -> None:
    """Set one of the conversation's facts (the others kept), in the caller's transaction."""
    facts = await facts_of(conn, conversation_id) | {name: value}
    await conn.execute(update(_conversations).where(_conversations.c.id == conversation_id).values(facts=facts))
