"""The copilot: a thin facade wiring the rooms of the core, and the surface adapters call
(:class:`bot.ports.Core`: receive, retract, has_conversation, decide, edit_form)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot import metrics
from bot.agent import DraftingAgent
from bot.core import language
from bot.core.allowlist import WorkspaceAllowlist
from bot.core.dispatcher import Dispatcher
from bot.core.drafting import Drafting
from bot.core.fairness import Flood
from bot.core.intake import Intake, Received
from bot.core.lifecycle import AutoResolver
from bot.core.memory import Memory
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper, Sweeper
from bot.core.retention import COUNTERS as RETENTION_COUNTERS
from bot.core.retention import RetentionJob
from bot.core.review import Decisions, Effects
from bot.core.sla import SlaWatch
from bot.core.tasks import Supervisor
from bot.core.timing import WorkTiming
from bot.core.translation import Translator
from bot.errors import PolicyError
from bot.events import InboundMessage, MessageDeleted, ReviewDecision, ThreadRef
from bot.insight.figures import Report, gather
from bot.kimi import KimiClient
from bot.policy import Policy, PolicyStore
from bot.ports import CustomerChannel, DecisionOutcome, EditForm, FileFetcher, ReviewDesk
from bot.settings import Settings
from bot.store import Database, utcnow
from bot.store import drafts as draft_rows
from tools import ToolRegistry
from tools.orders import OrderBackend

log = logging.getLogger(__name__)

METRICS = (
    "events_received",
    "events_duplicate",
    "messages_ignored_unwatched",
    "messages_ignored_workspace",
    "drafts_ready",
    "drafts_failed",
    "drafts_no_reply",
    "summaries",
    "cards_posted",
    "cards_adopted",
    "replies_sent",
    "sends_failed",
    "refunds_executed",
    *RETENTION_COUNTERS,
    "sla_reminders",
    "cards_overdue",
)


class Copilot:
    """The core. Adapters call :meth:`receive`, :meth:`has_conversation`, :meth:`decide` and
    :meth:`edit_form`; :meth:`start` runs the background rooms under one supervisor."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        policy: PolicyStore,
        kimi: KimiClient,
        orders: OrderBackend,
        tools: Callable[[Policy], ToolRegistry],
    ) -> None:
        self.settings = settings
        self.db = db
        self.policy = policy
        self.kimi = kimi
        self.orders = orders
        self.metrics: Counter[str] = Counter(dict.fromkeys(METRICS, 0))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        self.supervisor = Supervisor()
        self.channels: dict[str, CustomerChannel] = {}
        self.timing = WorkTiming.from_settings(settings)
        self.leases = LeaseKeeper(db, self.owner, self.timing)
        self.publisher = CardPublisher(db, policy, self.metrics, self.owner, self.timing)
        self.policy_rejected = rejected_policy_notice(self.publisher)
        self._build_tools = tools
        self._tools: tuple[Policy, ToolRegistry] | None = None
        agent, memory = DraftingAgent(kimi), Memory(settings, db, kimi, self.metrics)
        rooms = (self.tools_for, self.publisher, self.leases, self.supervisor, self.channels, self.metrics)
        self.drafting = Drafting(settings, db, policy, agent, memory, *rooms)
        self.intake = Intake(db, policy, self.metrics)
        self.intake.on_received = self._received
        self.intake.served = WorkspaceAllowlist(settings, self.metrics).allows
        self.decisions = Decisions(db, policy, orders, self._decided)
        self.translator = Translator(settings, db, kimi, self.drafting.budget_for)
        self.drafting.translator = self.decisions.translator = self.translator
        self.dispatcher = Dispatcher(
            db,
            policy,
            orders,
            self.channels,
            self.metrics,
            self.owner,
            timing=self.timing,
            concurrency=settings.delivery_concurrency,
            refresh_card=self.publisher.refresh,
            supervisor=self.supervisor,
        )
        self.drafting.deliver = self.dispatcher.wake
        self.resolver = AutoResolver(db, policy, self._refresh_card)
        self.sweeper = Sweeper(
            db,
            timing=self.timing,
            redraft=self.drafting.pool.submit,
            repost=self.publisher.recover,
            refresh=self.publisher.refresh,
            deliver=self.dispatcher.wake,
            resolve_idle=self.resolver.sweep,
        )
        self.retention = RetentionJob(db, policy, self.metrics, interval=settings.retention_sweep_seconds)
        self.sla = SlaWatch(db, policy, self.publisher.desks, self.metrics, self.publisher.refresh)

    # -- wiring ---------------------------------------------------------------------------

    def add_channel(self, channel: CustomerChannel) -> None:
        self.channels[channel.platform] = channel

    def add_files(self, platform: str, fetcher: FileFetcher) -> None:
        """How drafting downloads ``platform``'s attachments (see :mod:`bot.core.files`)."""
        self.drafting.files.add(platform, fetcher)

    def add_desk(self, desk: ReviewDesk, *, preferred: bool = False) -> None:
        self.publisher.add_desk(desk, preferred=preferred)
        self.decisions.desks.add(desk.name)

    @property
    def desk(self) -> ReviewDesk | None:
        return self.publisher.desk

    def tools_for(self, policy: Policy) -> ToolRegistry:
        """The tools for a policy, rebuilt when a reload changed it (e.g. new knowledge files)."""
        if self._tools is None or self._tools[0] is not policy:
            self._tools = (policy, self._build_tools(policy))
        return self._tools[1]

    def start(self) -> None:
        """Start the background rooms: drafting workers, lease renewal, the sweeper (which
        also resumes whatever an earlier run left), the dispatcher, the retention job."""
        self.drafting.pool.start(self.settings.drafting_concurrency)
        desk = self.policy.current.desk
        if desk.handoff_texts or desk.acknowledgement_texts:  # half a second, off the first ack
            self.supervisor.spawn("language-model", asyncio.to_thread(language.load))
        self.supervisor.keep_running("lease-renewal", self.leases.renew_forever)
        self.supervisor.keep_running("sweeper", self.sweeper.run)
        self.supervisor.keep_running("dispatcher", lambda: self.dispatcher.run(self.timing.sweep_seconds))
        self.supervisor.keep_running("sla", lambda: self.sla.run(self.timing.sweep_seconds))
        # A failing pass is retried after a minute, not a second: it is no hurry, and logs once.
        self.supervisor.keep_running("retention", self.retention.run, backoff=min(60.0, self.retention.interval))
        self.supervisor.keep_running("wal-checkpoint", self.db.checkpoint_forever)

    async def wind_down(self, grace: float) -> bool:
        """A graceful stop's first phase: start no new draft or delivery and give what is in
        flight (drafts being written, replies being posted, card updates) up to ``grace`` seconds
        to finish, so a SIGTERM does not waste a model call the next run would make again. What is
        still running after that is cancelled by :meth:`close` and resumed from SQL by the next
        run. True when everything finished in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def left() -> float:
            return max(0.0, deadline - loop.time())

        drafted = await self.drafting.pool.wind_down(left())
        delivered = await self.dispatcher.wind_down(left())
        await self.supervisor.drain(left())  # card posts and updates the drafts started
        return drafted and delivered and self.supervisor.busy == 0

    async def close(self) -> None:
        await self.supervisor.close()

    # -- the Core surface -----------------------------------------------------------------

    async def receive(self, message: InboundMessage) -> bool:
        return await self.intake.receive(message)

    async def retract(self, deleted: MessageDeleted) -> bool:
        return await self.intake.retract(deleted)

    async def has_conversation(self, thread: ThreadRef) -> bool:
        return await self.intake.has_conversation(thread)

    def serves(self, thread: ThreadRef) -> bool:
        return self.intake.served(thread)

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        return await self.decisions.decide(decision)

    async def edit_form(self, draft_id: str) -> EditForm | None:
        return await self.decisions.edit_form(draft_id)

    async def reload_policy(self) -> PolicyError | None:
        """Take up an edited policy file now (the playground's editor); a bad file keeps the old
        and its refusal is returned."""
        await self.policy.reload_if_changed(self.policy_rejected)
        return self.policy.refused

    async def report(self, since: timedelta) -> Report:
        async with self.db.read() as conn:
            return await gather(conn, since, utcnow())

    async def reshow_cards(self, desk: str, limit: int = 30) -> int:
        """Show the newest cards on ``desk`` again as they are now (a desk kept in memory, the
        playground, after a restart); returns how many."""
        async with self.db.read() as conn:
            drafts = await draft_rows.cards_on_desk(conn, desk, limit)
        for draft_id in drafts:
            await self.publisher.refresh(draft_id)
        return len(drafts)

    # -- hand-offs between rooms ----------------------------------------------------------

    def _received(self, received: Received) -> None:
        if received.draft_id is not None and received.starts_at is None:
            self.drafting.pool.submit(received.draft_id)  # a paced draft is the sweeper's when it may start
        if received.flood is not None:
            self.supervisor.spawn("flood-notice", notify_flood(self.publisher, self.policy.current, received.flood))
        if received.deliver:
            self.dispatcher.wake()
        for old in (*received.superseded, *received.refresh):
            self.supervisor.spawn("refresh-card", self.publisher.refresh(old), draft=old)

    def _refresh_card(self, draft_id: str) -> None:
        self.supervisor.spawn("refresh-card", self.publisher.refresh(draft_id), draft=draft_id)

    def _decided(self, draft_id: str, effects: Effects) -> None:
        if effects.new_draft is not None:
            self.drafting.pool.submit(effects.new_draft)
        if effects.refresh:
            self.supervisor.spawn("refresh-card", self.publisher.refresh(draft_id), draft=draft_id)
        for other in effects.cards:
            self.supervisor.spawn("refresh-card", self.publisher.refresh(other), draft=other)
        if effects.deliver:
            self.dispatcher.wake()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until drafting, card work and deliveries that are due now are done (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def left() -> float:
            return max(0.0, deadline - loop.time())

        while left() > 0:
            await self.supervisor.drain(left())
            if self.drafting.pool.idle():
                await self.dispatcher.settle(left())
                await self.supervisor.drain(left())
                if self.drafting.pool.idle() and not self.dispatcher.in_flight:
                    return
            await asyncio.sleep(0.01)


async def notify_flood(publisher: CardPublisher, policy: Policy, flood: Flood) -> None:
    """One notice per flood: the desk hears that a sender is paced, not a card per message."""
    minutes = max(1, round((utcnow() - flood.since).total_seconds() / 60))
    metrics.flood_notice(flood.platform)
    await publisher.notice(
        f":ocean: {flood.messages} messages from {flood.sender} ({flood.platform}) in {minutes} min: "
        f"drafting for them is paused to {policy.fairness.sender_messages_per_minute} per minute. Every message "
        "is kept; a conversation's waiting draft covers all its messages so far."
    )


def rejected_policy_notice(publisher: CardPublisher) -> Callable[[PolicyError], Awaitable[None]]:
    """What a bad policy edit does: the old policy stays, and the agents hear about it once."""

    async def policy_rejected(error: PolicyError) -> None:
        text = (
            f":warning: The policy file {error.path} was not reloaded; the previous policy stays in force.\n"
            + "\n".join(f"• {p}" for p in error.problems[:20])
        )
        await publisher.notice(text)

    return policy_rejected
