"""Prometheus metrics: module-level metric objects, a small API the core calls, and the
``/metrics`` handler.

The core reports each step with one call (none of them can raise)::

    metrics.event_received("accepted")            # or "duplicate", "ignored", "failed"
    metrics.draft_ready(message_received_at)       # histogram: message -> draft ready
    metrics.card_posted(message_received_at)       # histogram: message -> card on the desk
    metrics.decided("approve", True, card_posted_at)   # counter + histogram: card -> decision
    metrics.delivered(decided_at)                  # histogram: decision -> reply in the thread
    metrics.kimi_call(model, seconds, prompt_tokens=..., completion_tokens=..., cached_tokens=...)
    metrics.kimi_error(model, "rate_limit")        # Moonshot's error.type, or "timeout", ...
    metrics.platform_error("slack", "chat.postMessage")
    metrics.background_failure("produce_draft")

Backlog gauges (outbox and drafting: depth and oldest age) are read when ``/metrics`` is
scraped, through an async callback (:func:`store_backlog` reads them from SQL; the app reuses a
read for ``METRICS_CACHE_SECONDS``, so a flood of scrapes costs one query per interval,
counted in ``supportbot_backlog_reads_total``). The process collector (CPU, memory, open
files) is included. Everything is registered on :data:`REGISTRY`, not on prometheus_client's
global registry, so importing a library that registers its own metrics cannot clash with these
names.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

# Seconds: from a few hundred milliseconds (a card) to hours (a human decision at night).
_STEP_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
_KIMI_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

TIME_TO_DRAFT = Histogram(
    "supportbot_time_to_draft_seconds",
    "From the customer's message to a draft ready for review.",
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_CARD = Histogram(
    "supportbot_time_to_card_seconds",
    "From the customer's message to its card on the review desk.",
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_DECISION = Histogram(
    "supportbot_time_to_decision_seconds",
    "From a card shown on the review desk to the agent's decision.",
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_DELIVERY = Histogram(
    "supportbot_time_to_delivery_seconds",
    "From an approval to the reply posted in the customer's thread.",
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
KIMI_LATENCY = Histogram(
    "supportbot_kimi_request_seconds",
    "One Kimi chat completion, retries included, by model.",
    ["model"],
    buckets=_KIMI_BUCKETS,
    registry=REGISTRY,
)
KIMI_TOKENS = Counter(
    "supportbot_kimi_tokens",
    "Tokens used, by model and kind (prompt, completion, cached: prompt tokens served from the cache).",
    ["model", "kind"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "supportbot_events",
    "Customer messages by outcome: accepted, duplicate (a redelivery), ignored (unwatched channel), failed.",
    ["outcome"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "supportbot_decisions",
    "Agents' decisions by action (approve, edit, reject, regenerate) and whether the core accepted them.",
    ["action", "outcome"],
    registry=REGISTRY,
)
NO_REPLY = Counter(
    "supportbot_no_reply",
    "Customer messages that needed no reply (no card), by who decided: rule (before any model call) or model.",
    ["by"],
    registry=REGISTRY,
)
KIMI_ERRORS = Counter(
    "supportbot_kimi_errors",
    "Failed Kimi calls (after retries) by model and error type.",
    ["model", "type"],
    registry=REGISTRY,
)
PLATFORM_ERRORS = Counter(
    "supportbot_platform_errors",
    "Failed calls to a chat platform by platform and operation.",
    ["platform", "operation"],
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "supportbot_platform_events_dropped",
    "Times a platform said it dropped events meant for the bot (Slack's app_rate_limited: a minute of"
    " a workspace's events), by platform. Messages sent then never reached the bot.",
    ["platform"],
    registry=REGISTRY,
)
BACKGROUND_FAILURES = Counter(
    "supportbot_background_failures",
    "Background tasks that ended with an exception, by task.",
    ["task"],
    registry=REGISTRY,
)

HTTP_CONNECTIONS_CLOSED = Counter(
    "supportbot_http_connections_closed",
    "Inbound HTTP connections the server closed or refused, by reason: header_timeout, body_timeout,"
    " cap (closed to make room), full (refused: every connection busy), accept_failed (out of"
    " descriptors), bad_request (malformed, or the client left mid-request).",
    ["reason"],
    registry=REGISTRY,
)
HTTP_CONNECTIONS_OPEN = Gauge(
    "supportbot_http_connections_open",
    "Inbound HTTP connections open at the last watchdog pass.",
    registry=REGISTRY,
)
FLOOD_DEFERRED = Counter(
    "supportbot_flood_deferred",
    "Drafts whose start waits for the sender's or workspace's bucket ([fairness]), by platform.",
    ["platform"],
    registry=REGISTRY,
)
FLOOD_COALESCED = Counter(
    "supportbot_flood_coalesced",
    "Messages folded into a draft of their conversation that had not started yet, by platform.",
    ["platform"],
    registry=REGISTRY,
)
FLOOD_NOTICES = Counter(
    "supportbot_flood_notices",
    "Floods shown on the desk (one notice per sender and flood), by platform.",
    ["platform"],
    registry=REGISTRY,
)
BUDGET_WAITS = Counter(
    "supportbot_budget_waits",
    "Drafts put back in the queue because a model budget could not take the call, by budget"
    " (daily, customer).",
    ["budget"],
    registry=REGISTRY,
)
CSAT_ANSWERS = Counter(
    "supportbot_csat_answers",
    "Customers' answers to the CSAT question kept as a score (no draft, the conversation stays resolved), by score.",
    ["score"],
    registry=REGISTRY,
)
BACKLOG_READS = Counter(
    "supportbot_backlog_reads",
    "SQL reads of the backlog gauges (scrapes within METRICS_CACHE_SECONDS share one).",
    registry=REGISTRY,
)


def _seconds_since(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _observe(histogram: Histogram, since: datetime | None) -> None:
    seconds = _seconds_since(since)
    if seconds is not None:
        histogram.observe(seconds)


def event_received(outcome: str) -> None:
    """A customer message arrived: ``accepted``, ``duplicate``, ``ignored`` or ``failed``."""
    EVENTS.labels(outcome=outcome).inc()


def csat_answered(score: int) -> None:
    CSAT_ANSWERS.labels(score=str(score)).inc()


def draft_ready(message_received_at: datetime) -> None:
    TIME_TO_DRAFT.observe(_seconds_since(message_received_at) or 0.0)


def no_reply(by: str) -> None:
    NO_REPLY.labels(by=by).inc()


def card_posted(message_received_at: datetime) -> None:
    TIME_TO_CARD.observe(_seconds_since(message_received_at) or 0.0)


def decided(action: str, accepted: bool, card_posted_at: datetime | None = None) -> None:
    """An agent's click; the time since the card was shown is observed for accepted ones."""
    DECISIONS.labels(action=action, outcome="accepted" if accepted else "refused").inc()
    if accepted:
        _observe(TIME_TO_DECISION, card_posted_at)


def delivered(decided_at: datetime | None) -> None:
    _observe(TIME_TO_DELIVERY, decided_at)


def kimi_call(
    model: str, seconds: float, *, prompt_tokens: int = 0, completion_tokens: int = 0, cached_tokens: int = 0
) -> None:
    KIMI_LATENCY.labels(model=model).observe(seconds)
    for kind, count in (("prompt", prompt_tokens), ("completion", completion_tokens), ("cached", cached_tokens)):
        if count:
            KIMI_TOKENS.labels(model=model, kind=kind).inc(count)


def kimi_error(model: str, kind: str) -> None:
    KIMI_ERRORS.labels(model=model, type=kind or "unknown").inc()


def flood_deferred(platform: str) -> None:
    FLOOD_DEFERRED.labels(platform=platform).inc()


def flood_coalesced(platform: str) -> None:
    FLOOD_COALESCED.labels(platform=platform).inc()


def flood_notice(platform: str) -> None:
    FLOOD_NOTICES.labels(platform=platform).inc()


def budget_wait(budget: str) -> None:
    BUDGET_WAITS.labels(budget=budget).inc()


def platform_error(platform: str, operation: str) -> None:
    PLATFORM_ERRORS.labels(platform=platform, operation=operation).inc()


def platform_dropped_events(platform: str) -> None:
    EVENTS_DROPPED.labels(platform=platform).inc()


def background_failure(task: str) -> None:
    BACKGROUND_FAILURES.labels(task=task).inc()


def http_connection_closed(reason: str) -> None:
    HTTP_CONNECTIONS_CLOSED.labels(reason=reason).inc()


def http_connections_open(count: int) -> None:
    HTTP_CONNECTIONS_OPEN.set(count)


# -- backlog gauges ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work waiting right now: replies in the outbox and drafts being written."""

    outbox_depth: int = 0
    outbox_oldest: datetime | None = None
    drafting_depth: int = 0
    drafting_oldest: datetime | None = None


BacklogSource = Callable[[], Awaitable[Backlog]]


async def store_backlog(engine: AsyncEngine) -> Backlog:
    """Read the backlog from SQL (a reader engine will do): outbox rows not sent yet, drafts
    still being written."""
    from bot.domain.states import DraftStatus, OutboxStatus
    from bot.store import Draft, OutboxItem

    BACKLOG_READS.inc()
    async with engine.connect() as conn:
        outbox = (
            await conn.execute(
                select(func.count(), func.min(OutboxItem.created_at)).where(
                    OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING))
                )
            )
        ).one()
        drafting = (
            await conn.execute(
                select(func.count(), func.min(Draft.created_at)).where(Draft.status == DraftStatus.DRAFTING)
            )
        ).one()
    return Backlog(int(outbox[0]), outbox[1], int(drafting[0]), drafting[1])


class _Snapshot(Collector):
    """The values read for one scrape: backlog gauges and (until the core reports through the
    API above) the core's own named counters."""

    def __init__(
        self, backlog: Backlog | None, counters: Mapping[str, int], gauges: Mapping[str, float] | None = None
    ) -> None:
        self._backlog = backlog
        self._counters = counters
        self._gauges = gauges or {}

    def collect(self) -> Iterable[Metric]:
        backlog = self._backlog
        if backlog is not None:
            yield GaugeMetricFamily(
                "supportbot_outbox_depth", "Replies approved and not sent yet.", backlog.outbox_depth
            )
            yield GaugeMetricFamily(
                "supportbot_outbox_oldest_age_seconds",
                "Age of the oldest reply waiting in the outbox (0 when empty).",
                _seconds_since(backlog.outbox_oldest) or 0.0,
            )
            yield GaugeMetricFamily(
                "supportbot_drafting_backlog", "Drafts the model is still writing.", backlog.drafting_depth
            )
            yield GaugeMetricFamily(
                "supportbot_drafting_oldest_age_seconds",
                "Age of the oldest draft still being written (0 when none).",
                _seconds_since(backlog.drafting_oldest) or 0.0,
            )
        for name, value in sorted(self._counters.items()):
            yield CounterMetricFamily(f"supportbot_{name}", f"The core's {name.replace('_', ' ')} count.", value)
        families: dict[str, GaugeMetricFamily] = {}
        for key, figure in sorted(self._gauges.items()):
            name, _, labels = key.partition("{")
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    f"supportbot_{name}", f"The model client's {name.replace('_', ' ')}.", labels=sorted(pairs)
                )
            family.add_metric([pairs[k] for k in sorted(pairs)], figure)
        yield from families.values()


async def render(
    backlog: BacklogSource | None = None,
    counters: Mapping[str, int] | None = None,
    gauges: Mapping[str, float] | None = None,
) -> bytes:
    """The exposition text: :data:`REGISTRY` plus this scrape's backlog, counters and gauges
    (``name`` or ``name{label="value"}`` keys)."""
    snapshot = await backlog() if backlog is not None else None
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Registry(REGISTRY))
    scrape.register(_Snapshot(snapshot, dict(counters or {}), gauges))
    return generate_latest(scrape)


class _Registry(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def handler(
    backlog: BacklogSource | None = None,
    counters: Callable[[], Mapping[str, int]] | None = None,
    gauges: Callable[[], Mapping[str, float]] | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for ``/metrics``."""

    async def metrics(_request: web.Request) -> web.Response:
        body = await render(
            backlog, counters() if counters is not None else None, gauges() if gauges is not None else None
        )
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return metrics
