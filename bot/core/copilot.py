"""The copilot: a thin facade wiring the rooms of the core, and the surface adapters call
(:class:`bot.ports.Core`: receive, retract, has_conversation, decide, edit_form)."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot.agent import DraftingAgent
from bot.core.allowlist import WorkspaceAllowlist
from bot.core.background import Background
from bot.core.dispatcher import Dispatcher
from bot.core.drafting import Drafting
from bot.core.edit_translation import EditTranslations
from bot.core.feedback import FeedbackDesk
from bot.core.home import Homes
from bot.core.intake import Intake
from bot.core.lifecycle import AutoResolver
from bot.core.memory import Memory
from bot.core.on_demand import OnDemand
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper, Sweeper
from bot.core.retention import COUNTERS as RETENTION_COUNTERS
from bot.core.retention import RetentionJob
from bot.core.review import Decisions
from bot.core.sla import SlaWatch
from bot.core.tasks import Supervisor
from bot.core.timing import WorkTiming
from bot.core.translation import Translator
from bot.errors import PolicyError
from bot.events import (
    AgentCommand,
    DraftRequest,
    FeedbackClick,
    InboundMessage,
    MessageDeleted,
    ReviewDecision,
    ThreadRef,
)
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
    "messages_deleted_before_arrival",
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
    :meth:`edit_form`; :attr:`background` runs the background rooms under one supervisor. The
    rooms hand off to each other through it, built last (hence the lambdas before it)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        policy: PolicyStore,
        kimi: KimiClient,
        orders: OrderBackend,
        tools: Callable[[Policy], ToolRegistry],
    ) -> None:
        self.settings, self.db, self.policy = settings, db, policy
        self.kimi, self.orders = kimi, orders
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
        self.intake.on_received = lambda received: self.background.received(received)  # noqa: PLW0108
        self.intake.served = WorkspaceAllowlist(settings, self.metrics).allows
        self.on_demand = OnDemand(db, policy, self.intake, self.tools_for)
        self.decisions = Decisions(db, policy, orders, lambda draft, fx: self.background.decided(draft, fx))  # noqa: PLW0108
        self.feedback = FeedbackDesk(db, policy)
        self.homes = Homes(db, policy)
        self.translator = Translator(settings, db, kimi, self.drafting.budgets.for_call)
        self.drafting.translator = self.decisions.translator = self.translator
        self.dispatcher = Dispatcher(
            db, policy, orders, self.channels, self.metrics, self.owner, timing=self.timing,
            concurrency=settings.delivery_concurrency, refresh_card=self.publisher.refresh, supervisor=self.supervisor,
        )  # fmt: skip
        self.drafting.deliver = self.dispatcher.wake
        self.resolver = AutoResolver(db, policy, self._refresh_card)
        self.edits = EditTranslations(db, policy, self.translator, self.timing, self._refresh_card)
        self.decisions.lease = self.timing.lease
        self.sweeper = Sweeper(
            db, timing=self.timing, redraft=self.drafting.pool.submit, repost=self.publisher.recover,
            refresh=self.publisher.refresh, find_lost=self.publisher.find_lost_card, deliver=self.dispatcher.wake,
            resolve_idle=self.resolver.sweep, translate_edits=self.edits.resume,
        )  # fmt: skip
        self.retention = RetentionJob(db, policy, self.metrics, interval=settings.retention_sweep_seconds)
        self.sla = SlaWatch(db, policy, self.publisher.desks, self.metrics, self.publisher.refresh)
        runs = (self.drafting, self.dispatcher, self.leases, self.sweeper, self.sla, self.retention, self.edits)
        self.background = Background(db, policy, self.supervisor, self.timing, self.publisher, *runs)

    def _refresh_card(self, draft_id: str) -> None:
        self.background.refresh_card(draft_id)

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

    # -- the Core surface -----------------------------------------------------------------

    async def receive(self, message: InboundMessage) -> bool:
        return await self.intake.receive(message)

    async def retract(self, deleted: MessageDeleted) -> bool:
        return await self.intake.retract(deleted)

    async def draft_on_request(self, request: DraftRequest) -> str:
        return await self.on_demand.draft(request)

    async def agent_command(self, command: AgentCommand) -> str:
        return await self.on_demand.command(command)

    async def has_conversation(self, thread: ThreadRef) -> bool:
        return await self.intake.has_conversation(thread)

    def serves(self, thread: ThreadRef) -> bool:
        return self.intake.served(thread)

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        return await self.decisions.decide(decision)

    async def edit_form(self, draft_id: str) -> EditForm | None:
        return await self.decisions.edit_form(draft_id)

    async def rate(self, click: FeedbackClick) -> DecisionOutcome:
        return await self.feedback.rate(click)

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


def rejected_policy_notice(publisher: CardPublisher) -> Callable[[PolicyError], Awaitable[None]]:
    """What a bad policy edit does: the old policy stays, and the agents hear about it once."""

    async def policy_rejected(error: PolicyError) -> None:
        text = (
            f":warning: The policy file {error.path} was not reloaded; the previous policy stays in force.\n"
            + "\n".join(f"• {p}" for p in error.problems[:20])
        )
        await publisher.notice(text)

    return policy_rejected
