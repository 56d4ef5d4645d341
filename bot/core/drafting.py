"""Drafting: run, plan, record, then the card.

The backlog waits in SQL (drafts in ``drafting``); intake and the sweeper hand ids to the pool
(:class:`bot.core.pool.WorkerPool`). A worker takes the draft's lease, builds the prompt from the
conversation's memory, runs the tool loop and the verification pass (run); the pure
:func:`bot.core.outcome.plan` says what the result means (plan); one repository call stores it
in one transaction (record, :func:`bot.store.outcomes.record`); the card is published from the
planned outcome, still under the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from bot import identity, metrics, verification
from bot.agent import AgentLimits, DraftingAgent, DraftResult
from bot.approval import RefundHistory, refund_history
from bot.core import handoff, lifecycle, no_reply
from bot.core.budget import BudgetSpent, DraftBudget
from bot.core.files import FileDownloads
from bot.core.memory import Memory
from bot.core.outcome import DraftRun, conversation_after, draft_text, plan, plan_failed, plan_no_reply, spends
from bot.core.pool import WorkerPool
from bot.core.progress import step_line
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper
from bot.core.spending import Budgets
from bot.core.tasks import Supervisor
from bot.core.translation import Translator
from bot.core.waiting import DraftWaits
from bot.domain.outcome import DraftOutcome, NoReply, Retry
from bot.domain.states import DraftStatus
from bot.errors import (
    DraftingError,
    KimiCircuitOpen,
    KimiContentFiltered,
    KimiError,
    KimiQuotaExhausted,
)
from bot.kimi import Usage
from bot.logs import log_event
from bot.policy import Policy, PolicyStore
from bot.ports import CustomerChannel
from bot.prompt import build_messages
from bot.settings import Settings
from bot.store import Database, outcomes, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store.cards import CardSource, DraftCard
from bot.store.conversations import ConversationState, StoredMessage
from bot.store.drafts import ClaimedDraft
from tools import ToolContext, ToolRegistry

log = logging.getLogger(__name__)


def failure_reason(error: Exception) -> str:
    """What the failed draft's card says."""
    if isinstance(error, KimiQuotaExhausted):
        return f"Kimi's quota for this account is used up; please answer by hand ({error})"
    if isinstance(error, KimiContentFiltered):
        return f"Kimi's content filter refused this conversation; please answer by hand ({error})"
    return str(error)


def _trigger(claimed: ClaimedDraft, turns: list[StoredMessage]) -> StoredMessage | None:
    """The message the draft answers (None when it is not the newest turn read)."""
    return turns[-1] if turns and turns[-1].id == claimed.message_id else None


@dataclass(frozen=True, slots=True)
class Claim:
    """A draft this worker holds the lease of, with what its run needs (read when claiming):
    its conversation, the turns since the summary, the images of the message it answers and
    the tools' context."""

    draft: ClaimedDraft
    conversation: ConversationState
    turns: list[StoredMessage]
    images: list[tuple[str, bytes]]
    ctx: ToolContext
    #: The turn before the one it answers is a customer's that still wants an answer.
    earlier_unanswered: bool = False

    @property
    def trigger(self) -> StoredMessage | None:
        return _trigger(self.draft, self.turns)

    def run(self, spent: list[tuple[str, str, Usage]]) -> DraftRun:
        return DraftRun(
            self.draft, self.conversation, self.trigger, self.ctx, spends(spent), self.earlier_unanswered
        )


class Drafting:
    """Drafting: claim a queued draft, run the model, verify; then plan and record the outcome
    and put its card up. Its :attr:`pool` of workers takes the queued ids."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        policy: PolicyStore,
        agent: DraftingAgent,
        memory: Memory,
        tools: Callable[[Policy], ToolRegistry],
        publisher: CardPublisher,
        leases: LeaseKeeper,
        supervisor: Supervisor,
        channels: dict[str, CustomerChannel],
        counters: Counter[str],
    ) -> None:
        self.settings = settings
        self.db = db
        self.policy = policy
        self.agent = agent
        self.memory = memory
        self.tools = tools
        self.publisher = publisher
        self.leases = leases
        self.supervisor = supervisor
        self.channels = channels
        self.counters = counters
        self.timing = leases.timing
        self.lease = leases.lease
        self.pool = WorkerPool("drafting", supervisor, self.draft)
        self.budgets = Budgets(settings, db, memory.kimi)
        self.waits = DraftWaits(settings, db, publisher, leases)
        self.files = FileDownloads(db, settings.file_download_seconds)
        #: Wakes the dispatcher when a fixed text was queued (the core wires it).
        self.deliver: Callable[[], None] = lambda: None
        #: Translates a card for the desk when the customer writes another language (the core wires it).
        self.translator: Translator | None = None

    async def draft(self, draft_id: str) -> None:
        """Draft ``draft_id`` if nobody live is, and put its card in front of the agents."""
        claim = await self._claim(draft_id)
        if claim is None:
            return
        with self.leases.hold(draft_id):
            try:
                turns, images = await self.files.fetch_pending(claim.draft.message_id, claim.turns, claim.images)
                claim = dataclasses.replace(claim, turns=turns, images=images)
                await self._draft(claim)
            except Exception as exc:  # last resort: a bug fails this draft visibly, not the worker
                metrics.background_failure("drafting")
                log.exception("drafting %s failed unexpectedly", draft_id)
                failure = f"internal error while drafting ({type(exc).__name__})"
                await self._finish_failed(claim.run([]), failure, "")
            finally:
                self.budgets.reservations.release(draft_id)  # its spend is in the usage ledger now

    async def _claim(self, draft_id: str) -> Claim | None:
        """Take the draft's lease and read what its run needs, in one transaction."""
        async with self.db.write() as conn:
            claimed = await draft_rows.claim_drafting(conn, draft_id, self.leases.owner, utcnow(), self.lease)
            if claimed is None:
                return None
            conversation = await conversation_rows.load_conversation(conn, claimed.conversation_id)
            turns = await conversation_rows.turns_since(
                conn, conversation.id, conversation.summary_through, claimed.message_id
            )
            images = (
                await conversation_rows.images_of(conn, claimed.message_id) if turns and turns[-1].attachments else []
            )
            policy = self.policy.current
            trigger = _trigger(claimed, turns)
            asker = await identity.resolve(conn, conversation, policy, trigger.author_id if trigger else "")
        ledger = identity.AttemptLedger(self.db, policy.identity, conversation.id)
        ctx = identity.tool_context(conversation, policy, asker, ledger)
        return Claim(claimed, conversation, turns, images, ctx, no_reply.unanswered_before(turns, policy))

    async def _draft(self, claim: Claim) -> None:
        policy = self.policy.current
        model = policy.models.drafting or self.settings.kimi_model
        spent: list[tuple[str, str, Usage]] = []
        trigger = claim.trigger
        if trigger is not None and not claim.run(spent).must_draft(policy):
            opening = no_reply.opens(claim.turns, summarized=claim.conversation.summary_through > 0)
            rule = no_reply.cheap_rule(trigger.text, opening=opening)
            if rule:
                await self._finish_no_reply(plan_no_reply(claim.run(spent), rule), claim.run(spent))
                return
        stream: CardStream | None = None
        try:
            stream = await self._open_stream(claim)
            result = await self._run(claim, policy, model, spent, stream)
        except KimiCircuitOpen as exc:
            await _close(stream)
            await self.waits.for_the_breaker(claim.draft, exc, spends(spent))
            return
        except BudgetSpent as exc:
            await _close(stream)
            await self.waits.for_the_budget(claim.draft, claim.conversation, exc, spends(spent))
            return
        except (KimiError, DraftingError) as exc:
            await _close(stream)
            self.counters["drafts_failed"] += 1
            if isinstance(exc, KimiQuotaExhausted):
                await self.waits.quota_alert()
            await self._finish_failed(claim.run(spent), failure_reason(exc), model, ref=stream.ref if stream else None)
            return
        except BaseException:
            await _close(stream)  # the caller fails the draft; the forming card stops here
            raise
        await _close(stream)
        await self._finish_ok(claim.run(spent), result, policy, ref=stream.ref if stream else None)

    async def _run(
        self,
        claim: Claim,
        policy: Policy,
        model: str,
        spent: list[tuple[str, str, Usage]],
        stream: CardStream | None,
    ) -> DraftResult:
        """The tool loop over the prompt built from the conversation's memory."""
        conversation = claim.conversation
        summary, prompt_turns = await self.memory.prepare(conversation, claim.turns, claim.images, policy, spent)
        messages = build_messages(
            policy,
            summary=summary,
            facts=conversation.facts,
            fact_notes=conversation.fact_notes,
            turns=prompt_turns,
            today=utcnow().date(),
            instruction=claim.draft.instruction,
            vision=policy.models.vision and await self.memory.kimi.supports_images(model),
        )
        return await self.agent.draft(
            messages,
            model=model,
            fallback_model=self.settings.kimi_fallback_model,
            limits=AgentLimits(
                max_tool_steps=policy.limits.max_tool_steps,
                tool_timeout_seconds=policy.limits.tool_timeout_seconds,
                thinking=policy.models.thinking,
                max_output_tokens=policy.models.max_output_tokens,
            ),
            tools=self.tools(policy),
            on_usage=lambda used_model, usage: spent.append(("drafting", used_model, usage)),
            context=claim.ctx,
            on_delta=stream.delta if stream is not None else None,
            on_step=stream.step if stream is not None else None,
            gate=self._budget(claim, policy),
        )

    def _budget(self, claim: Claim, policy: Policy) -> DraftBudget:
        return self.budgets.for_call(claim.draft.id, claim.conversation, policy)

    async def _open_stream(self, claim: Claim) -> CardStream | None:
        """With ``STREAM_DRAFTS_TO_CARD``, a card that fills in as Kimi streams the draft."""
        if not self.settings.stream_drafts_to_card:
            return None
        claimed = claim.draft
        source = CardSource(
            DraftCard(claimed.id, DraftStatus.DRAFTING, claimed.revision), claim.conversation, claim.trigger
        )
        retried = utcnow() - claimed.created_at > self.lease  # an earlier attempt may have opened it
        ref = await self.publisher.open(source, adopt=retried)
        if ref is None:
            return None
        stream = CardStream(self.publisher, ref, source, self.settings.stream_update_seconds)
        stream.task = self.supervisor.spawn("card-stream", stream.run(), draft=claimed.id)
        return stream

    async def _verify(
        self, conversation: ConversationState, result: DraftResult, ctx: ToolContext, text: str
    ) -> tuple[str, ...]:
        """The verification pass: this run's evidence first (no database), the whole
        conversation's only when that flags something."""
        flags = verification.verify_draft(text, verification.draft_evidence(result, ctx))
        if flags:
            async with self.db.read() as conn:
                evidence = await verification.conversation_evidence(conn, conversation.id, result, ctx)
            flags = verification.verify_draft(text, evidence)
        return flags

    async def _refund_history(self, result: DraftResult, ctx: ToolContext, now: datetime) -> RefundHistory | None:
        """What other refunds stand for, read only when this run proposed one."""
        if not result.proposals:
            return None
        async with self.db.read() as conn:
            return await refund_history(conn, verified_customer_id=ctx.verified_customer_id or "", now=now)

    async def _record(self, claimed: ClaimedDraft, outcome: DraftOutcome, now: datetime) -> outcomes.Recorded:
        async with self.db.write() as conn:
            recorded = await outcomes.record(
                conn, claimed, self.leases.owner, outcome, now, policy_version=self.policy.current.version
            )
            told = False
            escalation = recorded.card.escalation if recorded.card is not None else ""
            # In the same transaction: the conversation becomes a human's, and its hand-off text is
            # queued in the outbox (the dispatcher posts it; a slow platform does not hold up the card).
            if escalation and await lifecycle.on_escalated(conn, claimed.conversation_id, escalation, now):
                told = await handoff.claim(conn, claimed.conversation_id, self.policy.current.desk, now)
        if told:
            self.deliver()
        return recorded

    async def _finish_ok(self, run: DraftRun, result: DraftResult, policy: Policy, *, ref: str | None) -> None:
        """Verify, plan, record; then the card."""
        claimed, conversation = run.claimed, run.conversation
        self.waits.got_through()
        flags = await self._verify(conversation, result, run.ctx, draft_text(result, policy))
        now = utcnow()
        history = await self._refund_history(result, run.ctx, now)
        outcome = plan(run, result, flags, policy, history, now)
        if isinstance(outcome, NoReply):
            await self._finish_no_reply(outcome, run, ref=ref)
            return
        recorded = await self._record(claimed, outcome, now)
        if isinstance(outcome, Retry):
            if recorded.new_draft is not None:
                self.pool.submit(recorded.new_draft)
            if ref is not None:  # the forming card says it was redrafted (the new draft has its own)
                await self._end_forming_card(ref, claimed.id)
            return
        if recorded.card is None:
            await self._end_superseded_card(ref, claimed.id)  # superseded while drafting: a newer draft follows
            return
        self.counters["drafts_ready"] += 1
        metrics.draft_ready(claimed.created_at)
        log_event(
            log,
            "draft_ready",
            conversation=conversation.id,
            draft=claimed.id,
            platform=conversation.thread.platform,
            model=outcome.model,
            tool_calls=len(outcome.tool_calls),
            proposals=len(recorded.card.actions),
            flags=len(outcome.flags),
        )
        conversation_now = lifecycle.escalated(conversation_after(run, outcome), recorded.card.escalation)
        translation = None
        if self.translator is not None and run.trigger is not None:
            translation = await self.translator.for_card(
                conversation_now, claimed.id, run.trigger.text, recorded.card.text, policy
            )
        source = CardSource(recorded.card, conversation_now, run.trigger, translation=translation)
        if await self.publisher.publish(source, recorded.card.version, ref=ref):
            metrics.card_posted(claimed.created_at)
        channel = self.channels.get(conversation.thread.platform)
        if channel is not None:
            self.supervisor.spawn(
                "show-pending", channel.show_pending(conversation.thread), thread=conversation.thread.key
            )

    async def _end_superseded_card(self, ref: str | None, draft_id: str) -> None:
        if ref is not None:  # a streamed card was opened: it says the draft was superseded
            await self.publisher.keep_superseded(ref, draft_id)

    async def _end_forming_card(self, ref: str, draft_id: str) -> None:
        source = await self.publisher.load(draft_id)
        if source is not None:
            await self.publisher.show_progress(ref, source)

    async def _finish_no_reply(self, outcome: NoReply, run: DraftRun, *, ref: str | None = None) -> None:
        """No card, nothing sent: the draft is retired and the conversation resolved by the
        customer (:func:`bot.core.no_reply.on_no_reply`, in the same transaction); counted."""
        claimed, conversation = run.claimed, run.conversation
        now = utcnow()
        shown_on: str | None = None
        async with self.db.write() as conn:
            recorded = await outcomes.record(
                conn, claimed, self.leases.owner, outcome, now, policy_version=self.policy.current.version
            )
            if recorded.card is not None:
                shown_on = await no_reply.on_no_reply(conn, conversation.id, claimed.id, outcome.reason, now)
        if shown_on is not None:  # the conversation's last card shows it resolved
            self.supervisor.spawn("refresh-card", self.publisher.refresh(shown_on), draft=shown_on)
        if recorded.card is None:
            await self._end_superseded_card(ref, claimed.id)  # superseded while drafting: a newer draft follows
            return
        by = no_reply.by_of(outcome.reason)
        self.counters["drafts_no_reply"] += 1
        metrics.no_reply(by)
        log_event(log, "no_reply", conversation=conversation.id, draft=claimed.id, by=by, reason=outcome.reason)
        if ref is not None:  # a streamed card was opened: it says why it ends here
            await self.publisher.publish(
                CardSource(recorded.card, conversation, run.trigger), recorded.card.version, ref=ref
            )

    async def _finish_failed(self, run: DraftRun, failure: str, model: str, *, ref: str | None = None) -> None:
        outcome = plan_failed(run, failure, model, self.policy.current)
        recorded = await self._record(run.claimed, outcome, utcnow())
        if recorded.card is None:
            await self._end_superseded_card(ref, run.claimed.id)
            return
        log.warning("draft %s failed: %s", run.claimed.id, failure)
        source = CardSource(recorded.card, lifecycle.escalated(run.conversation, recorded.card.escalation), run.trigger)
        await self.publisher.publish(source, recorded.card.version, ref=ref)


class CardStream:
    """Pushes the draft as Kimi streams it, and the steps drafting takes (its tool calls), onto
    its open card, at most every ``every`` seconds."""

    def __init__(self, publisher: CardPublisher, ref: str, source: CardSource, every: float) -> None:
        self.publisher = publisher
        self.ref = ref
        self.source = source
        self.every = every
        self.latest = ""
        self.steps: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def delta(self, text_so_far: str) -> None:
        self.latest = text_so_far
        self._changed.set()

    def step(self, name: str, arguments: str) -> None:
        self.steps.append(step_line(name, arguments))
        self._changed.set()

    async def run(self) -> None:
        shown: tuple[str, int] = ("", 0)
        while True:
            await self._changed.wait()
            self._changed.clear()
            if (self.latest, len(self.steps)) != shown:
                shown = (self.latest, len(self.steps))
                text = self.latest + " …" if self.latest else ""
                self.source = replace(self.source, draft=replace(self.source.draft, text=text))
                await self.publisher.show_progress(self.ref, self.source, tuple(self.steps))
            await asyncio.sleep(self.every)


async def _close(stream: CardStream | None) -> None:
    if stream is not None and stream.task is not None:
        stream.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream.task
