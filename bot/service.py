"""The copilot core: receive customer messages, draft, put cards in front of agents, apply
their decisions, and hand approved replies to the outbox.

Every step is a row in SQL, committed before the next step starts, so a restart resumes where
it stopped: drafts left half-done are drafted again, cards that never reached the desk are
posted, and the outbox dispatcher (:mod:`bot.dispatcher`) posts what was approved.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.agent import AgentLimits, DraftingAgent, DraftResult
from bot.approval import check_refund, is_manager, may_approve, money, parse_amount
from bot.db_util import insert_ignore
from bot.errors import DraftingError, KimiError, PolicyError
from bot.events import DecisionAction, InboundMessage, MessageKind, ReviewDecision, ThreadRef
from bot.kimi import KimiClient, Usage
from bot.policy import Policy, PolicyStore
from bot.ports import (
    CardState,
    CustomerChannel,
    DecisionOutcome,
    EditForm,
    ProposalView,
    ReviewCard,
    ReviewDesk,
    ToolLookup,
)
from bot.prompt import Turn, build_messages, summary_messages
from bot.settings import Settings
from bot.store import (
    Attachment,
    Conversation,
    Decision,
    Draft,
    Message,
    OutboxItem,
    ProcessedEvent,
    ProposedAction,
    ToolCall,
    UsageRecord,
    audit,
    new_id,
    reader_engine,
    sessionmaker,
    utcnow,
)
from tools import RefundRules, ToolContext, ToolRegistry
from tools.orders import OrderBackend

log = logging.getLogger(__name__)

OPEN_STATES = ("drafting", "awaiting_review")
ORDER_TOOLS = ("get_order_status", "check_refund_eligibility", "propose_refund")
METRICS = (
    "events_received",
    "events_duplicate",
    "messages_ignored_unwatched",
    "drafts_ready",
    "drafts_failed",
    "summaries",
    "cards_posted",
    "replies_sent",
    "sends_failed",
    "refunds_executed",
)
MAX_CUSTOMER_TEXT = 20_000
MAX_SUMMARY_CHARS = 1200
CARD_CLAIM = "posting:"
CARD_CLAIM_LEASE = timedelta(seconds=60)


class Copilot:
    """The core. Adapters call :meth:`receive`, :meth:`has_conversation`, :meth:`decide` and
    :meth:`edit_form`; everything else is internal."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        policy: PolicyStore,
        kimi: KimiClient,
        orders: OrderBackend,
        tools: Callable[[Policy], ToolRegistry],
        read_engine: AsyncEngine | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessionmaker(engine)
        self.read_engine = read_engine or reader_engine(engine)
        self.reads = sessionmaker(self.read_engine)
        self.policy = policy
        self.kimi = kimi
        self.orders = orders
        self.agent = DraftingAgent(kimi)
        self._build_tools = tools
        self._tools: tuple[Policy, ToolRegistry] | None = None
        self.channels: dict[str, CustomerChannel] = {}
        self.desks: dict[str, ReviewDesk] = {}
        self.desk: ReviewDesk | None = None
        self.metrics: Counter[str] = Counter(dict.fromkeys(METRICS, 0))
        self.outbox_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- wiring ---------------------------------------------------------------------------

    def add_channel(self, channel: CustomerChannel) -> None:
        self.channels[channel.platform] = channel

    def add_desk(self, desk: ReviewDesk, *, preferred: bool = False) -> None:
        """Register a review desk; the preferred one (or the first) receives new cards."""
        self.desks[desk.name] = desk
        if preferred or self.desk is None:
            self.desk = desk

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for background drafting to finish (used at shutdown and by tests)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))

    async def cancel_background(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tools_for(self, policy: Policy) -> ToolRegistry:
        """The tools for a policy, rebuilt when a reload changed it (e.g. new knowledge files)."""
        if self._tools is None or self._tools[0] is not policy:
            self._tools = (policy, self._build_tools(policy))
        return self._tools[1]

    # -- the Core surface -----------------------------------------------------------------

    async def receive(self, message: InboundMessage) -> bool:
        policy = self.policy.current
        watch = policy.channels.watch
        if watch and message.kind is not MessageKind.DIRECT and message.thread.channel not in watch:
            self.metrics["messages_ignored_unwatched"] += 1
            return False
        text = message.text[:MAX_CUSTOMER_TEXT]
        superseded: list[str] = []
        async with self.sessions.begin() as session:
            fresh = await insert_ignore(
                session, ProcessedEvent, {"event_id": message.event_id, "received_at": utcnow()}
            )
            if not fresh:
                self.metrics["events_duplicate"] += 1
                return False
            conversation = await self._conversation_for(session, message)
            row = Message(
                conversation_id=conversation.id,
                role="customer",
                platform_message_id=message.message_id,
                author_id=message.author.id,
                author_name=message.author.display_name,
                text=text,
                attachments=[
                    {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                    for a in message.attachments
                ],
                created_at=message.sent_at if message.sent_at.tzinfo else utcnow(),
            )
            session.add(row)
            await session.flush()
            for attachment in message.attachments:
                if attachment.is_image and attachment.data:
                    session.add(
                        Attachment(
                            message_id=row.id,
                            filename=attachment.filename,
                            content_type=attachment.content_type,
                            data=attachment.data,
                        )
                    )
            superseded = await self._supersede_open_drafts(session, conversation.id, "a newer customer message")
            draft = Draft(conversation_id=conversation.id, message_id=row.id, status="drafting")
            session.add(draft)
            audit(session, conversation.id, None, "message", message.author.id, f"customer wrote: {text[:200]}")
            await session.flush()
            draft_id = draft.id
        self.metrics["events_received"] += 1
        for old in superseded:
            self.spawn(self.refresh_card(old))
        self.spawn(self.produce_draft(draft_id))
        return True

    async def has_conversation(self, thread: ThreadRef) -> bool:
        async with self.reads() as session:
            found = await session.scalar(select(Conversation.id).where(Conversation.thread_key == thread.key))
        return found is not None

    async def edit_form(self, draft_id: str) -> EditForm | None:
        async with self.reads() as session:
            draft = await session.get(Draft, draft_id)
            if draft is None:
                return None
            refunds = await self._refunds(session, draft_id)
        allowed = [a for a in refunds if a.allowed]
        amount = money(int(allowed[0].params["amount_cents"])) if len(allowed) == 1 else None
        return EditForm(draft_id=draft_id, text=draft.edited_text or draft.text, refund_amount=amount)

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        policy = self.policy.current
        actor = decision.actor
        name = actor.display_name or actor.id
        if not may_approve(actor, policy):
            return await self._refuse(decision, "You are not on the policy's approver list for drafts.")
        async with self.sessions.begin() as session:
            draft = await session.scalar(select(Draft).where(Draft.id == decision.draft_id).with_for_update())
            if draft is None:
                return DecisionOutcome(False, "This draft does not exist (any more).")
            if draft.status != "awaiting_review":
                message = self._already(draft)
                self._record_decision(session, decision, draft.conversation_id, accepted=False, message=message)
                return DecisionOutcome(False, message)
            if decision.action is DecisionAction.REJECT:
                outcome = await self._reject(session, draft, decision)
            elif decision.action is DecisionAction.REGENERATE:
                outcome = await self._regenerate(session, draft, decision)
            else:
                outcome = await self._approve(session, draft, decision, policy)
            self._record_decision(
                session, decision, draft.conversation_id, accepted=outcome.ok, message=outcome.message
            )
        log.info("decision %s on draft %s by %s: %s", decision.action, decision.draft_id, name, outcome.message)
        if "new_draft" in session.info:
            self.spawn(self.produce_draft(session.info["new_draft"]))
        self.spawn(self.refresh_card(decision.draft_id))
        if outcome.ok and decision.action in (DecisionAction.APPROVE, DecisionAction.EDIT):
            self.outbox_ready.set()
        return outcome

    # -- decisions ------------------------------------------------------------------------

    async def _refuse(self, decision: ReviewDecision, message: str) -> DecisionOutcome:
        async with self.sessions.begin() as session:
            conversation_id = await session.scalar(select(Draft.conversation_id).where(Draft.id == decision.draft_id))
            self._record_decision(session, decision, conversation_id, accepted=False, message=message)
        return DecisionOutcome(False, message)

    @staticmethod
    def _already(draft: Draft) -> str:
        verbs = {
            "approved": "approved",
            "edited": "edited and approved",
            "sent": "approved and sent",
            "rejected": "rejected",
            "superseded": "superseded",
            "failed": "marked failed",
            "drafting": "still being drafted",
            "send_failed": "approved, but sending failed",
        }
        verb = verbs.get(draft.status, draft.status)
        who = f" by {draft.decided_by}" if draft.decided_by else ""
        return f"This draft was already {verb}{who}."

    async def _transition(self, session: AsyncSession, draft: Draft, status: str, decision: ReviewDecision) -> bool:
        """The compare-and-set: only an ``awaiting_review`` draft changes, exactly once."""
        now = utcnow()
        result = await session.execute(
            update(Draft)
            .where(Draft.id == draft.id, Draft.status == "awaiting_review")
            .values(
                status=status,
                decided_by=decision.actor.display_name or decision.actor.id,
                decided_by_id=decision.actor.id,
                decided_at=now,
                updated_at=now,
            )
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def _reject(self, session: AsyncSession, draft: Draft, decision: ReviewDecision) -> DecisionOutcome:
        if not await self._transition(session, draft, "rejected", decision):
            return DecisionOutcome(False, self._already(draft))
        await session.execute(
            update(ProposedAction)
            .where(ProposedAction.draft_id == draft.id, ProposedAction.status == "proposed")
            .values(status="rejected")
        )
        audit(
            session,
            draft.conversation_id,
            draft.id,
            "reject",
            decision.actor.id,
            decision.reason or "rejected",
        )
        return DecisionOutcome(True, "Rejected; nothing was sent.")

    async def _regenerate(self, session: AsyncSession, draft: Draft, decision: ReviewDecision) -> DecisionOutcome:
        if not await self._transition(session, draft, "superseded", decision):
            return DecisionOutcome(False, self._already(draft))
        who = decision.actor.display_name or decision.actor.id
        await session.execute(update(Draft).where(Draft.id == draft.id).values(notice=f"Regenerated by {who}"))
        await session.execute(
            update(ProposedAction)
            .where(ProposedAction.draft_id == draft.id, ProposedAction.status == "proposed")
            .values(status="superseded")
        )
        fresh = Draft(
            conversation_id=draft.conversation_id,
            message_id=draft.message_id,
            status="drafting",
            revision=draft.revision + 1,
            instruction=(decision.instruction or "").strip()[:500] or None,
        )
        session.add(fresh)
        await session.flush()
        audit(
            session,
            draft.conversation_id,
            draft.id,
            "regenerate",
            decision.actor.id,
            decision.instruction or "",
        )
        session.info["new_draft"] = fresh.id  # drafted once this transaction has committed
        return DecisionOutcome(True, "A new draft is on its way.")

    async def _approve(
        self, session: AsyncSession, draft: Draft, decision: ReviewDecision, policy: Policy
    ) -> DecisionOutcome:
        actor = decision.actor
        text = draft.edited_text or draft.text  # a first approver's edit stands until changed
        if decision.action is DecisionAction.EDIT:
            text = (decision.edited_text or "").strip()
            if not text:
                return DecisionOutcome(False, "The edited reply is empty; nothing was sent.")
            if len(text) > policy.limits.max_reply_chars:
                return DecisionOutcome(
                    False, f"The edited reply is longer than {policy.limits.max_reply_chars} characters."
                )
        refunds = [a for a in await self._refunds(session, draft.id) if a.status == "proposed" and a.allowed]
        edited_amount: int | None = None
        if decision.refund_amount not in (None, ""):
            edited_amount = parse_amount(decision.refund_amount or "")
            if edited_amount is None:
                return DecisionOutcome(False, f"{decision.refund_amount!r} is not an amount.")
            if len(refunds) != 1:
                return DecisionOutcome(False, "There is no single refund proposal whose amount could be edited.")
        pending_second: list[ProposedAction] = []
        for action in refunds:
            earlier = action.params.get("approved_amount_cents")
            amount = edited_amount if edited_amount is not None else int(earlier or action.params["amount_cents"])
            verdict = check_refund(action.params, amount, policy, utcnow())
            if not verdict.allowed:
                message = f"Refused: the refund {verdict.reason}. Nothing was sent."
                return DecisionOutcome(False, message)
            if verdict.needs_manager and not is_manager(actor, policy):
                message = f"Refused: a refund of {money(amount)} needs a manager's approval."
                return DecisionOutcome(False, message)
            if verdict.needs_two_approvers:
                # Both approvals must be for the same amount: a changed amount starts over.
                approvers = [str(a) for a in action.approvals] if earlier in (None, amount) else []
                if actor.id in approvers:
                    return DecisionOutcome(False, "You already approved this refund; a different approver is needed.")
                if not approvers:
                    pending_second.append(action)
            action.params = {**action.params, "approved_amount_cents": amount}
        if pending_second:
            for action in pending_second:
                action.approvals = [actor.id]
            if decision.action is DecisionAction.EDIT:
                draft.edited_text = text
            draft.updated_at = utcnow()
            audit(session, draft.conversation_id, draft.id, "approval", actor.id, "first of two approvals")
            return DecisionOutcome(
                True, "Your approval is recorded; a second approver is needed before anything is sent."
            )
        status = "edited" if decision.action is DecisionAction.EDIT or draft.edited_text else "approved"
        if not await self._transition(session, draft, status, decision):
            return DecisionOutcome(False, self._already(draft))
        if decision.action is DecisionAction.EDIT:
            await session.execute(update(Draft).where(Draft.id == draft.id).values(edited_text=text))
        for action in refunds:
            action.status = "approved"
            action.approvals = [*action.approvals, actor.id]
        conversation = await session.get(Conversation, draft.conversation_id)
        assert conversation is not None
        session.add(OutboxItem(draft_id=draft.id, thread_key=conversation.thread_key, text=text))
        audit(session, draft.conversation_id, draft.id, status, actor.id, text[:200])
        return DecisionOutcome(
            True,
            "Approved; the reply is on its way." if not refunds else "Approved; refund and reply are on their way.",
        )

    def _record_decision(
        self,
        session: AsyncSession,
        decision: ReviewDecision,
        conversation_id: str | None,
        *,
        accepted: bool,
        message: str,
    ) -> None:
        """Every click is kept; refused ones also go to the audit trail (accepted ones leave
        their own state-change lines there)."""
        if not accepted and conversation_id is not None:
            actor = decision.actor.display_name or decision.actor.id
            audit(session, conversation_id, decision.draft_id, f"{decision.action}_refused", actor, message)
        session.add(
            Decision(
                draft_id=decision.draft_id,
                action=str(decision.action),
                actor_platform=decision.actor.platform,
                actor_id=decision.actor.id,
                actor_name=decision.actor.display_name,
                accepted=accepted,
                message=message,
            )
        )

    # -- drafting -------------------------------------------------------------------------

    async def _conversation_for(self, session: AsyncSession, message: InboundMessage) -> Conversation:
        thread = message.thread
        await insert_ignore(
            session,
            Conversation,
            {
                "id": new_id(),
                "thread_key": thread.key,
                "platform": thread.platform,
                "workspace": thread.workspace,
                "channel": thread.channel,
                "thread": thread.thread,
                "location": message.location,
                "customer_id": message.author.id,
                "customer_name": message.author.display_name,
                "summary": "",
                "summary_through": 0,
                "facts": {},
                "failed_drafts": 0,
                "created_at": utcnow(),
                "updated_at": utcnow(),
            },
        )
        conversation = await session.scalar(select(Conversation).where(Conversation.thread_key == thread.key))
        assert conversation is not None
        return conversation

    async def _supersede_open_drafts(self, session: AsyncSession, conversation_id: str, why: str) -> list[str]:
        ids = list(
            await session.scalars(
                select(Draft.id).where(Draft.conversation_id == conversation_id, Draft.status.in_(OPEN_STATES))
            )
        )
        if ids:
            await session.execute(
                update(Draft)
                .where(Draft.id.in_(ids), Draft.status.in_(OPEN_STATES))
                .values(
                    status="superseded",
                    notice=f"Superseded by {why}; a fresh draft follows.",
                    updated_at=utcnow(),
                )
            )
            await session.execute(
                update(ProposedAction)
                .where(ProposedAction.draft_id.in_(ids), ProposedAction.status == "proposed")
                .values(status="superseded")
            )
        return ids

    async def produce_draft(self, draft_id: str) -> None:
        """Draft a reply for ``draft_id`` and put its card in front of the agents."""
        try:
            await self._produce_draft(draft_id)
        except Exception:
            log.exception("drafting %s failed unexpectedly", draft_id)
            await self._finish_failed(draft_id, "internal error while drafting", "")

    async def _produce_draft(self, draft_id: str) -> None:
        policy = self.policy.current
        async with self.reads() as session:
            draft = await session.get(Draft, draft_id)
            if draft is None or draft.status != "drafting":
                return
            conversation = await session.get(Conversation, draft.conversation_id)
            assert conversation is not None
            trigger = await session.get(Message, draft.message_id)
            assert trigger is not None
        model = policy.models.drafting or self.settings.kimi_model
        budget = await self._budget_exhausted(policy)
        if budget:
            await self._finish_failed(draft_id, budget, model)
            return
        spent: list[tuple[str, str, Usage]] = []  # (purpose, model, usage) of every model call
        try:
            summary, facts, turns, summary_usage = await self._memory(conversation, policy, draft.message_id)
            if summary_usage is not None:
                spent.append(("summarizing", *summary_usage))
            messages = build_messages(
                policy,
                summary=summary,
                facts=facts,
                turns=turns,
                today=utcnow().date(),
                instruction=draft.instruction,
                vision=policy.models.vision,
            )
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
                tools=self.tools_for(policy),
                on_usage=lambda used_model, usage: spent.append(("drafting", used_model, usage)),
                context=ToolContext(
                    conversation_id=conversation.id,
                    refund_rules=RefundRules(
                        window_days=policy.refunds.window_days,
                        max_amount_cents=policy.refunds.max_amount,
                        refundable_statuses=policy.refunds.refundable_statuses,
                    ),
                ),
            )
        except (KimiError, DraftingError) as exc:
            self.metrics["drafts_failed"] += 1
            await self._record_usage(conversation.id, draft_id, spent)
            await self._finish_failed(draft_id, str(exc), model)
            return
        await self._record_usage(conversation.id, draft_id, spent)
        await self._finish_ok(draft_id, conversation, trigger, result, policy)

    async def _memory(
        self, conversation: Conversation, policy: Policy, upto_message_id: int
    ) -> tuple[str, dict[str, Any], list[Turn], tuple[str, Usage] | None]:
        """The summary, facts and verbatim turns for a prompt; folds older turns into the
        summary in a batch once ``summarize_after_turns`` unsummarised turns piled up."""
        async with self.reads() as session:
            rows = list(
                await session.scalars(
                    select(Message)
                    .where(
                        Message.conversation_id == conversation.id,
                        Message.id > conversation.summary_through,
                        Message.id <= upto_message_id,
                    )
                    .order_by(Message.id)
                )
            )
            images = list(await session.scalars(select(Attachment).where(Attachment.message_id == upto_message_id)))
        summary = conversation.summary
        usage: tuple[str, Usage] | None = None
        keep = policy.memory.keep_recent_turns
        if len(rows) >= policy.memory.summarize_after_turns:
            fold, rows = rows[:-keep], rows[-keep:]
            model = policy.models.summarizing or self.settings.kimi_model
            completion = await self.kimi.chat(
                model=model,
                messages=summary_messages(summary, [Turn(r.role, r.text) for r in fold]),
                thinking=False if model.startswith("kimi-k2.") else None,
                max_tokens=400,
            )
            summary = _fit(completion.content.strip(), MAX_SUMMARY_CHARS) or summary
            usage = (completion.model or model, completion.usage)
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation.id)
                    .values(summary=summary, summary_through=fold[-1].id, updated_at=utcnow())
                )
            self.metrics["summaries"] += 1
        turns = [
            Turn(
                role=r.role,
                text=r.text,
                images=tuple((a.content_type, a.data) for a in images) if r.id == upto_message_id else (),
            )
            for r in rows
        ]
        return summary, dict(conversation.facts or {}), turns, usage

    async def _budget_exhausted(self, policy: Policy) -> str:
        if policy.limits.daily_budget_usd <= 0:
            return ""
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with self.reads() as session:
            spent = await session.scalar(
                select(func.coalesce(func.sum(UsageRecord.cost_microusd), 0)).where(UsageRecord.created_at >= start)
            )
        if int(spent or 0) >= policy.limits.daily_budget_usd * 1_000_000:
            return (
                f"the daily model budget ({policy.limits.daily_budget_usd:.2f} USD) is used up; please answer by hand"
            )
        return ""

    async def _record_usage(
        self, conversation_id: str, draft_id: str | None, spent: list[tuple[str, str, Usage]]
    ) -> None:
        """One ledger row per model call, successful drafts or not."""
        if not spent:
            return
        async with self.sessions.begin() as session:
            session.add_all(
                UsageRecord(
                    conversation_id=conversation_id,
                    draft_id=draft_id,
                    purpose=purpose,
                    model=model,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cached_tokens=usage.cached_tokens,
                    cost_microusd=usage.cost_microusd(model),
                )
                for purpose, model, usage in spent
            )

    def _escalation(self, policy: Policy, text: str, failed_drafts: int) -> str:
        rules = policy.escalation
        lowered = text.lower()
        reasons = [f"keyword {k!r}" for k in rules.keywords if k.lower() in lowered]
        if any(p.lower() in lowered for p in rules.human_request_phrases):
            reasons.append("the customer asks for a human")
        if failed_drafts >= rules.max_failed_drafts:
            reasons.append(f"{failed_drafts} failed drafts in a row")
        return "; ".join(reasons)

    async def _finish_ok(
        self, draft_id: str, conversation: Conversation, trigger: Message, result: DraftResult, policy: Policy
    ) -> None:
        text = _fit(result.text, policy.limits.max_reply_chars)
        notice = f"The draft was cut to {policy.limits.max_reply_chars} characters." if text != result.text else ""
        if result.forced_final:
            notice = (notice + " " if notice else "") + f"Tool use stopped: {result.forced_final}."
        escalation = self._escalation(policy, trigger.text, 0)
        now = utcnow()
        async with self.sessions.begin() as session:
            changed = await session.execute(
                update(Draft)
                .where(Draft.id == draft_id, Draft.status == "drafting")
                .values(
                    status="awaiting_review",
                    text=text,
                    model=result.model,
                    notice=notice,
                    escalation=escalation,
                    prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens,
                    cached_tokens=result.usage.cached_tokens,
                    cost_microusd=result.usage.cost_microusd(result.model),
                    updated_at=now,
                )
            )
            if getattr(changed, "rowcount", 0) != 1:
                return  # superseded while drafting: a newer draft follows
            for record in result.tool_calls:
                session.add(
                    ToolCall(
                        draft_id=draft_id,
                        name=record.name,
                        arguments=record.arguments,
                        result=record.result[:4000],
                        summary=record.summary,
                        error=record.error,
                        duration_ms=record.duration_ms,
                    )
                )
                audit(
                    session,
                    conversation.id,
                    draft_id,
                    "tool_call",
                    "model",
                    f"{record.name}({record.arguments[:200]})"
                    + (f" failed: {record.error}" if record.error else f": {record.summary}"),
                )
            facts = dict(conversation.facts or {})
            order_ids = set(facts.get("order_ids", []))
            for record in result.tool_calls:
                if record.name in ORDER_TOOLS and not record.error:
                    order_id = _order_id(record.arguments)
                    if order_id:
                        order_ids.add(order_id)
            if order_ids:
                facts["order_ids"] = sorted(order_ids)
            facts["customer"] = {"id": conversation.customer_id, "name": conversation.customer_name}
            refunds_fact = list(facts.get("refunds", []))
            for proposal in result.proposals:
                amount = int(proposal.get("amount_cents", 0))
                verdict = check_refund(proposal, amount, policy, now)
                action_id = new_id()
                session.add(
                    ProposedAction(
                        id=action_id,
                        draft_id=draft_id,
                        kind=str(proposal.get("kind", "refund")),
                        params=proposal,
                        status="proposed" if verdict.allowed else "refused",
                        allowed=verdict.allowed,
                        verdict=verdict.describe(),
                        idempotency_key=f"refund-{action_id}",
                    )
                )
                refunds_fact.append(
                    {
                        "order_id": proposal.get("order_id"),
                        "amount": money(amount),
                        "status": "proposed" if verdict.allowed else "refused by policy",
                    }
                )
                audit(
                    session,
                    conversation.id,
                    draft_id,
                    "proposal",
                    "model",
                    f"refund {money(amount)} on {proposal.get('order_id')}: {verdict.describe()}",
                )
            if refunds_fact:
                facts["refunds"] = refunds_fact[-10:]
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation.id)
                .values(facts=facts, failed_drafts=0, updated_at=now)
            )
            audit(session, conversation.id, draft_id, "draft", "model", text[:200])
        self.metrics["drafts_ready"] += 1
        await self.post_card(draft_id)
        channel = self.channels.get(conversation.platform)
        if channel is not None:
            try:
                await channel.show_pending(conversation.thread_ref)
            except Exception:
                log.warning("could not show the pending indicator in %s", conversation.thread_key)

    async def _finish_failed(self, draft_id: str, failure: str, model: str) -> None:
        policy = self.policy.current
        async with self.sessions.begin() as session:
            draft = await session.get(Draft, draft_id)
            if draft is None or draft.status != "drafting":
                return
            conversation = await session.get(Conversation, draft.conversation_id)
            assert conversation is not None
            trigger = await session.get(Message, draft.message_id)
            failed = conversation.failed_drafts + 1
            conversation.failed_drafts = failed
            draft.status = "failed"
            draft.failure = failure[:1000]
            draft.model = model
            draft.escalation = self._escalation(policy, trigger.text if trigger else "", failed)
            draft.updated_at = utcnow()
            audit(session, draft.conversation_id, draft_id, "draft_failed", "model", failure[:300])
        log.warning("draft %s failed: %s", draft_id, failure)
        await self.post_card(draft_id)

    # -- cards ----------------------------------------------------------------------------

    async def build_card(self, draft_id: str) -> tuple[ReviewCard, Draft] | None:
        async with self.reads() as session:
            draft = await session.get(Draft, draft_id)
            if draft is None:
                return None
            conversation = await session.get(Conversation, draft.conversation_id)
            trigger = await session.get(Message, draft.message_id)
            calls = list(
                await session.scalars(select(ToolCall).where(ToolCall.draft_id == draft_id).order_by(ToolCall.id))
            )
            actions = await self._refunds(session, draft_id)
            outbox = await session.scalar(select(OutboxItem).where(OutboxItem.draft_id == draft_id))
            two_approvers_pending = any(a.approvals and a.status == "proposed" for a in actions)
        assert conversation is not None and trigger is not None
        policy = self.policy.current
        notice = draft.notice
        if two_approvers_pending and draft.status == "awaiting_review":
            notice = (notice + " " if notice else "") + "One approval recorded; a second approver is needed."
        if outbox is not None and outbox.status == "failed":
            notice = (
                notice + " " if notice else ""
            ) + f"Sending failed: {outbox.last_error}. Nothing was sent to the customer."
        desk = self.desks.get(draft.card_desk) or self.desk
        on_call = ""
        if draft.escalation and desk is not None:
            on_call = policy.escalation.on_call_slack if desk.name == "slack" else policy.escalation.on_call_discord
        card = ReviewCard(
            draft_id=draft.id,
            state=CardState(draft.status) if draft.status in CardState._value2member_map_ else CardState.FAILED,
            asked_by=conversation.customer_name or conversation.customer_id,
            where=conversation.location or conversation.thread_key,
            customer_text=trigger.text,
            draft_text=draft.edited_text or draft.text,
            revision=draft.revision,
            model=draft.model,
            lookups=tuple(ToolLookup(c.name, c.summary, ok=not c.error) for c in calls),
            proposals=tuple(
                ProposalView(
                    kind=a.kind,
                    summary=_proposal_summary(a),
                    verdict=a.verdict,
                    allowed=a.allowed,
                    status=a.status,
                )
                for a in actions
            ),
            attachments=tuple(str(a.get("filename", "")) for a in trigger.attachments or []),
            failure=draft.failure,
            notice=notice,
            escalation=draft.escalation,
            on_call=on_call,
            decided_by=draft.decided_by,
            decided_at=draft.decided_at,
            sent_text=(outbox.text if outbox is not None and outbox.status == "sent" else ""),
        )
        return card, draft

    @staticmethod
    def _unposted(now: datetime) -> Any:
        """Drafts without a card, or whose card post was claimed long ago and never finished."""
        stale = f"{CARD_CLAIM}{(now - CARD_CLAIM_LEASE).isoformat()}"
        return or_(Draft.card_ref == "", and_(Draft.card_ref.startswith(CARD_CLAIM), Draft.card_ref < stale))

    async def post_card(self, draft_id: str) -> None:
        """Put a draft's card on the review desk, once: the post is claimed in SQL first, so a
        retry (or another instance) never posts a second card while one is on its way."""
        desk = self.desk
        if desk is None:
            log.error("no review desk is configured: draft %s waits in the database", draft_id)
            return
        now = utcnow()
        claim = f"{CARD_CLAIM}{now.isoformat()}"
        async with self.sessions.begin() as session:
            claimed = await session.execute(
                update(Draft).where(Draft.id == draft_id, self._unposted(now)).values(card_ref=claim)
            )
        if getattr(claimed, "rowcount", 0) != 1:
            await self.refresh_card(draft_id)
            return
        built = await self.build_card(draft_id)
        if built is None:
            return
        card = built[0]
        try:
            ref = await desk.post_card(card, idempotency_key=f"card:{draft_id}")  # slack-edge: key
        except Exception:
            log.exception("posting the card of draft %s failed; it will be retried", draft_id)
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Draft).where(Draft.id == draft_id, Draft.card_ref == claim).values(card_ref="")
                )
            return
        async with self.sessions.begin() as session:
            await session.execute(
                update(Draft)
                .where(Draft.id == draft_id, Draft.card_ref == claim)
                .values(card_desk=desk.name, card_ref=ref)
            )
        self.metrics["cards_posted"] += 1
        # A click or a newer message may have changed the draft while the card was on its way
        # (every change bumps updated_at); if so, show the latest state.
        async with self.reads() as session:
            latest = (await session.execute(select(Draft.status, Draft.updated_at).where(Draft.id == draft_id))).one()
        if (latest.status, latest.updated_at) != (built[1].status, built[1].updated_at):
            await self.refresh_card(draft_id)

    async def refresh_card(self, draft_id: str) -> None:
        built = await self.build_card(draft_id)
        if built is None:
            return
        card, draft = built
        desk = self.desks.get(draft.card_desk)
        if desk is None or not draft.card_ref or draft.card_ref.startswith(CARD_CLAIM):
            return
        try:
            await desk.update_card(draft.card_ref, card)
        except Exception:
            log.exception("updating the card of draft %s failed", draft_id)

    async def post_missing_cards(self) -> None:
        """Cards whose posting failed (desk down) are posted again."""
        cutoff = utcnow() - timedelta(seconds=5)
        async with self.reads() as session:
            ids = list(
                await session.scalars(
                    select(Draft.id)
                    .where(
                        self._unposted(utcnow()),
                        Draft.status.in_(("awaiting_review", "failed")),
                        Draft.updated_at < cutoff,
                    )
                    .limit(20)
                )
            )
        for draft_id in ids:
            await self.post_card(draft_id)

    async def resume_drafting(self) -> None:
        """Drafts interrupted by a restart are drafted again."""
        cutoff = utcnow() - timedelta(seconds=60)
        async with self.sessions.begin() as session:
            ids = list(
                await session.scalars(select(Draft.id).where(Draft.status == "drafting", Draft.updated_at < cutoff))
            )
            if ids:
                await session.execute(update(Draft).where(Draft.id.in_(ids)).values(updated_at=utcnow()))
        for draft_id in ids:
            self.spawn(self.produce_draft(draft_id))

    async def policy_rejected(self, error: PolicyError) -> None:
        """A bad policy edit: the old policy stays; the agents hear about it once."""
        text = (
            f":warning: The policy file {error.path} was not reloaded; the previous policy stays in force.\n"
            + "\n".join(f"• {p}" for p in error.problems[:20])
        )
        for desk in self.desks.values():
            try:
                await desk.post_notice(text)
            except Exception:
                log.exception("could not post the policy notice to %s", desk.name)

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    async def _refunds(session: AsyncSession, draft_id: str) -> list[ProposedAction]:
        return list(
            await session.scalars(
                select(ProposedAction).where(ProposedAction.draft_id == draft_id).order_by(ProposedAction.created_at)
            )
        )


def _order_id(arguments: str) -> str:
    match = re.search(r'"order_id"\s*:\s*"([^"]{1,64})"', arguments)
    return match.group(1) if match else ""


def _proposal_summary(action: ProposedAction) -> str:
    p = action.params
    amount = int(p.get("approved_amount_cents", p.get("amount_cents", 0)))
    text = f"Refund {money(amount, str(p.get('currency', '')))} on order {p.get('order_id')}"
    if p.get("reason"):
        text += f": {p['reason']}"
    relied = []
    if p.get("order_status"):
        relied.append(f"status {p['order_status']}")
    if p.get("delivered_at"):
        relied.append(f"delivered {str(p['delivered_at'])[:10]}")
    if "refundable_cents" in p:
        relied.append(f"refundable {money(int(p['refundable_cents']))}")
    if relied:
        text += f" (relied on: {', '.join(relied)})"
    if action.result.get("error"):
        text += f" — failed: {action.result['error']}"
    elif action.result.get("refund_id"):
        text += f" — executed as {action.result['refund_id']}"
    return text


def _fit(text: str, limit: int) -> str:
    """Cut a too-long draft at a paragraph (or sentence) boundary."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    for sep in ("\n\n", "\n", ". "):
        index = cut.rfind(sep)
        if index > limit // 2:
            return cut[: index + (1 if sep == ". " else 0)].rstrip()
    return cut.rstrip()
