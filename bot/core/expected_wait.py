"""How long a customer typically waits for an answer: the ``{expected_minutes}`` of the policy's
acknowledgement.

A sample is one reply a customer got in the last :data:`WINDOW`: from their message (the one the
draft answers) to the approved reply posted in their thread, which is what the customer lives
through (review, edits and delivery included), measured in business time when ``[desk.hours]`` is
set. The median of the newest :data:`MAX_SAMPLES` is used once there are :data:`MIN_SAMPLES`;
with fewer, the policy's ``first_response_minutes``. One bounded SQL read fetches the pairs
(the business-time arithmetic is Python's, which no SQL dialect here has); the result is kept for
:data:`REFRESH`, so the ack of a message reads it at most that often."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.business_time import BusinessHours, business_elapsed
from bot.domain.states import OutboxKind, OutboxStatus
from bot.store import Database
from bot.store.schema import Draft, Message, OutboxItem, table_of

WINDOW = timedelta(days=7)
#: Fewer replies than this in the window: the policy's first-response time is the better guess.
MIN_SAMPLES = 5
MAX_SAMPLES = 1000
REFRESH = timedelta(minutes=5)

_o, _d, _m = table_of(OutboxItem).c, table_of(Draft).c, table_of(Message).c


async def median_wait_minutes(conn: AsyncConnection, hours: BusinessHours | None, now: datetime) -> float | None:
    """The median business minutes from a customer's message to its posted reply over the
    window before ``now``; None with fewer than :data:`MIN_SAMPLES` replies."""
    rows = await conn.execute(
        select(_m.created_at, _o.sent_at)
        .select_from(table_of(OutboxItem))
        .join(table_of(Draft), _d.id == _o.draft_id)
        .join(table_of(Message), _m.id == _d.message_id)
        .where(
            _o.status == OutboxStatus.SENT,
            _o.kind.in_((OutboxKind.REPLY, OutboxKind.DIRECT_REPLY)),  # a reply wherever it went
            _o.sent_at >= now - WINDOW,
            _o.sent_at <= now,
        )
        .order_by(_o.sent_at.desc())
        .limit(MAX_SAMPLES)
    )
    waits = [business_elapsed(hours, asked, answered) / timedelta(minutes=1) for asked, answered in rows]
    return statistics.median(waits) if len(waits) >= MIN_SAMPLES else None


@dataclass(slots=True)
class _Known:
    minutes: float | None
    hours: BusinessHours | None
    at: datetime


class ExpectedWait:
    """The median wait, read from SQL at most every :data:`REFRESH` (or when the hours change)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: _Known | None = None

    async def minutes(self, hours: BusinessHours | None, now: datetime) -> float | None:
        known = self._known
        if known is None or known.hours != hours or not known.at <= now < known.at + REFRESH:
            async with self.db.read() as conn:
                known = _Known(await median_wait_minutes(conn, hours, now), hours, now)
            self._known = known
        return known.minutes
