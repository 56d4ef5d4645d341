"""Fairness at intake: a token bucket per sender and per workspace paces when drafts start.

Every customer message is stored and acknowledged as before (nothing is lost); what the buckets
decide is only *when its draft may start*. Within a bucket's burst a draft starts at once; past
it, the draft is written with its start in the future (``lease_until``, in the ack's one insert,
no extra statement) and the sweeper starts it then. Each draft past the burst books the bucket's
next token, so one sender's drafts start at the bucket's rate, however fast they write. A new
message in a conversation whose draft has not started yet supersedes it and takes over its
start time without booking another token: a flood inside one thread is coalesced into the one
draft that covers every message so far.

The buckets live in this process's memory (per instance): with several instances behind one app,
each paces what it receives, so a sender's allowance is at most the instances' sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot import metrics
from bot.policy import FairnessSection

#: How many buckets, waiting starts or flood episodes a pacer holds before it forgets what no
#: longer matters (full buckets, starts past, episodes that are not floods).
KEPT = 10_000


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`book` may go into debt (a booked start)."""

    tokens: float
    stamp: datetime

    def refill(self, now: datetime, rate: float, burst: float) -> bool:
        """Add what flowed in since the last look; True when the bucket is full."""
        elapsed = max(0.0, (now - self.stamp).total_seconds())
        self.tokens = min(burst, self.tokens + elapsed * rate)
        self.stamp = now
        return self.tokens >= burst

    def book(self, now: datetime, rate: float, burst: float) -> float:
        """Take a token; return the seconds until it is there (0: now)."""
        self.refill(now, rate, burst)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


@dataclass(frozen=True, slots=True)
class Flood:
    """A sender past their bucket: how many messages since the flood began, and since when."""

    sender: str
    platform: str
    messages: int
    since: datetime


@dataclass(slots=True)
class _Episode:
    since: datetime
    messages: int = 0
    flooding: bool = False  # a draft of the sender's waited for their bucket
    shown: bool = False


@dataclass(slots=True)
class Pacer:
    """When each new draft may start, by its sender's and its workspace's buckets."""

    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _starts: dict[str, datetime] = field(default_factory=dict)  # conversation -> its waiting draft's start
    _floods: dict[str, _Episode] = field(default_factory=dict)
    _prune_at: int = KEPT

    @property
    def buckets(self) -> int:
        """How many buckets this instance keeps (a sender or workspace not heard from lately has none)."""
        return len(self._buckets)

    def start_of(
        self, policy: FairnessSection, *, platform: str, workspace: str, sender: str, conversation: str, now: datetime
    ) -> datetime | None:
        """The new draft's start (None: at once)."""
        if len(self._buckets) > self._prune_at:
            self._forget_full(policy, now)
        self._count(policy, platform, sender, now)
        waiting = self._starts.get(conversation)
        if waiting is not None and waiting > now:
            metrics.flood_coalesced(platform)
            return waiting  # coalesced: the draft that has not started covers this message too
        self._starts.pop(conversation, None)
        delay = max(
            self._book(f"sender:{platform}:{sender}", policy.sender_messages_per_minute, policy.sender_burst, now),
            self._book(
                f"workspace:{platform}:{workspace}",
                policy.workspace_messages_per_minute,
                policy.workspace_burst,
                now,
            ),
        )
        if delay <= 0:
            return None
        self._floods[f"{platform}:{sender}"].flooding = True
        metrics.flood_deferred(platform)
        start = now + timedelta(seconds=delay)
        self._starts[conversation] = start
        if len(self._starts) > KEPT:  # forget starts long past
            self._starts = {k: v for k, v in self._starts.items() if v > now}
        return start

    def flood_to_show(self, platform: str, sender: str) -> Flood | None:
        """The flood of ``sender`` if the desk has not heard of it yet (once per flood)."""
        episode = self._floods.get(f"{platform}:{sender}")
        if episode is None or not episode.flooding or episode.shown:
            return None
        episode.shown = True
        return Flood(sender, platform, episode.messages, episode.since)

    def _count(self, policy: FairnessSection, platform: str, sender: str, now: datetime) -> None:
        """Count the sender's messages since their bucket was last full: the flood's size."""
        key = f"{platform}:{sender}"
        bucket = self._buckets.get(f"sender:{key}")
        rate = policy.sender_messages_per_minute / 60.0
        if bucket is None or rate <= 0 or bucket.refill(now, rate, float(policy.sender_burst)):
            if len(self._floods) >= KEPT:  # before adding this sender's, which must stay
                self._floods = {k: v for k, v in self._floods.items() if v.flooding}
            self._floods[key] = _Episode(now)
        self._floods[key].messages += 1

    def _forget_full(self, policy: FairnessSection, now: datetime) -> None:
        """Drop the buckets that have filled up again: a full bucket is what a new one would be,
        so a public server's thousands of one-time senders do not stay in memory. The next prune
        waits until the kept ones have doubled (each message costs O(1) on average)."""
        rates = {
            "sender": (policy.sender_messages_per_minute, policy.sender_burst),
            "workspace": (policy.workspace_messages_per_minute, policy.workspace_burst),
        }
        kept = {}
        for key, bucket in self._buckets.items():
            per_minute, burst = rates[key.split(":", 1)[0]]
            if per_minute > 0 and not bucket.refill(now, per_minute / 60.0, float(burst)):
                kept[key] = bucket
        self._buckets = kept
        self._prune_at = max(KEPT, 2 * len(kept))

    def _book(self, key: str, per_minute: int, burst: int, now: datetime) -> float:
        if per_minute <= 0:
            return 0.0
        bucket = self._buckets.setdefault(key, TokenBucket(float(burst), now))
        return bucket.book(now, per_minute / 60.0, float(burst))
