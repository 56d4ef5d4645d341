"""Issue 18: a finished drafting run is planned by a pure function (bot/core/outcome.py) before
one repository call records it: the same run, conversation and policy always plan the same
outcome, with no database, clock or network in between."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot.agent import DraftResult
from bot.approval import RefundHistory
from bot.core.outcome import DraftRun, plan, plan_failed
from bot.domain.outcome import Ready, Retry, ToolCallRecord
from bot.domain.states import ActionStatus
from bot.events import ThreadRef
from bot.kimi import Usage
from bot.policy import Policy
from bot.store.conversations import ConversationState, StoredMessage
from bot.store.drafts import ClaimedDraft
from tools import ToolContext
from tools.money import Money
from tools.refunds import OrderFacts, RefundProposal

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ORDER = OrderFacts("40021", "C-1", "delivered", "USD", 60_000, 0, datetime(2026, 12, 1, tzinfo=UTC))
POLICY = Policy.model_validate({"refunds": {"max_amount": "500.00", "manager_threshold": "100.00"}})


def run(text: str = "The chair is scratched, can I get money back?", *, revision: int = 1) -> DraftRun:
    conversation = ConversationState(
        id="conv-1",
        thread=ThreadRef("slack", "T1", "C1", "1.0"),
        location="#help",
        customer_id="U1",
        customer_name="Ana",
        summary="",
        summary_through=0,
        facts={},
        failed_drafts=1,
    )
    claimed = ClaimedDraft("draft-1", "conv-1", 7, None, revision, NOW)
    trigger = StoredMessage(7, "user", text, [], "U1")
    ctx = ToolContext("conv-1", asker="slack:U1", verified_customer_id="C-1")
    return DraftRun(claimed, conversation, trigger, ctx)


def proposing(*amounts: str, reply: str = "I've asked the team to review a refund.") -> DraftResult:
    calls = [
        ToolCallRecord("propose_refund", f'{{"order_id": "40021", "amount": "{a}"}}', "{}", "proposed", "", 3)
        for a in amounts
    ]
    proposals = [RefundProposal(ORDER, Money.parse(a, "USD"), "scratched") for a in amounts]
    return DraftResult(reply, "kimi-k2.5", Usage(100, 20), tool_calls=calls, proposals=proposals)


def test_the_refund_rule_the_facts_and_the_audit_are_planned_from_the_run_alone() -> None:
    outcome = plan(run(), proposing("80.00", "450.00"), (), POLICY, RefundHistory(), NOW)

    assert isinstance(outcome, Ready)
    [within, above] = outcome.refunds
    assert (within.status, above.status) == (ActionStatus.PROPOSED, ActionStatus.REFUSED)
    assert above.verdict.describe().startswith("refused by policy: this draft's refunds would total 530.00 USD")
    assert within.proposal.amount == Money(Decimal("80.00"), "USD")
    assert outcome.facts is not None and outcome.facts.failed_drafts == 0, "a ready draft ends the failure streak"
    assert outcome.facts.facts["order_ids"] == ["40021"]
    assert outcome.facts.facts["refunds"] == [
        {"order_id": "40021", "amount": "80.00", "status": "proposed"},
        {"order_id": "40021", "amount": "450.00", "status": "refused by policy"},
    ]
    assert [line.kind for line in outcome.audit] == ["tool_call", "tool_call", "proposal", "proposal", "draft"]
    assert plan(run(), proposing("80.00", "450.00"), (), POLICY, RefundHistory(), NOW) == outcome


def test_refunds_already_approved_elsewhere_count_against_the_order() -> None:
    history = RefundHistory(pending_cents={"40021": 55_000})

    outcome = plan(run(), proposing("80.00"), (), POLICY, history, NOW)

    assert isinstance(outcome, Ready)
    assert "left on order 40021" in outcome.refunds[0].verdict.reason


def test_a_flagged_first_draft_plans_one_retry_and_a_flagged_retry_goes_to_the_agents() -> None:
    flags = ("The draft quotes the amount 99.00, which no tool result or proposal gave.",)

    first = plan(run(), proposing(reply="We refunded 99.00."), flags, POLICY, None, NOW)
    second = plan(run(revision=2), proposing(reply="We refunded 99.00."), flags, POLICY, None, NOW)

    assert isinstance(first, Retry) and first.instruction.startswith("The verification pass flagged")
    assert isinstance(second, Ready) and flags[0] in second.flags


def test_a_failed_run_escalates_the_streak_and_a_human_request() -> None:
    outcome = plan_failed(run("Can I talk to a human?"), "Kimi is down", "kimi-k2.5", POLICY)

    assert outcome.facts.failed_drafts == 2
    assert outcome.escalation == "the customer asks for a human; 2 failed drafts in a row"
    assert [line.kind for line in outcome.audit] == ["draft_failed"]
