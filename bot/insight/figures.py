"""The report's figures, computed from the stored rows (:mod:`bot.store.insight`) by pure
functions: decision rates by category, agent, model and policy version; time to first response
and to decision; the edit-distance distribution; cost per resolved conversation; customers' feedback; counts of
what happened without a card."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.feedback import FeedbackKind
from bot.domain.measures import percentile
from bot.domain.states import DraftStatus
from bot.events import DecisionAction
from bot.store import insight as rows
from bot.store.insight import DecidedDraft, FeedbackScore, FirstResponse, ResolvedSpend

#: What an agent did with a draft (the draft decisions of :class:`DecisionAction`).
Verdict = DecisionAction
VERDICTS = (Verdict.APPROVE, Verdict.EDIT, Verdict.REJECT, Verdict.REGENERATE)
_SENT_STATES = frozenset({DraftStatus.APPROVED, DraftStatus.EDITED, DraftStatus.SENT, DraftStatus.SEND_FAILED})
#: The groupings the report breaks the rates down by, with the label of a row that lacks the value.
GROUPINGS: tuple[tuple[str, Callable[[DecidedDraft], str], str], ...] = (
    ("category", lambda d: d.category, "(not recorded)"),
    ("agent", lambda d: d.decided_by, "(unknown)"),
    ("model", lambda d: d.model, "(unknown)"),
    ("policy version", lambda d: d.policy_version, "(not recorded)"),
)
#: Edit-distance buckets: (label, upper bound inclusive).
EDIT_BUCKETS: tuple[tuple[str, float], ...] = (
    ("unchanged", 0.0),
    ("≤ 0.10", 0.10),
    ("0.10–0.25", 0.25),
    ("0.25–0.50", 0.50),
    ("> 0.50", 1.0),
)
#: The audit lines counted: a message that needed no reply, a conversation taken over by an agent,
#: an agent answering in the customer's thread by hand.
COUNTED = ("no_reply", "take_over", "answered_by_hand")


def verdict_of(draft: DecidedDraft) -> Verdict | None:
    """The decision a decided draft's state shows (None: a state no decision leaves)."""
    if draft.status is DraftStatus.REJECTED:
        return Verdict.REJECT
    if draft.status is DraftStatus.SUPERSEDED:
        return Verdict.REGENERATE
    if draft.status in _SENT_STATES:
        return Verdict.EDIT if draft.edited or draft.status is DraftStatus.EDITED else Verdict.APPROVE
    return None


@dataclass(frozen=True, slots=True)
class Rates:
    """How the drafts of one group were decided."""

    group: str
    counts: dict[Verdict, int] = field(default_factory=dict)

    @property
    def decided(self) -> int:
        return sum(self.counts.values())

    def share(self, verdict: Verdict) -> float:
        return self.counts.get(verdict, 0) / self.decided if self.decided else 0.0


@dataclass(frozen=True, slots=True)
class Durations:
    """How many, and the median and 90th percentile, in seconds (None: none measured)."""

    count: int
    p50: float | None
    p90: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Durations:
        return cls(len(seconds), percentile(seconds, 0.5), percentile(seconds, 0.9))


@dataclass(frozen=True, slots=True)
class Thumbs:
    """Customers' 👍 / 👎 on the replies of one group."""

    group: str
    up: int = 0
    down: int = 0

    @property
    def answers(self) -> int:
        return self.up + self.down

    @property
    def up_share(self) -> float:
        return self.up / self.answers if self.answers else 0.0


@dataclass(frozen=True, slots=True)
class FeedbackFigures:
    """Customers' feedback: thumbs overall and by category, and the CSAT answers (1..5)."""

    overall: Thumbs
    by_category: list[Thumbs]
    csat: list[int]

    @property
    def csat_mean(self) -> float | None:
        return sum(self.csat) / len(self.csat) if self.csat else None


def feedback_figures(scores: Iterable[FeedbackScore]) -> FeedbackFigures:
    """Thumbs by category (the most answered first) and the CSAT answers."""
    thumbs: dict[str, Counter[int]] = defaultdict(Counter)
    csat = []
    for s in scores:
        if s.kind is FeedbackKind.CSAT:
            csat.append(s.score)
        else:
            thumbs[s.category or "(not recorded)"][s.score] += 1
    groups = [Thumbs(name, c[1], c[-1]) for name, c in thumbs.items()]
    groups.sort(key=lambda t: (-t.answers, t.group))
    overall = Thumbs("all", sum(t.up for t in groups), sum(t.down for t in groups))
    return FeedbackFigures(overall, groups, sorted(csat))


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``supportbot report`` shows for one window."""

    since: datetime
    until: datetime
    overall: Rates
    by: dict[str, list[Rates]]
    first_response: Durations
    unanswered: int
    decision: Durations
    edit_distances: list[tuple[str, int]]
    resolved: ResolvedSpend
    counts: dict[str, int]
    feedback: FeedbackFigures

    @property
    def cost_per_resolved_microusd(self) -> int | None:
        r = self.resolved
        return round(r.cost_microusd / r.conversations) if r.conversations else None

    @property
    def tokens_per_resolved(self) -> int | None:
        r = self.resolved
        return round(r.tokens / r.conversations) if r.conversations else None


def rates(drafts: Iterable[DecidedDraft], key: Callable[[DecidedDraft], str], missing: str) -> list[Rates]:
    """Rates per group, the busiest group first (then by name)."""
    groups: dict[str, Counter[Verdict]] = defaultdict(Counter)
    for draft in drafts:
        verdict = verdict_of(draft)
        if verdict is not None:
            groups[key(draft) or missing][verdict] += 1
    ordered = sorted(groups.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return [Rates(group, dict(counts)) for group, counts in ordered]


def edit_histogram(distances: Iterable[float]) -> list[tuple[str, int]]:
    """How many sent replies fall in each :data:`EDIT_BUCKETS` bucket."""
    counts = dict.fromkeys((label for label, _ in EDIT_BUCKETS), 0)
    for distance in distances:
        label = next(label for label, upper in EDIT_BUCKETS if distance <= upper)
        counts[label] += 1
    return list(counts.items())


def build(
    since: datetime,
    until: datetime,
    drafts: Sequence[DecidedDraft],
    responses: Sequence[FirstResponse],
    resolved: ResolvedSpend,
    counts: dict[str, int],
    feedback: Sequence[FeedbackScore] = (),
) -> Report:
    """The report from its rows (a pure function: the tests and both outputs share it)."""
    overall = rates(drafts, lambda _d: "all", "all")
    waits = [(d.decided_at - d.shown_at).total_seconds() for d in drafts if d.shown_at is not None]
    answered = [(r.answered_at - r.asked_at).total_seconds() for r in responses if r.answered_at is not None]
    sent = [d.edit_distance for d in drafts if d.edit_distance is not None and verdict_of(d) in _SENDING]
    return Report(
        since=since,
        until=until,
        overall=overall[0] if overall else Rates("all"),
        by={name: rates(drafts, key, missing) for name, key, missing in GROUPINGS},
        first_response=Durations.of([max(0.0, s) for s in answered]),
        unanswered=sum(1 for r in responses if r.answered_at is None),
        decision=Durations.of([max(0.0, s) for s in waits]),
        edit_distances=edit_histogram(sent),
        resolved=resolved,
        counts=counts,
        feedback=feedback_figures(feedback),
    )


_SENDING = frozenset({Verdict.APPROVE, Verdict.EDIT})


async def gather(conn: AsyncConnection, since: timedelta, now: datetime) -> Report:
    """The report of the window ``since`` before ``now``, read in one connection."""
    start = now - since
    return build(
        start,
        now,
        await rows.decided_drafts(conn, start),
        await rows.first_responses(conn, start),
        await rows.resolved_spend(conn, start),
        await rows.audit_counts(conn, start, COUNTED),
        await rows.feedback_scores(conn, start),
    )
