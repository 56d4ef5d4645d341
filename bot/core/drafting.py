"""Drafting: a bounded pool of workers turns queued drafts into cards.

The backlog waits in SQL (drafts in ``drafting``); intake and the sweeper hand ids to the pool,
a worker takes the draft's lease, builds the prompt from the conversation's memory, runs the
tool loop, writes the result (draft, tool calls, proposals, usage, audit) in one transaction and
publishes the card from what it holds, still under the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bot import identity, metrics, verification
from bot.agent import AgentLimits, DraftingAgent, DraftResult
from bot.approval import RefundVerdict, check_draft_refunds, facts_from_params, money, verdicts_of
from bot.cards import CardSource, life_of
from bot.core import lifecycle
from bot.core.drafting_text import escalation_reasons, fit
from bot.core.files import FileDownloads, card_lines
from bot.core.memory import Memory, noted
from bot.core.publisher import CardPublisher
from bot.core.recovery import LeaseKeeper
from bot.core.tasks import Supervisor
from bot.domain.states import ActionStatus, ConversationOwner, DraftStatus
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
from bot.ports import CustomerChannel, ToolLookup
from bot.prompt import build_messages
from bot.settings import Settings
from bot.store import Database, new_id, records, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store.conversations import ConversationState, StoredMessage
from bot.store.drafts import ClaimedDraft
from bot.store.records import AuditLine, StoredAction
from bot.store.schema import UsageRecord
from tools import ToolContext, ToolRegistry

log = logging.getLogger(__name__)

ORDER_TOOLS = ("get_order_status", "check_refund_eligibility", "propose_refund")
QUOTA_ALERT_EVERY = 3600.0
COOL_DOWN_DEFAULT = 30.0


def failure_reason(error: Exception) -> str:
    """What the failed draft's card says."""
    if isinstance(error, KimiQuotaExhausted):
        return f"Kimi's quota for this account is used up; please answer by hand ({error})"
    if isinstance(error, KimiContentFiltered):
        return f"Kimi's content filter refused this conversation; please answer by hand ({error})"
    return str(error)


def _order_id(arguments: str) -> str:
    match = re.search(r'"order_id"\s*:\s*"([^"]{1,64})"', arguments)
    return match.group(1) if match else ""


class Drafting:
    """The pool of drafting workers."""

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
        self.lease = leases.lease
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._working = 0
        self._none_working = asyncio.Event()
        self._none_working.set()
        self._winding_down = False
        self._quota_alerted_at: float | None = None
        self.files = FileDownloads(db, settings.file_download_seconds)

    def submit(self, draft_id: str) -> None:
        """Queue a draft (again): a no-op when it is already queued here."""
        if draft_id not in self._queued:
            self._queued.add(draft_id)
            self._queue.put_nowait(draft_id)

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def start(self, workers: int) -> None:
        for number in range(workers):
            self.supervisor.keep_running(f"drafting-worker-{number}", self._work)

    def idle(self) -> bool:
        return not self._queued and self._working == 0

    async def wind_down(self, timeout: float) -> bool:
        """Start no more drafts (the queued ones stay queued in SQL for the next run) and wait up
        to ``timeout`` for those being written; True when none is left."""
        self._winding_down = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_working.wait(), timeout)
        return self._working == 0

    async def _work(self) -> None:
        while True:
            draft_id = await self._queue.get()
            if self._winding_down:
                self._queued.discard(draft_id)
                continue
            self._working += 1
            self._none_working.clear()
            try:
                await self.draft(draft_id)
            except Exception:
                metrics.background_failure("drafting")
                log.exception("drafting %s failed unexpectedly", draft_id)
            finally:
                self._working -= 1
                self._queued.discard(draft_id)
                if self._working == 0:
                    self._none_working.set()

    async def draft(self, draft_id: str) -> None:
        """Draft ``draft_id`` if nobody live is, and put its card in front of the agents."""
        async with self.db.write() as conn:
            claimed = await draft_rows.claim_drafting(conn, draft_id, self.leases.owner, utcnow(), self.lease)
            if claimed is None:
                return
            conversation = await conversation_rows.load_conversation(conn, claimed.conversation_id)
            turns = await conversation_rows.turns_since(
                conn, conversation.id, conversation.summary_through, claimed.message_id
            )
            images = (
                await conversation_rows.images_of(conn, claimed.message_id) if turns and turns[-1].attachments else []
            )
            policy = self.policy.current
            asker = await identity.resolve(conn, conversation, policy, self._author(claimed, turns))
        ctx = identity.tool_context(conversation, policy, asker)
        with self.leases.hold(draft_id):
            try:
                turns, images = await self.files.fetch_pending(claimed.message_id, turns, images)
                await self._draft(claimed, conversation, turns, images, ctx)
            except Exception as exc:
                log.exception("drafting %s failed unexpectedly", draft_id)
                failure = f"internal error while drafting ({type(exc).__name__})"
                await self._finish_failed(claimed, conversation, turns, failure, "", [])

    async def _draft(
        self,
        claimed: ClaimedDraft,
        conversation: ConversationState,
        turns: list[StoredMessage],
        images: list[tuple[str, bytes]],
        ctx: ToolContext,
    ) -> None:
        policy = self.policy.current
        model = policy.models.drafting or self.settings.kimi_model
        spent: list[tuple[str, str, Usage]] = []
        budget = await self._budget_exhausted(policy)
        if budget:
            await self._finish_failed(claimed, conversation, turns, budget, model, spent)
            return
        stream: CardStream | None = None
        try:
            summary, prompt_turns = await self.memory.prepare(conversation, turns, images, policy, spent)
            messages = build_messages(
                policy,
                summary=summary,
                facts=conversation.facts,
                fact_notes=conversation.fact_notes,
                turns=prompt_turns,
                today=utcnow().date(),
                instruction=claimed.instruction,
                vision=policy.models.vision and await self.memory.kimi.supports_images(model),
            )
            stream = await self._open_stream(claimed, conversation, turns)
            result = await self.agent.draft(
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
                context=ctx,
                on_delta=stream.delta if stream is not None else None,
            )
        except KimiCircuitOpen as exc:
            await _close(stream)
            # The model is cooling down and no fallback can take the call: the draft waits in SQL
            # (its lease free again after the cool-down), it does not fail.
            wait = exc.retry_after or COOL_DOWN_DEFAULT
            log.warning("draft %s waits %.0f s: %s", claimed.id, wait, exc)
            now = utcnow()
            async with self.db.write() as conn:
                await records.add_usage(conn, self._usage_rows(conversation.id, claimed.id, spent, now))
                await draft_rows.postpone(conn, claimed.id, self.leases.owner, now + timedelta(seconds=wait))
            return
        except (KimiError, DraftingError) as exc:
            await _close(stream)
            self.counters["drafts_failed"] += 1
            if isinstance(exc, KimiQuotaExhausted):
                await self._quota_alert()
            await self._finish_failed(
                claimed, conversation, turns, failure_reason(exc), model, spent, ref=stream.ref if stream else None
            )
            return
        except BaseException:
            await _close(stream)  # the caller fails the draft; the forming card stops here
            raise
        await _close(stream)
        await self._finish_ok(
            claimed, conversation, turns, result, policy, spent, ctx, ref=stream.ref if stream else None
        )

    async def _budget_exhausted(self, policy: Policy) -> str:
        if policy.limits.daily_budget_usd <= 0:
            return ""
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with self.db.read() as conn:
            spent = await conn.scalar(
                select(func.coalesce(func.sum(UsageRecord.cost_microusd), 0)).where(UsageRecord.created_at >= start)
            )
        if int(spent or 0) >= policy.limits.daily_budget_usd * 1_000_000:
            budget = policy.limits.daily_budget_usd
            return f"the daily model budget ({budget:.2f} USD) is used up; please answer by hand"
        return ""

    @staticmethod
    def _usage_rows(
        conversation_id: str, draft_id: str, spent: list[tuple[str, str, Usage]], now: datetime
    ) -> list[dict[str, Any]]:
        return [
            {
                "conversation_id": conversation_id,
                "draft_id": draft_id,
                "purpose": purpose,
                "model": model,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "cost_microusd": usage.cost_microusd(model),
                "created_at": now,
            }
            for purpose, model, usage in spent
        ]

    async def _open_stream(
        self, claimed: ClaimedDraft, conversation: ConversationState, turns: list[StoredMessage]
    ) -> CardStream | None:
        """With ``STREAM_DRAFTS_TO_CARD``, a card that fills in as Kimi streams the draft."""
        if not self.settings.stream_drafts_to_card:
            return None
        source = self._source(claimed, conversation, turns, status=DraftStatus.DRAFTING)
        retried = utcnow() - claimed.created_at > self.lease  # an earlier attempt may have opened it
        ref = await self.publisher.open(source, adopt=retried)
        if ref is None:
            return None
        stream = CardStream(self.publisher, ref, source, self.settings.stream_update_seconds)
        stream.task = self.supervisor.spawn("card-stream", stream.run(), draft=claimed.id)
        return stream

    @staticmethod
    def _author(claimed: ClaimedDraft, turns: list[StoredMessage]) -> str:
        return turns[-1].author_id if turns and turns[-1].id == claimed.message_id else ""

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

    async def _retry_flagged(
        self,
        claimed: ClaimedDraft,
        conversation: ConversationState,
        result: DraftResult,
        policy: Policy,
        spent: list[tuple[str, str, Usage]],
        ctx: ToolContext,
        flags: tuple[str, ...],
    ) -> None:
        """A first draft the verification pass flagged is superseded by one new draft carrying
        the reason as its instruction; its tool calls stay for the audit trail."""
        now = utcnow()
        async with self.db.write() as conn:
            version = await draft_rows.finish(
                conn,
                claimed.id,
                self.leases.owner,
                DraftStatus.SUPERSEDED,
                {"text": result.text, "notice": ("Regenerated once: " + " ".join(flags))[:900], "updated_at": now},
            )
            await records.add_usage(conn, self._usage_rows(conversation.id, claimed.id, spent, now))
            if version is None:
                await draft_rows.release(conn, claimed.id, self.leases.owner)
                return
            await draft_rows.release(conn, claimed.id, self.leases.owner)
            await records.add_tool_calls(conn, self._tool_call_rows(claimed.id, result, now))
            known = identity.identity_values(conversation, ctx, policy)
            if known:
                await conversation_rows.save_facts(
                    conn, conversation.id, conversation.facts, conversation.failed_drafts, now, known
                )
            fresh = await draft_rows.insert_draft(
                conn,
                conversation.id,
                claimed.message_id,
                now,
                revision=claimed.revision + 1,
                instruction=verification.retry_instruction(flags),
            )
            await records.add_audit(
                conn,
                [AuditLine(conversation.id, claimed.id, "regenerate", "verification", " ".join(flags)[:300])],
                now,
            )
        self.submit(fresh)

    @staticmethod
    def _tool_call_rows(draft_id: str, result: DraftResult, now: datetime) -> list[dict[str, Any]]:
        return [
            {
                "draft_id": draft_id,
                "name": r.name,
                "arguments": r.arguments,
                "result": r.result[:4000],
                "summary": r.summary,
                "error": r.error,
                "duration_ms": r.duration_ms,
                "created_at": now,
            }
            for r in result.tool_calls
        ]

    async def _quota_alert(self) -> None:
        """One alert on the review desk, at most hourly, while Kimi says the quota is used up."""
        now = asyncio.get_running_loop().time()
        if self._quota_alerted_at is not None and now - self._quota_alerted_at < QUOTA_ALERT_EVERY:
            return
        self._quota_alerted_at = now
        await self.publisher.notice(
            ":rotating_light: Kimi says this account's quota is used up: drafts fail (each card says so) "
            "until the balance is topped up. Customers' messages are kept; regenerate their drafts after."
        )

    def _source(
        self, claimed: ClaimedDraft, conversation: ConversationState, turns: list[StoredMessage], **values: Any
    ) -> CardSource:
        trigger = turns[-1] if turns and turns[-1].id == claimed.message_id else None
        life = life_of(conversation)
        escalation = str(values.get("escalation") or "")
        if escalation and life.owner is ConversationOwner.BOT:  # lifecycle.on_escalated moved it
            life = dataclasses.replace(life, owner=ConversationOwner.HUMAN, owner_reason=f"escalated: {escalation}")
        values.setdefault("life", life)
        return CardSource(
            draft_id=claimed.id,
            revision=claimed.revision,
            asked_by=conversation.customer_name or conversation.customer_id,
            where=conversation.location or conversation.thread.key,
            customer_text=trigger.text if trigger else "",
            attachments=card_lines(trigger.attachments if trigger else []),
            **values,
        )

    async def _finish_ok(
        self,
        claimed: ClaimedDraft,
        conversation: ConversationState,
        turns: list[StoredMessage],
        result: DraftResult,
        policy: Policy,
        spent: list[tuple[str, str, Usage]],
        ctx: ToolContext,
        *,
        ref: str | None = None,
    ) -> None:
        text = fit(result.text, policy.limits.max_reply_chars)
        notices = [f"The draft was cut to {policy.limits.max_reply_chars} characters."] if text != result.text else []
        if result.forced_final:
            notices.append(f"Tool use stopped: {result.forced_final}.")
        notices.append(verification.regenerated_notice(claimed.instruction))
        notice = " ".join(n for n in notices if n)
        trigger_text = turns[-1].text if turns else ""
        escalation = "; ".join(r for r in (escalation_reasons(policy, trigger_text, 0), identity.escalation(ctx)) if r)
        checked = await self._verify(conversation, result, ctx, text)
        if verification.may_retry(checked, result, claimed.revision, claimed.instruction):
            await self._retry_flagged(claimed, conversation, result, policy, spent, ctx, checked)
            return
        guard_flags = [*identity.identity_flags(ctx), *checked]
        known = identity.identity_values(conversation, ctx, policy)
        conversation_now = dataclasses.replace(conversation, **known)  # type: ignore[arg-type]
        now = utcnow()
        draft_id = claimed.id
        audit = [
            AuditLine(
                conversation.id,
                draft_id,
                "tool_call",
                "model",
                f"{r.name}({r.arguments[:200]})" + (f" failed: {r.error}" if r.error else f": {r.summary}"),
            )
            for r in result.tool_calls
        ]
        facts = dict(conversation.facts)
        order_ids = set(facts.get("order_ids", []))
        order_ids.update(_order_id(r.arguments) for r in result.tool_calls if r.name in ORDER_TOOLS and not r.error)
        order_ids.discard("")
        if order_ids:
            facts["order_ids"] = sorted(order_ids)
        facts["customer"] = {"id": conversation.customer_id, "name": conversation.customer_name}
        refunds_fact = list(facts.get("refunds", []))
        actions: list[StoredAction] = []
        verdicts: list[RefundVerdict] = []
        if result.proposals:  # THE refund rule over the draft's proposals together
            async with self.db.read() as conn:
                batch = await check_draft_refunds(
                    conn,
                    {str(p.get("order_id")): facts_from_params(p) for p in result.proposals},
                    policy,
                    verified_customer_id=ctx.verified_customer_id or "",
                    refunds=[(p, int(p.get("amount_cents", 0))) for p in result.proposals],
                    now=now,
                )
            verdicts = verdicts_of(batch)
        for proposal, verdict in zip(result.proposals, verdicts, strict=True):
            amount = int(proposal.get("amount_cents", 0))
            action_id = new_id()
            actions.append(
                StoredAction(
                    id=action_id,
                    draft_id=draft_id,
                    kind=str(proposal.get("kind", "refund")),
                    params=proposal,
                    status=ActionStatus.PROPOSED if verdict.allowed else ActionStatus.REFUSED,
                    allowed=verdict.allowed,
                    verdict=verdict.describe(),
                    approvals=[],
                    idempotency_key=f"refund-{action_id}",
                    result={},
                )
            )
            refunds_fact.append(
                {
                    "order_id": proposal.get("order_id"),
                    "amount": money(amount),
                    "status": "proposed" if verdict.allowed else "refused by policy",
                }
            )
            audit.append(
                AuditLine(
                    conversation.id,
                    draft_id,
                    "proposal",
                    "model",
                    f"refund {money(amount)} on {proposal.get('order_id')}: {verdict.describe()}",
                )
            )
        if refunds_fact:
            facts["refunds"] = refunds_fact[-10:]
        audit.append(AuditLine(conversation.id, draft_id, "draft", "model", text[:200]))
        async with self.db.write() as conn:
            version = await draft_rows.finish(
                conn,
                draft_id,
                self.leases.owner,
                DraftStatus.AWAITING_REVIEW,
                {
                    "text": text,
                    "model": result.model,
                    "notice": notice,
                    "escalation": escalation,
                    "prompt_tokens": result.usage.prompt_tokens,
                    "completion_tokens": result.usage.completion_tokens,
                    "cached_tokens": result.usage.cached_tokens,
                    "cost_microusd": result.usage.cost_microusd(result.model),
                    "guard_flags": guard_flags,
                    "updated_at": now,
                },
            )
            await records.add_usage(conn, self._usage_rows(conversation.id, draft_id, spent, now))
            if version is None:
                await draft_rows.release(conn, draft_id, self.leases.owner)
                return  # superseded while drafting: a newer draft follows
            if escalation:
                await lifecycle.on_escalated(conn, conversation.id, escalation, now)
            await records.add_tool_calls(conn, self._tool_call_rows(draft_id, result, now))
            await records.add_actions(
                conn,
                [
                    {
                        "id": a.id,
                        "draft_id": a.draft_id,
                        "kind": a.kind,
                        "params": a.params,
                        "status": a.status,
                        "allowed": a.allowed,
                        "verdict": a.verdict,
                        "approvals": [],
                        "idempotency_key": a.idempotency_key,
                        "result": {},
                        "created_at": now,
                    }
                    for a in actions
                ],
            )
            if facts != conversation.facts or conversation.failed_drafts or known:
                notes = None
                if facts != conversation.facts:
                    notes = noted(conversation.fact_notes, claimed.message_id, facts, conversation.summary_through)
                await conversation_rows.save_facts(conn, conversation.id, facts, 0, now, known, notes)
            await records.add_audit(conn, audit, now)
        self.counters["drafts_ready"] += 1
        metrics.draft_ready(claimed.created_at)
        log_event(
            log,
            "draft_ready",
            conversation=conversation.id,
            draft=draft_id,
            platform=conversation.thread.platform,
            model=result.model,
            tool_calls=len(result.tool_calls),
            proposals=len(actions),
            flags=len(guard_flags),
        )
        source = self._source(
            claimed,
            conversation,
            turns,
            status=DraftStatus.AWAITING_REVIEW,
            text=text,
            model=result.model,
            notice=notice,
            escalation=escalation,
            lookups=tuple(ToolLookup(r.name, r.summary, ok=not r.error) for r in result.tool_calls),
            actions=actions,
            identity=identity.card_line(conversation_now, self._author(claimed, turns)),
            flags=tuple(guard_flags),
        )
        if await self.publisher.publish(source, version, ref=ref):
            metrics.card_posted(claimed.created_at)
        channel = self.channels.get(conversation.thread.platform)
        if channel is not None:
            self.supervisor.spawn(
                "show-pending", channel.show_pending(conversation.thread), thread=conversation.thread.key
            )

    async def _finish_failed(
        self,
        claimed: ClaimedDraft,
        conversation: ConversationState,
        turns: list[StoredMessage],
        failure: str,
        model: str,
        spent: list[tuple[str, str, Usage]],
        *,
        ref: str | None = None,
    ) -> None:
        policy = self.policy.current
        failed = conversation.failed_drafts + 1
        trigger_text = turns[-1].text if turns else ""
        escalation = escalation_reasons(policy, trigger_text, failed)
        now = utcnow()
        async with self.db.write() as conn:
            version = await draft_rows.finish(
                conn,
                claimed.id,
                self.leases.owner,
                DraftStatus.FAILED,
                {"failure": failure[:1000], "model": model, "escalation": escalation, "updated_at": now},
            )
            await records.add_usage(conn, self._usage_rows(conversation.id, claimed.id, spent, now))
            if version is None:
                await draft_rows.release(conn, claimed.id, self.leases.owner)
                return
            if escalation:
                await lifecycle.on_escalated(conn, conversation.id, escalation, now)
            await conversation_rows.save_facts(conn, conversation.id, conversation.facts, failed, now)
            await records.add_audit(
                conn, [AuditLine(conversation.id, claimed.id, "draft_failed", "model", failure[:300])], now
            )
        log.warning("draft %s failed: %s", claimed.id, failure)
        source = self._source(
            claimed,
            conversation,
            turns,
            status=DraftStatus.FAILED,
            failure=failure[:1000],
            model=model,
            escalation=escalation,
        )
        await self.publisher.publish(source, version, ref=ref)


LEASE_DEFAULT = timedelta(seconds=10)


class CardStream:
    """Pushes the draft as Kimi streams it onto its open card, at most every ``every`` seconds."""

    def __init__(self, publisher: CardPublisher, ref: str, source: CardSource, every: float) -> None:
        self.publisher = publisher
        self.ref = ref
        self.source = source
        self.every = every
        self.latest = ""
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def delta(self, text_so_far: str) -> None:
        self.latest = text_so_far
        self._changed.set()

    async def run(self) -> None:
        shown = ""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self.latest != shown:
                shown = self.latest
                self.source.text = shown + " …"
                await self.publisher.show_progress(self.ref, self.source)
            await asyncio.sleep(self.every)


async def _close(stream: CardStream | None) -> None:
    if stream is not None and stream.task is not None:
        stream.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream.task
