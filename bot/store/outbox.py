"""The outbox: texts waiting to be posted in customers' threads (approved replies, and the
policy's fixed texts), claimed under a renewed lease.

Only the oldest unfinished row of a thread can be claimed, so replies in one thread keep their
order while different threads are delivered concurrently (and by several instances: on
PostgreSQL candidates are locked with ``FOR UPDATE SKIP LOCKED``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from bot.domain.states import OutboxKind, OutboxStatus, check_transition
from bot.store.dialect import insert_ignore
from bot.store.schema import OutboxItem, table_of

_outbox = table_of(OutboxItem)
o = _outbox.c


@dataclass(frozen=True, slots=True)
class ClaimedReply:
    """An outbox row this worker now holds: a draft's reply, or a fixed text (no draft)."""

    id: int
    draft_id: str | None
    thread_key: str
    text: str
    attempts: int
    kind: OutboxKind = OutboxKind.REPLY
    conversation_id: str | None = None
    stored_key: str | None = None

    @property
    def key(self) -> str:
        """The post's idempotency key (the platform is asked for it after a lost attempt)."""
        return self.stored_key or f"draft-{self.draft_id}"

    @property
    def label(self) -> str:
        """What logs and supervisors name this row by."""
        return self.draft_id or self.key


def _new_row(thread_key: str, text: str, now: datetime) -> dict[str, object]:
    return {
        "thread_key": thread_key,
        "text": text,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "claimed_by": "",
        "next_attempt_at": now,
        "platform_message_id": "",
        "last_error": "",
        "created_at": now,
    }


async def enqueue(
    conn: AsyncConnection,
    draft_id: str,
    conversation_id: str,
    thread_key: str,
    text: str,
    now: datetime,
    *,
    kind: OutboxKind = OutboxKind.REPLY,
) -> None:
    """An approved draft's reply (``kind``: in its thread, or by direct message)."""
    row = _new_row(thread_key, text, now) | {"draft_id": draft_id, "conversation_id": conversation_id, "kind": kind}
    await conn.execute(_outbox.insert(), row)


async def enqueue_text(
    conn: AsyncConnection,
    kind: OutboxKind,
    conversation_id: str,
    thread_key: str,
    key: str,
    text: str,
    now: datetime,
) -> bool:
    """A fixed text under its idempotency key, in the caller's transaction; False when that key
    was claimed before (the text is sent once per key, whoever decides to send it)."""
    row = _new_row(thread_key, text, now) | {"kind": kind, "conversation_id": conversation_id, "idempotency_key": key}
    return await insert_ignore(conn, _outbox, row)


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(o.status == OutboxStatus.PENDING, o.next_attempt_at <= now),
        and_(o.status == OutboxStatus.SENDING, o.lease_until < now),
    )


async def claim_due(
    conn: AsyncConnection, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[ClaimedReply]:
    """Claim up to ``limit`` due rows, the oldest unfinished of each thread only."""
    check_transition(OutboxStatus.PENDING, OutboxStatus.SENDING)
    check_transition(OutboxStatus.SENDING, OutboxStatus.SENDING)
    earlier = aliased(_outbox)
    blocked = exists().where(
        earlier.c.thread_key == o.thread_key,
        earlier.c.id < o.id,
        earlier.c.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
    )
    query = select(o.id).where(_due(now), ~blocked).order_by(o.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [int(i) for i in (await conn.execute(query)).scalars()]
    if not ids:
        return []
    rows = await conn.execute(
        update(_outbox)
        .where(o.id.in_(ids), _due(now))
        .values(
            status=OutboxStatus.SENDING,
            claimed_by=owner,
            claimed_at=now,
            lease_until=now + lease,
            attempts=o.attempts + 1,
        )
        .returning(o.id, o.draft_id, o.thread_key, o.text, o.attempts, o.kind, o.conversation_id, o.idempotency_key)
    )
    claimed = [
        ClaimedReply(
            r.id, r.draft_id, r.thread_key, r.text, r.attempts, OutboxKind(r.kind), r.conversation_id, r.idempotency_key
        )
        for r in rows
    ]
    return sorted(claimed, key=lambda c: c.id)


async def renew(conn: AsyncConnection, ids: Sequence[int], owner: str, until: datetime) -> None:
    if ids:
        await conn.execute(
            update(_outbox)
            .where(o.id.in_(ids), o.claimed_by == owner, o.status == OutboxStatus.SENDING)
            .values(lease_until=until)
        )


async def release_all(conn: AsyncConnection, owner: str, now: datetime) -> int:
    """Make the replies ``owner`` was posting due again at once (a stop, after its work was
    cancelled; the next worker looks for a post that did reach the platform); returns how many."""
    result = await conn.execute(
        update(_outbox)
        .where(o.claimed_by == owner, o.status == OutboxStatus.SENDING)
        .values(lease_until=now)
        .returning(o.id)
    )
    return len(result.all())


async def mark_sent(conn: AsyncConnection, item_id: int, owner: str, message_id: str, now: datetime) -> bool:
    check_transition(OutboxStatus.SENDING, OutboxStatus.SENT)
    result = await conn.execute(
        update(_outbox)
        .where(o.id == item_id, o.claimed_by == owner, o.status == OutboxStatus.SENDING)
        .values(status=OutboxStatus.SENT, platform_message_id=message_id, sent_at=now, last_error="", lease_until=None)
    )
    return bool(result.rowcount == 1)


async def retry_later(conn: AsyncConnection, item_id: int, owner: str, error: str, at: datetime) -> None:
    check_transition(OutboxStatus.SENDING, OutboxStatus.PENDING)
    await conn.execute(
        update(_outbox)
        .where(o.id == item_id, o.claimed_by == owner, o.status == OutboxStatus.SENDING)
        .values(status=OutboxStatus.PENDING, last_error=error[:500], next_attempt_at=at, lease_until=None)
    )


async def mark_failed(conn: AsyncConnection, item_id: int, owner: str, error: str) -> bool:
    """Give up on a reply this worker holds; False when its lease was lost to another worker."""
    check_transition(OutboxStatus.SENDING, OutboxStatus.FAILED)
    result = await conn.execute(
        update(_outbox)
        .where(o.id == item_id, o.claimed_by == owner, o.status == OutboxStatus.SENDING)
        .values(status=OutboxStatus.FAILED, last_error=error[:500], lease_until=None)
    )
    return bool(result.rowcount == 1)


async def of_draft(conn: AsyncConnection, draft_id: str) -> tuple[OutboxStatus, str, str] | None:
    """(status, text, last error) of a draft's outbox row, if any."""
    row = (await conn.execute(select(o.status, o.text, o.last_error).where(o.draft_id == draft_id))).first()
    return None if row is None else (OutboxStatus(row.status), row.text, row.last_error)
