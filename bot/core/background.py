"""The core's background work under one supervisor: the rooms that run on their own (drafting
workers, lease renewal, the sweeper, the dispatcher, SLA nudges, retention, checkpoints) started
together, wound down and settled together, and the hand-offs between rooms (a stored message to
drafting, a decision to the dispatcher and the cards it changed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bot import metrics
from bot.core import language
from bot.core.decided import Effects
from bot.core.dispatcher import Dispatcher
from bot.core.drafting import Drafting
from bot.core.edit_translation import EditTranslations
from bot.core.fairness import Flood
from bot.core.intake import Received
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper, Sweeper
from bot.core.retention import RetentionJob
from bot.core.sla import SlaWatch
from bot.core.tasks import Supervisor
from bot.core.timing import WorkTiming
from bot.policy import Policy, PolicyStore
from bot.store import Database, utcnow


@dataclass(slots=True)
class Background:
    """What the core runs beside the requests adapters make."""

    db: Database
    policy: PolicyStore
    supervisor: Supervisor
    timing: WorkTiming
    publisher: CardPublisher
    drafting: Drafting
    dispatcher: Dispatcher
    leases: LeaseKeeper
    sweeper: Sweeper
    sla: SlaWatch
    retention: RetentionJob
    edits: EditTranslations

    def start(self, drafting_concurrency: int) -> None:
        """Start the background rooms: drafting workers, lease renewal, the sweeper (which
        also resumes whatever an earlier run left), the dispatcher, the retention job."""
        self.drafting.pool.start(drafting_concurrency)
        desk = self.policy.current.desk
        out_of_hours_texts = desk.hours.out_of_hours_texts if desk.hours else {}
        if desk.handoff_texts or desk.acknowledgement_texts or out_of_hours_texts:  # half a second, off the first ack
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
        left = _clock(grace)
        drafted = await self.drafting.pool.wind_down(left())
        delivered = await self.dispatcher.wind_down(left())
        await self.supervisor.drain(left())  # card posts and updates the drafts started
        return drafted and delivered and self.supervisor.busy == 0

    async def close(self) -> None:
        await self.supervisor.close()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until drafting, card work and deliveries that are due now are done (tests)."""
        left = _clock(timeout)
        while left() > 0:
            await self.supervisor.drain(left())
            if self.drafting.pool.idle():
                await self.dispatcher.settle(left())
                await self.supervisor.drain(left())
                if self.drafting.pool.idle() and not self.dispatcher.in_flight:
                    return
            await asyncio.sleep(0.01)

    # -- hand-offs between rooms ----------------------------------------------------------

    def received(self, received: Received) -> None:
        """After the ack: the new draft to drafting, the cards it changed redrawn."""
        if received.draft_id is not None and received.starts_at is None:
            self.drafting.pool.submit(received.draft_id)  # a paced draft is the sweeper's when it may start
        if received.flood is not None:
            self.supervisor.spawn("flood-notice", notify_flood(self.publisher, self.policy.current, received.flood))
        if received.deliver:
            self.dispatcher.wake()
        for old in (*received.superseded, *received.refresh):
            self.refresh_card(old)

    def refresh_card(self, draft_id: str) -> None:
        self.supervisor.spawn("refresh-card", self.publisher.refresh(draft_id), draft=draft_id)

    def decided(self, draft_id: str, effects: Effects) -> None:
        """After a decision: a fresh draft, the cards it changed, the reply to deliver."""
        if effects.new_draft is not None:
            self.drafting.pool.submit(effects.new_draft)
        if effects.refresh:
            self.refresh_card(draft_id)
        for other in effects.cards:
            self.refresh_card(other)
        if effects.deliver:
            self.dispatcher.wake()
        if effects.translate is not None:
            self.supervisor.spawn("translate-edit", self.edits.translate(effects.translate), draft=draft_id)


def _clock(seconds: float) -> Callable[[], float]:
    """The seconds left of ``seconds`` from now, on the running loop's clock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    return lambda: max(0.0, deadline - loop.time())


async def notify_flood(publisher: CardPublisher, policy: Policy, flood: Flood) -> None:
    """One notice per flood: the desk hears that a sender is paced, not a card per message."""
    minutes = max(1, round((utcnow() - flood.since).total_seconds() / 60))
    metrics.flood_notice(flood.platform)
    await publisher.notice(
        f":ocean: {flood.messages} messages from {flood.sender} ({flood.platform}) in {minutes} min: "
        f"drafting for them is paused to {policy.fairness.sender_messages_per_minute} per minute. Every message "
        "is kept; a conversation's waiting draft covers all its messages so far."
    )
