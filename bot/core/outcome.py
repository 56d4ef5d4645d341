"""Plan: what a finished drafting run means, decided by pure functions.

Drafting runs the model and the verification pass; :func:`plan` turns the run's result, the
conversation's memory and the policy into a typed outcome (:mod:`bot.domain.outcome`): the text
(without the verified order details a public place may not show, :mod:`bot.public_places`) and
its notices, the flags, the escalation, the refunds with THE rule's verdicts, the facts learned,
who is asking. :func:`bot.store.outcomes.record` then stores it in one transaction.
Nothing here reads the database, the clock or the network, so every rule is testable alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bot import identity, public_places, verification
from bot.agent import DraftResult
from bot.approval import RefundHistory, judge_refunds
from bot.core.drafting_text import escalation_reasons, fit
from bot.core.memory import noted
from bot.core.no_reply import model_said, must_draft
from bot.domain.outcome import (
    AuditLine,
    FactsUpdate,
    Failed,
    NoReply,
    PlannedRefund,
    Ready,
    Retry,
    Spend,
    ToolCallRecord,
)
from bot.kimi import Usage
from bot.policy import Policy
from bot.store.conversations import ConversationState, StoredMessage
from bot.store.drafts import ClaimedDraft
from tools import ToolContext

ORDER_TOOLS = ("get_order_status", "check_refund_eligibility", "propose_refund")


@dataclass(frozen=True, slots=True)
class DraftRun:
    """One drafting run as the planner sees it: the draft, its conversation, the message it
    answers (None when it is not among the turns read), the tools' context after the run and
    what the run spent; ``earlier_unanswered``: the turn before it is the customer's too."""

    claimed: ClaimedDraft
    conversation: ConversationState
    trigger: StoredMessage | None
    ctx: ToolContext
    spent: tuple[Spend, ...] = ()
    earlier_unanswered: bool = False

    @property
    def trigger_text(self) -> str:
        return self.trigger.text if self.trigger else ""

    def must_draft(self, policy: Policy) -> str:
        """Why this run must end in a draft whatever the rules or the model say ("" if nothing)."""
        if self.trigger is None:
            return "the message is not the newest read"
        return must_draft(
            self.trigger.text,
            attachments=self.trigger.attachments,
            policy=policy,
            earlier_unanswered=self.earlier_unanswered,
            asked_by_agent=bool(self.claimed.instruction) or self.claimed.revision > 1,
        )


def spends(spent: Sequence[tuple[str, str, Usage]]) -> tuple[Spend, ...]:
    """The usage ledger's rows for ``(purpose, model, usage)`` entries, priced."""
    return tuple(
        Spend(purpose, model, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cost_microusd(model))
        for purpose, model, u in spent
    )


def draft_text(result: DraftResult, policy: Policy) -> str:
    """The draft as the card shows it: cut to the policy's reply length."""
    return fit(result.text, policy.limits.max_reply_chars)


def plan(
    run: DraftRun,
    result: DraftResult,
    flags: tuple[str, ...],
    policy: Policy,
    history: RefundHistory | None,
    now: datetime,
) -> Ready | Retry | NoReply:
    """The outcome of a run whose model answered; ``flags`` are the verification pass's, and
    ``history`` the other refunds THE rule counts (needed when the run proposed any). The model's
    "no reply needed" holds only when nothing forces a draft and it proposed nothing."""
    said = model_said(result.tool_calls)
    forced = run.must_draft(policy) if said else ""
    if said and not forced and not result.proposals:
        return plan_no_reply(run, said, result.model, tuple(result.tool_calls))
    if verification.may_retry(flags, result, run.claimed.revision, run.claimed.instruction):
        return _retry(run, result, flags, policy)
    fitted = draft_text(result, policy)
    public = public_places.check_draft(fitted, run.conversation.place, run.ctx, policy.identity)
    text = public.text
    refunds = _refunds(result, run.ctx, policy, history, now)
    facts = _facts_after(run.conversation, result, refunds)
    known = identity.identity_values(run.conversation, run.ctx, policy)
    update = None
    if facts != run.conversation.facts or run.conversation.failed_drafts or known:
        notes = None
        if facts != run.conversation.facts:
            c = run.conversation
            notes = noted(c.fact_notes, run.claimed.message_id, facts, c.summary_through)
        update = FactsUpdate(facts, 0, known, notes)
    return Ready(
        text=text,
        model=result.model,
        notice=_notice(result, fitted, policy, run.claimed.instruction, overruled=forced or bool(said), public=public),
        escalation=_escalation(policy, run.trigger_text, 0, run.ctx),
        flags=(*identity.identity_flags(run.ctx), *public.flags, *flags),
        usage=Spend("draft", result.model, *_tokens(result.usage), result.usage.cost_microusd(result.model)),
        refunds=refunds,
        tool_calls=tuple(result.tool_calls),
        facts=update,
        audit=_audit(run, result, refunds, text),
        spent=run.spent,
    )


def plan_no_reply(run: DraftRun, reason: str, model: str = "", calls: tuple[ToolCallRecord, ...] = ()) -> NoReply:
    """The outcome of a message that needs no reply: the cheap rules' (before any model call)
    or the model's, after :meth:`DraftRun.must_draft` let it stand."""
    c = run.conversation
    tool_lines = tuple(
        AuditLine(c.id, run.claimed.id, "tool_call", "model", f"{r.name}({r.arguments[:200]}): {r.summary}")
        for r in calls
    )
    return NoReply(
        reason=reason,
        model=model,
        tool_calls=calls,
        audit=tool_lines,
        spent=run.spent,
    )


def plan_failed(run: DraftRun, failure: str, model: str, policy: Policy) -> Failed:
    """The outcome of a run that produced no draft (the model failed, the budget is used up)."""
    c = run.conversation
    failed = c.failed_drafts + 1
    return Failed(
        failure=failure[:1000],
        model=model,
        escalation=escalation_reasons(policy, run.trigger_text, failed),
        facts=FactsUpdate(c.facts, failed),
        audit=(AuditLine(c.id, run.claimed.id, "draft_failed", "model", failure[:300]),),
        spent=run.spent,
    )


def _retry(run: DraftRun, result: DraftResult, flags: tuple[str, ...], policy: Policy) -> Retry:
    c = run.conversation
    known = identity.identity_values(c, run.ctx, policy)
    return Retry(
        text=result.text,
        notice=("Regenerated once: " + " ".join(flags))[:900],
        instruction=verification.retry_instruction(flags),
        tool_calls=tuple(result.tool_calls),
        facts=FactsUpdate(c.facts, c.failed_drafts, known) if known else None,
        audit=(AuditLine(c.id, run.claimed.id, "regenerate", "verification", " ".join(flags)[:300]),),
        spent=run.spent,
    )


def _tokens(usage: Usage) -> tuple[int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens


def _notice(
    result: DraftResult,
    text: str,
    policy: Policy,
    instruction: str | None,
    *,
    overruled: str | bool,
    public: public_places.PublicCheck,
) -> str:
    notices = []
    if overruled:
        why = overruled if isinstance(overruled, str) else "it proposed an action"
        notices.append(f"The model said no reply is needed; drafted anyway: {why}.")
    notices += [f"The draft was cut to {policy.limits.max_reply_chars} characters."] if text != result.text else []
    if result.forced_final:
        notices.append(f"Tool use stopped: {result.forced_final}.")
    notices.append(verification.regenerated_notice(instruction))
    notices.append(public.notice)
    return " ".join(n for n in notices if n)


def _escalation(policy: Policy, trigger_text: str, failed: int, ctx: ToolContext) -> str:
    reasons = (escalation_reasons(policy, trigger_text, failed), identity.escalation(ctx))
    return "; ".join(r for r in reasons if r)


def _refunds(
    result: DraftResult, ctx: ToolContext, policy: Policy, history: RefundHistory | None, now: datetime
) -> tuple[PlannedRefund, ...]:
    """THE refund rule over the draft's proposals together."""
    if not result.proposals:
        return ()
    verdicts = judge_refunds(
        {p.order_id: p.order for p in result.proposals},
        policy,
        history or RefundHistory(),
        verified_customer_id=ctx.verified_customer_id or "",
        refunds=[p.request() for p in result.proposals],
        now=now,
    )
    return tuple(PlannedRefund(p, v) for p, v in zip(result.proposals, verdicts, strict=True))


def _order_id(arguments: str) -> str:
    match = re.search(r'"order_id"\s*:\s*"([^"]{1,64})"', arguments)
    return match.group(1) if match else ""


def _facts_after(
    conversation: ConversationState, result: DraftResult, refunds: Sequence[PlannedRefund]
) -> dict[str, Any]:
    """The conversation's facts with what this draft established: the orders it looked up, who
    the customer is, the refunds it proposed (the last ten)."""
    facts = dict(conversation.facts)
    order_ids = set(facts.get("order_ids", []))
    order_ids.update(_order_id(r.arguments) for r in result.tool_calls if r.name in ORDER_TOOLS and not r.error)
    order_ids.discard("")
    if order_ids:
        facts["order_ids"] = sorted(order_ids)
    facts["customer"] = {"id": conversation.customer_id, "name": conversation.customer_name}
    refunds_fact = list(facts.get("refunds", []))
    refunds_fact.extend(
        {
            "order_id": r.proposal.order_id,
            "amount": r.proposal.amount.format(currency=False),
            "status": "proposed" if r.verdict.allowed else "refused by policy",
        }
        for r in refunds
    )
    if refunds_fact:
        facts["refunds"] = refunds_fact[-10:]
    return facts


def _audit(run: DraftRun, result: DraftResult, refunds: Sequence[PlannedRefund], text: str) -> tuple[AuditLine, ...]:
    c, draft_id = run.conversation.id, run.claimed.id
    calls = [
        AuditLine(
            c,
            draft_id,
            "tool_call",
            "model",
            f"{r.name}({r.arguments[:200]})" + (f" failed: {r.error}" if r.error else f": {r.summary}"),
        )
        for r in result.tool_calls
    ]
    proposals = [
        AuditLine(
            c,
            draft_id,
            "proposal",
            "model",
            f"refund {r.proposal.amount.format(currency=False)} on {r.proposal.order_id}: {r.verdict.describe()}",
        )
        for r in refunds
    ]
    return (*calls, *proposals, AuditLine(c, draft_id, "draft", "model", text[:200]))


def conversation_after(run: DraftRun, outcome: Ready | Retry | Failed) -> ConversationState:
    """The conversation as the outcome leaves it (who the customer is verified as)."""
    known = outcome.facts.identity if outcome.facts is not None else {}
    return replace(run.conversation, **known)  # type: ignore[arg-type]
