"""Agents' edits waiting for their translation (bot/core/edit_translation.py): held in the click's
transaction, taken by one instance at a time under a lease, finished by deleting the row in the
transaction that puts the translation on the card."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.dialect import dialect_insert
from bot.store.schema import PendingEdit, table_of

_pending = table_of(PendingEdit)
p = _pending.c


@dataclass(frozen=True, slots=True)
class HeldEdit:
    """An edit to translate: what the agent wrote, into which language, by whom."""

    draft_id: str
    edit: str
    language: str
    actor_id: str
    actor_name: str


async def hold(conn: AsyncConnection, edit: HeldEdit, now: datetime, lease: timedelta) -> None:
    """Keep ``edit`` for translation, taken by the caller until ``now + lease``. A newer edit of
    the same draft replaces one still waiting (the agent changed their mind)."""
    values = {
        "draft_id": edit.draft_id,
        "edit": edit.edit,
        "language": edit.language,
        "actor_id": edit.actor_id,
        "actor_name": edit.actor_name,
        "lease_until": now + lease,
        "created_at": now,
    }
    insert = dialect_insert(conn.dialect.name, _pending).values(**values)
    changed = {key: insert.excluded[key] for key in values if key != "draft_id"}
    await conn.execute(insert.on_conflict_do_update(index_elements=[p.draft_id], set_=changed))


async def take_due(conn: AsyncConnection, now: datetime, lease: timedelta, limit: int) -> list[HeldEdit]:
    """Edits nobody live is translating (their lease ran out), taken for ``lease``."""
    rows = (await conn.execute(select(_pending).where(p.lease_until < now).order_by(p.created_at).limit(limit))).all()
    taken = []
    for row in rows:
        moved = await conn.execute(
            update(_pending)
            .where(p.draft_id == row.draft_id, p.lease_until == row.lease_until)
            .values(lease_until=now + lease)
        )
        if moved.rowcount == 1:
            taken.append(HeldEdit(row.draft_id, row.edit, row.language, row.actor_id, row.actor_name))
    return taken


async def renew(conn: AsyncConnection, edit: HeldEdit, until: datetime) -> None:
    """Keep ``edit`` taken until ``until`` (its translation is still running)."""
    await conn.execute(
        update(_pending).where(p.draft_id == edit.draft_id, p.edit == edit.edit).values(lease_until=until)
    )


async def finish(conn: AsyncConnection, edit: HeldEdit) -> bool:
    """Let go of ``edit`` once its outcome is written. False: it is not the one held any more (a
    newer edit replaced it, or another instance finished it): its outcome must not be written."""
    result = await conn.execute(delete(_pending).where(p.draft_id == edit.draft_id, p.edit == edit.edit))
    return bool(result.rowcount == 1)


async def forget(conn: AsyncConnection, draft_ids: list[str]) -> int:
    """Drop the edits waiting for these drafts (erasure, retention)."""
    if not draft_ids:
        return 0
    result = await conn.execute(delete(_pending).where(p.draft_id.in_(draft_ids)))
    return int(result.rowcount or 0)
