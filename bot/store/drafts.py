"""Drafts: their states, leases and cards. Every state change is a compare-and-set on the
current status (and, for work in flight, on the lease owner), so the first writer wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import CARD_STATES, OPEN_DRAFT_STATES, ActionStatus, DraftStatus, check_transition
from bot.store.records import move_actions_of
from bot.store.schema import Draft, new_id, table_of

_drafts = table_of(Draft)
d = _drafts.c


def _lease_free(now: datetime) -> Any:
    return or_(d.lease_until.is_(None), d.lease_until < now)


@dataclass(frozen=True, slots=True)
class ClaimedDraft:
    """A draft this worker now holds the lease of, with what drafting needs to start."""

    id: str
    conversation_id: str
    message_id: int
    instruction: str | None
    revision: int
    created_at: datetime


async def insert_draft(
    conn: AsyncConnection,
    conversation_id: str,
    message_id: int,
    now: datetime,
    *,
    revision: int = 1,
    instruction: str | None = None,
    starts_at: datetime | None = None,
) -> str:
    """A queued draft; with ``starts_at``, nobody takes it before then (fairness at intake)."""
    draft_id = new_id()
    await conn.execute(
        _drafts.insert(),
        {
            "id": draft_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "status": DraftStatus.DRAFTING,
            "revision": revision,
            "text": "",
            "edited_text": None,
            "instruction": instruction,
            "model": "",
            "failure": "",
            "notice": "",
            "escalation": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cost_microusd": 0,
            "card_desk": "",
            "card_ref": "",
            "decided_by": "",
            "decided_by_id": "",
            "sent_message_id": "",
            "version": 1,
            "card_version": 0,
            "lease_owner": "",
            "lease_until": starts_at,
            "created_at": now,
            "updated_at": now,
        },
    )
    return draft_id


async def supersede_open(
    conn: AsyncConnection, conversation_id: str, why: str, now: datetime, *, notice: str | None = None
) -> list[str]:
    """A newer message makes the conversation's open drafts (and their proposals) moot. The card
    says why: ``notice`` (an agent answered by hand, the customer edited or deleted their message),
    or by default that ``why`` superseded it and a fresh draft follows."""
    for current in OPEN_DRAFT_STATES:
        check_transition(current, DraftStatus.SUPERSEDED)
    result = await conn.execute(
        update(_drafts)
        .where(d.conversation_id == conversation_id, d.status.in_(OPEN_DRAFT_STATES))
        .values(
            status=DraftStatus.SUPERSEDED,
            notice=notice if notice is not None else f"Superseded by {why}; a fresh draft follows.",
            version=d.version + 1,
            updated_at=now,
        )
        .returning(d.id)
    )
    ids = [str(i) for i in result.scalars()]
    if ids:
        await move_actions_of(conn, ids, ActionStatus.PROPOSED, ActionStatus.SUPERSEDED)
    return ids


async def open_draft_covering(conn: AsyncConnection, conversation_id: str, message_id: int) -> tuple[str, int] | None:
    """The conversation's open draft whose context holds message ``message_id`` (it answers that
    message or a later one), as ``(draft id, the message it answers)``; None when there is none."""
    row = (
        await conn.execute(
            select(d.id, d.message_id)
            .where(d.conversation_id == conversation_id, d.status.in_(OPEN_DRAFT_STATES), d.message_id >= message_id)
            .order_by(d.created_at.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (str(row.id), int(row.message_id))


async def claim_drafting(
    conn: AsyncConnection, draft_id: str, owner: str, now: datetime, lease: timedelta
) -> ClaimedDraft | None:
    """Take the lease of a draft still being drafted, unless someone live holds it."""
    row = (
        await conn.execute(
            update(_drafts)
            .where(d.id == draft_id, d.status == DraftStatus.DRAFTING, _lease_free(now))
            .values(lease_owner=owner, lease_until=now + lease)
            .returning(d.id, d.conversation_id, d.message_id, d.instruction, d.revision, d.created_at)
        )
    ).first()
    if row is None:
        return None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return ClaimedDraft(row.id, row.conversation_id, row.message_id, row.instruction, row.revision, created)


async def claim_for_card(conn: AsyncConnection, draft_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
    """Take the lease of a draft whose card never reached the desk."""
    result = await conn.execute(
        update(_drafts)
        .where(d.id == draft_id, d.status.in_(CARD_STATES), d.card_ref == "", _lease_free(now))
        .values(lease_owner=owner, lease_until=now + lease)
    )
    return bool(result.rowcount == 1)


def _superseded_in_a_dead_hand(now: datetime) -> Any:
    """Superseded with no card recorded while a worker that died still holds it (its lease ran
    out): it was drafting (a streamed card may be up) or posting its card when it died."""
    return and_(d.status == DraftStatus.SUPERSEDED, d.card_ref == "", d.lease_owner != "", d.lease_until < now)


async def lost_cards(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Superseded drafts whose card may be on the desk with no record of it here (see
    :func:`_superseded_in_a_dead_hand`); read through ``ix_drafts_work``."""
    rows = await conn.execute(select(d.id).where(_superseded_in_a_dead_hand(now)).order_by(d.lease_until).limit(limit))
    return [str(r) for r in rows.scalars()]


async def claim_lost_card(conn: AsyncConnection, draft_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
    """Take over one of :func:`lost_cards` to look for its card."""
    result = await conn.execute(
        update(_drafts)
        .where(d.id == draft_id, _superseded_in_a_dead_hand(now))
        .values(lease_owner=owner, lease_until=now + lease)
    )
    return bool(result.rowcount == 1)


async def renew_leases(conn: AsyncConnection, draft_ids: Sequence[str], owner: str, until: datetime) -> set[str]:
    """Extend this worker's leases; returns the ids it still holds."""
    if not draft_ids:
        return set()
    result = await conn.execute(
        update(_drafts).where(d.id.in_(draft_ids), d.lease_owner == owner).values(lease_until=until).returning(d.id)
    )
    return {str(i) for i in result.scalars()}


async def finish(
    conn: AsyncConnection, draft_id: str, owner: str, status: DraftStatus, values: dict[str, Any]
) -> int | None:
    """Move a draft out of ``drafting`` (ready or failed), keeping the lease for its card.
    Returns the new version, or None when the draft was superseded meanwhile."""
    check_transition(DraftStatus.DRAFTING, status)
    row = (
        await conn.execute(
            update(_drafts)
            .where(d.id == draft_id, d.status == DraftStatus.DRAFTING, d.lease_owner == owner)
            .values(status=status, version=d.version + 1, **values)
            .returning(d.version)
        )
    ).first()
    return None if row is None else int(row.version)


async def release_all(conn: AsyncConnection, owner: str, now: datetime) -> int:
    """Give up every lease ``owner`` holds (a stop, after its work was cancelled); returns how many.

    A superseded draft with no card recorded is handed over as if its worker had died, lease
    out now: its card may be on the desk (posted or streamed, or being looked for, when the work
    was cancelled), and only :func:`lost_cards` would go and look."""
    may_have_a_card = and_(d.status == DraftStatus.SUPERSEDED, d.card_ref == "")
    result = await conn.execute(
        update(_drafts)
        .where(d.lease_owner == owner)
        .values(
            lease_owner=case((may_have_a_card, d.lease_owner), else_=""),
            lease_until=case((may_have_a_card, now), else_=None),
        )
        .returning(d.id)
    )
    return len(result.all())


async def release(conn: AsyncConnection, draft_id: str, owner: str) -> None:
    await conn.execute(
        update(_drafts).where(d.id == draft_id, d.lease_owner == owner).values(lease_owner="", lease_until=None)
    )


async def card_posted(
    conn: AsyncConnection, draft_id: str, owner: str, desk: str, ref: str, shown_version: int, now: datetime
) -> int | None:
    """Record where the card is and when it was first shown ready for review, release the lease;
    returns the draft's current version (a click may have changed it while the card was on its way)."""
    row = (
        await conn.execute(
            update(_drafts)
            .where(d.id == draft_id, d.lease_owner == owner)
            .values(
                card_desk=desk,
                card_ref=ref,
                card_version=shown_version,
                lease_owner="",
                lease_until=None,
                shown_at=func.coalesce(d.shown_at, now),
            )
            .returning(d.version)
        )
    ).first()
    return None if row is None else int(row.version)


async def card_recorded(conn: AsyncConnection, draft_id: str, desk: str, ref: str, shown_version: int) -> None:
    """Where the card of a draft that no worker holds any more is (a card opened while drafting,
    whose draft was superseded meanwhile)."""
    await conn.execute(
        update(_drafts)
        .where(d.id == draft_id, d.card_ref == "")
        .values(card_desk=desk, card_ref=ref, card_version=shown_version)
    )


async def card_shown(conn: AsyncConnection, draft_id: str, version: int) -> int | None:
    """Record that the card shows ``version`` (the record never moves back); returns the draft's
    current version (None: no such draft). Above ``version``, the card is behind: the draft
    changed while the card was updated, or a newer update reached the desk before this one."""
    row = (
        await conn.execute(
            update(_drafts)
            .where(d.id == draft_id)
            .values(card_version=case((d.card_version < version, version), else_=d.card_version))
            .returning(d.version)
        )
    ).first()
    return None if row is None else int(row.version)


async def transition(
    conn: AsyncConnection, draft_id: str, current: DraftStatus, target: DraftStatus, now: datetime, **values: Any
) -> bool:
    """The compare-and-set every decision and delivery goes through: exactly one writer moves a
    draft out of ``current``."""
    check_transition(current, target)
    result = await conn.execute(
        update(_drafts)
        .where(d.id == draft_id, d.status == current)
        .values(status=target, version=d.version + 1, updated_at=now, **values)
    )
    return bool(result.rowcount == 1)


async def revise_under_review(conn: AsyncConnection, draft_id: str, now: datetime, **values: Any) -> bool:
    """A change to a draft still awaiting review that keeps it there (an edit translated back for
    approval); compare-and-set like :func:`transition`."""
    result = await conn.execute(
        update(_drafts)
        .where(d.id == draft_id, d.status == DraftStatus.AWAITING_REVIEW)
        .values(version=d.version + 1, updated_at=now, **values)
    )
    return bool(result.rowcount == 1)


async def touch(conn: AsyncConnection, draft_id: str, now: datetime, **values: Any) -> None:
    """A change the card shows without a state change (a first of two approvals)."""
    await conn.execute(update(_drafts).where(d.id == draft_id).values(version=d.version + 1, updated_at=now, **values))


async def drafting_due(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Drafts nobody live is drafting: never picked up, or their worker died."""
    rows = await conn.execute(
        select(d.id).where(d.status == DraftStatus.DRAFTING, _lease_free(now)).order_by(d.created_at).limit(limit)
    )
    return [str(r) for r in rows.scalars()]


async def cards_missing(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Drafts whose card never reached the desk and nobody live is posting it."""
    rows = await conn.execute(
        select(d.id)
        .where(d.status.in_(CARD_STATES), d.card_ref == "", _lease_free(now))
        .order_by(d.updated_at)
        .limit(limit)
    )
    return [str(r) for r in rows.scalars()]


async def cards_on_desk(conn: AsyncConnection, desk: str, limit: int) -> list[str]:
    """The newest drafts whose card is on ``desk``, oldest first (a desk that forgot its cards
    in a restart shows them again)."""
    newest = (
        select(d.id, d.created_at)
        .where(d.card_desk == desk, d.card_ref != "")
        .order_by(d.created_at.desc())
        .limit(limit)
        .subquery()
    )
    rows = await conn.execute(select(newest.c.id).order_by(newest.c.created_at))
    return [str(r) for r in rows.scalars()]


async def cards_stale(conn: AsyncConnection, before: datetime, limit: int) -> list[str]:
    """Cards showing an older version than the draft's (an update that failed)."""
    rows = await conn.execute(
        select(d.id)
        .where(and_(d.card_ref != "", d.card_version < d.version, d.updated_at < before))
        .order_by(d.updated_at)
        .limit(limit)
    )
    return [str(r) for r in rows.scalars()]


async def status_of(conn: AsyncConnection, draft_id: str) -> DraftStatus | None:
    value = await conn.scalar(select(d.status).where(d.id == draft_id))
    return None if value is None else DraftStatus(value)


async def postpone(conn: AsyncConnection, draft_id: str, owner: str, until: datetime) -> None:
    """Give up this worker's lease, and keep others off the draft until ``until`` (a retry
    after a failed card post, so a desk that is down is not hammered)."""
    await conn.execute(
        update(_drafts).where(d.id == draft_id, d.lease_owner == owner).values(lease_owner="", lease_until=until)
    )
