"""What a finished drafting run means, as plain values: the planned outcome.

Drafting runs the model, :func:`bot.core.outcome.plan` turns what came back into one of these
(a pure function), and :func:`bot.store.outcomes.record` stores it in one transaction. Nothing
here does I/O; the types say everything a finished draft changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.domain.states import NO_REPLY_NOTICE, NO_REPLY_STATUS, ActionStatus, DraftStatus
from tools.refunds import RefundProposal, RefundVerdict


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One line of the audit trail."""

    conversation_id: str
    draft_id: str | None
    kind: str
    actor: str
    summary: str
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call as the audit log and the review card see it."""

    name: str
    arguments: str
    result: str
    summary: str
    error: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Spend:
    """The tokens one model call used, priced (a row of the usage ledger)."""

    purpose: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_microusd: int = 0


@dataclass(frozen=True, slots=True)
class PlannedRefund:
    """A refund the model proposed, with the policy's verdict on it (taken over the whole draft)."""

    proposal: RefundProposal
    verdict: RefundVerdict

    @property
    def status(self) -> ActionStatus:
        return ActionStatus.PROPOSED if self.verdict.allowed else ActionStatus.REFUSED


@dataclass(frozen=True, slots=True)
class FactsUpdate:
    """The conversation's memory after a draft: its facts, the failed-drafts streak, what the
    tools established about who the customer is (conversation columns) and, when the facts
    changed, the fact notes the prompt shows."""

    facts: dict[str, Any]
    failed_drafts: int
    identity: Mapping[str, object] = field(default_factory=dict)
    notes: list[tuple[int, dict[str, Any]]] | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """A draft for the agents to review (``awaiting_review``)."""

    text: str
    model: str
    notice: str
    escalation: str
    flags: tuple[str, ...]
    usage: Spend
    refunds: tuple[PlannedRefund, ...]
    tool_calls: tuple[ToolCallRecord, ...]
    facts: FactsUpdate | None
    audit: tuple[AuditLine, ...]
    spent: tuple[Spend, ...] = ()

    status = DraftStatus.AWAITING_REVIEW


@dataclass(frozen=True, slots=True)
class Retry:
    """A draft the verification pass flagged: superseded by one new draft (the next revision)
    that carries the reason as its instruction; its tool calls stay for the audit trail."""

    text: str
    notice: str
    instruction: str
    tool_calls: tuple[ToolCallRecord, ...]
    facts: FactsUpdate | None
    audit: tuple[AuditLine, ...]
    spent: tuple[Spend, ...] = ()

    status = DraftStatus.SUPERSEDED


@dataclass(frozen=True, slots=True)
class Failed:
    """A draft that could not be written; the card says why."""

    failure: str
    model: str
    escalation: str
    facts: FactsUpdate
    audit: tuple[AuditLine, ...]
    spent: tuple[Spend, ...] = ()

    status = DraftStatus.FAILED


@dataclass(frozen=True, slots=True)
class NoReply:
    """A message that needs no reply ("thanks!"): no card, nothing sent; the conversation is
    resolved by the customer. ``reason`` says who decided and why (``cheap rule: thanks``,
    ``model: …``); a model run's tool calls and usage stay for the audit trail."""

    reason: str
    model: str
    tool_calls: tuple[ToolCallRecord, ...]
    audit: tuple[AuditLine, ...]
    spent: tuple[Spend, ...] = ()

    status = NO_REPLY_STATUS

    @property
    def notice(self) -> str:
        return f"{NO_REPLY_NOTICE} ({self.reason})."[:900]


DraftOutcome = Ready | Retry | Failed | NoReply
