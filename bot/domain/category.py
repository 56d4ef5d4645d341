"""What a draft was about, in the eval's words (../shared/EVAL.md categories): a pure function of
the tools the model called and how the draft ended, recorded with the draft so the report can
say where agents approve, edit or reject.

Only the categories a draft's own record can show are named here; the eval's others (injection,
other-customer, language, ...) describe the test case's intent, which no draft carries. The first
rule that holds wins, most specific first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.outcome import DraftOutcome, Failed, NoReply, Retry


class Category(StrEnum):
    """A draft's category; the values are the eval's category names."""

    NO_REPLY = "no-reply"
    ESCALATION = "escalation"
    OVER_LIMIT = "over-limit"
    MANAGER = "manager"
    TWO_APPROVERS = "two-approvers"
    REFUND = "refund"
    KNOWLEDGE = "knowledge"
    STATUS = "status"
    VERIFICATION = "verification"
    OTHER = "other"


#: The tools whose call names a category by itself, in the order they win.
_BY_TOOL: tuple[tuple[frozenset[str], Category], ...] = (
    (frozenset({"propose_refund", "check_refund_eligibility"}), Category.REFUND),
    (frozenset({"search_knowledge"}), Category.KNOWLEDGE),
    (frozenset({"get_order_status"}), Category.STATUS),
    (frozenset({"verify_customer"}), Category.VERIFICATION),
)


@dataclass(frozen=True, slots=True)
class DraftSignals:
    """What a draft's record says about it: the tools called and how it ended."""

    tools: frozenset[str] = frozenset()
    no_reply: bool = False
    escalated: bool = False
    refund_refused: bool = False
    needs_manager: bool = False
    needs_two_approvers: bool = False

    @classmethod
    def of(cls, tools: Iterable[str], **flags: bool) -> DraftSignals:
        return cls(frozenset(tools), **flags)


def category_of(signals: DraftSignals) -> Category:
    """The draft's category: how it ended first (no reply, an escalation, a refund the policy
    refused or holds for a manager or a second approver), then the tools it used."""
    if signals.no_reply:  # the outcome, not the tool: a forced draft after no_reply_needed is a draft
        return Category.NO_REPLY
    if signals.escalated:
        return Category.ESCALATION
    if signals.refund_refused:
        return Category.OVER_LIMIT
    if signals.needs_manager:
        return Category.MANAGER
    if signals.needs_two_approvers:
        return Category.TWO_APPROVERS
    for names, category in _BY_TOOL:
        if names & signals.tools:
            return category
    return Category.OTHER


def signals_of(outcome: DraftOutcome) -> DraftSignals:
    """What a planned drafting outcome says about its draft."""
    if isinstance(outcome, Failed):
        return DraftSignals(escalated=bool(outcome.escalation))
    tools = frozenset(call.name for call in outcome.tool_calls)
    if isinstance(outcome, NoReply):
        return DraftSignals(tools, no_reply=True)
    if isinstance(outcome, Retry):
        return DraftSignals(tools)
    verdicts = [refund.verdict for refund in outcome.refunds]
    return DraftSignals(
        tools,
        escalated=bool(outcome.escalation),
        refund_refused=any(not v.allowed for v in verdicts),
        needs_manager=any(v.needs_manager for v in verdicts),
        needs_two_approvers=any(v.needs_two_approvers for v in verdicts),
    )
