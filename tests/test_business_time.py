"""The SLA's business-time arithmetic (bot/domain/business_time.py): only time inside the desk's
opening hours counts, in the desk's timezone, across nights, weekends and clock changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.business_time import BusinessHours, business_deadline, business_elapsed
from bot.errors import PolicyError
from bot.policy import parse_policy

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
WEEKDAYS_9_TO_17 = BusinessHours(BERLIN, frozenset(range(5)), time(9), time(17))


def berlin(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


def test_without_hours_the_clock_always_runs() -> None:
    start = datetime(2026, 12, 5, 23, tzinfo=UTC)
    assert business_elapsed(None, start, start + timedelta(hours=30)) == timedelta(hours=30)
    assert business_elapsed(None, start, start - timedelta(minutes=1)) == timedelta(0)


def test_inside_one_opening_it_is_wall_time() -> None:
    assert business_elapsed(WEEKDAYS_9_TO_17, berlin(7, 10), berlin(7, 10, 12)) == timedelta(minutes=12)


def test_a_card_created_outside_hours_starts_waiting_when_the_desk_opens() -> None:
    saturday = berlin(5, 10)  # 2026-12-05 is a Saturday
    sla = timedelta(minutes=30)
    assert business_elapsed(WEEKDAYS_9_TO_17, saturday, berlin(7, 9)) == timedelta(0), "the weekend does not count"
    assert business_elapsed(WEEKDAYS_9_TO_17, saturday, berlin(7, 9, 29)) < sla, "not due a minute before"
    assert business_elapsed(WEEKDAYS_9_TO_17, saturday, berlin(7, 9, 30)) == sla, "due 30 min after opening"


def test_the_night_is_skipped() -> None:
    # Friday 16:50 to Monday 09:10: ten minutes on Friday, ten on Monday.
    assert business_elapsed(WEEKDAYS_9_TO_17, berlin(4, 16, 50), berlin(7, 9, 10)) == timedelta(minutes=20)


def test_hours_are_local_across_a_clock_change() -> None:
    # Berlin moves to summer time on 2026-03-29 (a Sunday): Monday 9-17 local is 07-15 UTC.
    start = datetime(2026, 3, 30, 6, 30, tzinfo=UTC)
    assert business_elapsed(WEEKDAYS_9_TO_17, start, datetime(2026, 3, 30, 7, 45, tzinfo=UTC)) == timedelta(minutes=45)


def test_end_at_midnight_means_the_end_of_the_day() -> None:
    evenings = BusinessHours(UTC_ZONE, frozenset(range(7)), time(20), time(0))
    start = datetime(2026, 12, 7, 19, tzinfo=UTC)
    assert business_elapsed(evenings, start, datetime(2026, 12, 8, 1, tzinfo=UTC)) == timedelta(hours=4)


def test_the_policy_builds_the_hours_and_refuses_bad_ones() -> None:
    policy = parse_policy(
        '[desk]\nfirst_response_minutes = 15\n[desk.hours]\ntimezone = "Europe/Berlin"\n'
        'days = ["mon", "fri"]\nstart = "08:30"\nend = "18:00"\n'
    )
    assert policy.desk.first_response_minutes == 15
    assert policy.desk.hours is not None
    assert policy.desk.hours.business_hours() == BusinessHours(BERLIN, frozenset({0, 4}), time(8, 30), time(18))
    assert parse_policy("").desk.first_response_minutes == 0 and parse_policy("").desk.hours is None
    with pytest.raises(PolicyError, match="unknown timezone 'Mars/Olympus'"):
        parse_policy('[desk.hours]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(PolicyError, match="end must be after start"):
        parse_policy('[desk.hours]\nstart = "18:00"\nend = "09:00"\n')
    with pytest.raises(PolicyError, match="first_response_minutes"):
        parse_policy("[desk]\nfirst_response_minutes = -1\n")


def test_the_deadline_of_a_wait_skips_closed_time() -> None:
    saturday = berlin(5, 10)
    assert business_deadline(WEEKDAYS_9_TO_17, saturday, timedelta(minutes=30)) == berlin(7, 9, 30)
    assert business_deadline(WEEKDAYS_9_TO_17, berlin(4, 16, 50), timedelta(minutes=20)) == berlin(7, 9, 10)
    assert business_deadline(WEEKDAYS_9_TO_17, berlin(7, 10), timedelta(minutes=12)) == berlin(7, 10, 12)
    assert business_deadline(None, saturday, timedelta(minutes=5)) == saturday + timedelta(minutes=5)
    for start in (saturday, berlin(4, 16, 50), berlin(7, 12)):  # the inverse of business_elapsed
        deadline = business_deadline(WEEKDAYS_9_TO_17, start, timedelta(hours=9))
        assert business_elapsed(WEEKDAYS_9_TO_17, start, deadline) == timedelta(hours=9)
