"""Business time: how much of a stretch of wall-clock time fell inside the desk's opening hours.

Pure arithmetic, no I/O: the SLA clock (:mod:`bot.core.sla`) runs only while the desk is open.
Hours are local to a timezone, so a day's opening is computed in that timezone (daylight-saving
shifts included) and compared in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

#: Weekday names as policy files write them, Monday first (``datetime.weekday()`` order).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Open from ``start`` to ``end`` (local time in ``timezone``) on ``days`` (0 = Monday).
    ``end`` of midnight (00:00) means the end of the day."""

    timezone: ZoneInfo
    days: frozenset[int]
    start: time
    end: time

    def opening(self, day: date) -> tuple[datetime, datetime] | None:
        """The UTC opening interval of local calendar ``day``, None when closed that day."""
        if day.weekday() not in self.days:
            return None
        opens = datetime.combine(day, self.start, self.timezone)
        closes = (
            datetime.combine(day + timedelta(days=1), time(0), self.timezone)
            if self.end == time(0)
            else datetime.combine(day, self.end, self.timezone)
        )
        return opens.astimezone(UTC), closes.astimezone(UTC)


def is_open(hours: BusinessHours | None, moment: datetime) -> bool:
    """Whether the desk is open at ``moment`` (always, without hours)."""
    if hours is None:
        return True
    opening = hours.opening(moment.astimezone(hours.timezone).date())
    return opening is not None and opening[0] <= moment < opening[1]


def business_elapsed(hours: BusinessHours | None, start: datetime, end: datetime) -> timedelta:
    """The part of ``start``..``end`` (aware datetimes) inside ``hours``; all of it when
    ``hours`` is None (the clock always runs); zero when ``end`` is not after ``start``."""
    if end <= start:
        return timedelta(0)
    if hours is None:
        return end - start
    total = timedelta(0)
    day, last = start.astimezone(hours.timezone).date(), end.astimezone(hours.timezone).date()
    while day <= last:
        opening = hours.opening(day)
        if opening is not None:
            lo, hi = max(opening[0], start), min(opening[1], end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


def business_deadline(hours: BusinessHours | None, start: datetime, span: timedelta) -> datetime:
    """The moment ``span`` of business time after ``start`` has run (``start + span`` when
    ``hours`` is None). With no opening at all in a fortnight the desk is taken as never open
    and the wall-clock deadline is returned."""
    if hours is None or span <= timedelta(0):
        return start + span
    left = span
    day = start.astimezone(hours.timezone).date()
    for _ in range(14 + int(span / timedelta(days=1)) * 7):
        opening = hours.opening(day)
        if opening is not None and opening[1] > start:
            lo = max(opening[0], start)
            if opening[1] - lo >= left:
                return lo + left
            left -= opening[1] - lo
        day += timedelta(days=1)
    return start + span
