"""One lease-and-retry policy: what the operator sets (``WORK_LEASE_SECONDS``, ``SWEEP_SECONDS``)
is what every room uses, and a refused reply is tried again after doubling waits, capped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.core.timing import WorkTiming
from tests.fakes.kimi import FakeKimi
from tests.harness import settings_for


async def test_the_operators_lease_and_sweep_reach_the_timing(tmp_path: Path, kimi: FakeKimi) -> None:
    timing = WorkTiming.from_settings(settings_for(tmp_path, kimi, None, work_lease_seconds=6.0, sweep_seconds=0.5))
    assert timing.lease == timedelta(seconds=6)
    assert timing.renew_every == 2.0  # three renewals before a lease runs out
    assert timing.sweep_seconds == 0.5


def test_a_refused_reply_waits_twice_as_long_each_time_and_at_most_five_minutes() -> None:
    timing = WorkTiming()
    waits = [timing.reply_retry_after(attempt).total_seconds() for attempt in range(1, 11)]
    assert waits[:5] == [2, 4, 8, 16, 32]
    assert max(waits) == 300
