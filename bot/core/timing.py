"""One lease-and-retry policy for every room of the core.

How long a worker holds work, how often leases are renewed and the sweeper looks, and when failed
work is tried again (a card post, a reply post, a draft whose model is cooling down) are read here,
from settings, and handed to the rooms; no room keeps its own constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkTiming:
    """When work is held, looked for and tried again.

    ``lease``: how long claimed work (a draft, a reply) belongs to its worker unless renewed
    (``WORK_LEASE_SECONDS``); leases are renewed every third of it. ``sweep_seconds``: how often
    the sweeper and the dispatcher look for due and orphaned work (``SWEEP_SECONDS``).
    ``card_retry_after``: when a card the desk refused is posted again. ``reply_attempts`` and
    ``reply_backoff_cap``: a reply post is retried after 2, 4, 8... seconds (at most the cap)
    until its attempts are used up, then its card says sending failed. ``model_cool_down``: how
    long a draft waits when the model's breaker is open and Kimi named no wait.
    ``quota_alert_every``: the used-up-quota alert is repeated at most this often.
    """

    lease: timedelta = timedelta(seconds=10)
    sweep_seconds: float = 1.0
    card_retry_after: timedelta = timedelta(seconds=3)
    reply_attempts: int = 6
    reply_backoff_cap: timedelta = timedelta(minutes=5)
    model_cool_down: timedelta = timedelta(seconds=30)
    quota_alert_every: timedelta = timedelta(hours=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkTiming:
        return cls(lease=timedelta(seconds=settings.work_lease_seconds), sweep_seconds=settings.sweep_seconds)

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals: three chances before a lease runs out."""
        return self.lease.total_seconds() / 3

    @property
    def card_claim(self) -> timedelta:
        """How long a worker that (re)posts a lost card holds it."""
        return self.card_retry_after * 4

    def reply_retry_after(self, attempts: int) -> timedelta:
        """The wait before a reply post's next attempt, doubling with each attempt made."""
        return min(self.reply_backoff_cap, timedelta(seconds=2.0**attempts))
