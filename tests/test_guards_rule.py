"""THE refund rule (tools/refunds.py) as plain data: properties that hold for any amounts and
any sequence of proposals and approvals (hypothesis), and the verification pass over drafts."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.verification import Evidence, verify_draft
from tools.money import Money
from tools.refunds import OrderFacts, RefundLimits, RefundProposal, RefundRequest, check_refunds, eligibility

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LIMITS = RefundLimits(
    window_days=30,
    max_amount_cents=50_000,
    manager_threshold_cents=10_000,
    two_approvers_threshold_cents=25_000,
    max_per_customer_per_day_cents=70_000,
)


def order(order_id: str, total: int, refunded: int = 0, customer: str = "C-1") -> OrderFacts:
    return OrderFacts(
        order_id=order_id,
        customer_id=customer,
        status="delivered",
        currency="USD",
        total_cents=total,
        refunded_cents=refunded,
        delivered_at=NOW - timedelta(days=2),
        items={"A": (2, 1_500), "B": (1, 40_000)},
    )


ORDER_IDS = ("O-1", "O-2", "O-3")
requests = st.lists(
    st.builds(
        RefundRequest,
        order_id=st.sampled_from(ORDER_IDS),
        amount_cents=st.one_of(
            st.integers(min_value=-100, max_value=80_000),
            st.sampled_from([1, 3_000, 3_001, 10_000, 10_001, 25_000, 30_000, 40_000, 50_000]),
        ),
        items=st.sampled_from([(), ("A",), ("B",), ("A", "B"), ("Z",)]),
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(
    requests,
    st.integers(0, 90_000),
    st.integers(0, 90_000),
    st.integers(0, 60_000),
    st.sampled_from([0, 70_000]),
)
def test_no_draft_moves_more_than_the_policy_allows(
    draft: list[RefundRequest], total: int, refunded_raw: int, today: int, daily: int
) -> None:
    refunded = min(refunded_raw, total)
    orders = {oid: order(oid, total, refunded) for oid in ORDER_IDS}
    limits = dataclasses.replace(LIMITS, max_per_customer_per_day_cents=daily)
    verdict = check_refunds(draft, orders, limits, NOW, verified_customer_id="C-1", customer_today_cents=today)
    allowed = [r for r, v in zip(draft, verdict.verdicts, strict=True) if v.allowed]
    assert verdict.total_cents == sum(r.amount_cents for r in allowed)
    assert verdict.total_cents <= LIMITS.max_amount_cents
    if daily:
        assert today + verdict.total_cents <= daily or not allowed
    for oid in ORDER_IDS:
        assert refunded + sum(r.amount_cents for r in allowed if r.order_id == oid) <= total
    for r in allowed:
        assert r.amount_cents > 0
        if r.items:
            assert r.amount_cents <= sum(
                orders[r.order_id].items.get(s, (0, 0))[0] * orders[r.order_id].items.get(s, (0, 0))[1]
                for s in set(r.items)
            )
    assert verdict.needs_manager == (verdict.total_cents > LIMITS.manager_threshold_cents)
    assert verdict.needs_two_approvers == (verdict.total_cents > LIMITS.two_approvers_threshold_cents)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, min_size=1, max_size=6), st.lists(st.booleans(), min_size=6, max_size=6))
def test_no_sequence_of_proposals_and_approvals_moves_more_than_the_policy_allows(
    drafts: list[list[RefundRequest]], executes: list[bool]
) -> None:
    """Drafts come one after another; each allowed refund is approved; some approved drafts are
    executed at once, others stay pending. Totals per order, per draft and per day hold."""
    totals = {"O-1": 30_000, "O-2": 90_000, "O-3": 5_000}
    refunded = dict.fromkeys(ORDER_IDS, 0)
    pending = dict.fromkeys(ORDER_IDS, 0)
    moved_today = 0  # executed + approved-pending for the customer
    for index, draft in enumerate(drafts):
        orders = {oid: order(oid, totals[oid], refunded[oid]) for oid in ORDER_IDS}
        verdict = check_refunds(
            draft,
            orders,
            LIMITS,
            NOW,
            verified_customer_id="C-1",
            pending_cents=pending,
            customer_today_cents=moved_today,
        )
        assert verdict.total_cents <= LIMITS.max_amount_cents
        execute = executes[index % len(executes)]
        for request, one in zip(draft, verdict.verdicts, strict=True):
            if not one.allowed:
                continue
            moved_today += request.amount_cents
            if execute:
                refunded[request.order_id] += request.amount_cents
            else:
                pending[request.order_id] += request.amount_cents
        for oid in ORDER_IDS:
            assert refunded[oid] + pending[oid] <= totals[oid]
        assert moved_today <= LIMITS.max_per_customer_per_day_cents


@given(st.lists(st.builds(RefundRequest, st.sampled_from(ORDER_IDS), st.integers(1, 10_000)), max_size=5))
def test_nothing_is_allowed_without_the_verified_owner(draft: list[RefundRequest]) -> None:
    orders = {oid: order(oid, 100_000, customer="C-2") for oid in ORDER_IDS}
    for verified in (None, "", "C-1"):
        verdict = check_refunds(draft, orders, LIMITS, NOW, verified_customer_id=verified)
        assert verdict.total_cents == 0 and not any(v.allowed for v in verdict.verdicts)


def test_a_delivered_order_without_a_date_is_eligible_only_with_a_manager() -> None:
    undated = OrderFacts("N-1", "C-1", "delivered", "USD", 6_000, 0, None)
    facts = eligibility(undated, LIMITS, NOW)
    assert (facts.eligible, facts.needs_manager) == (False, True)
    verdict = check_refunds([RefundRequest("N-1", 1_000)], {"N-1": undated}, LIMITS, NOW, verified_customer_id="C-1")
    assert verdict.verdicts[0].allowed and verdict.needs_manager
    assert verdict.describe(0) == "within policy (needs a manager: the delivery date is unknown)"

    shipped = OrderFacts("S-1", "C-1", "shipped", "USD", 6_000, 0, None)
    assert not eligibility(shipped, LIMITS, NOW).needs_manager, "a shipped order is not refundable at all"


# --------------------------------------------------------------------------------------------
# The verification pass


def refund_of(order_id: str, amount: str) -> RefundProposal:
    return RefundProposal(OrderFacts(order_id, None, "", "", 0, 0, None), Money.parse(amount))


TOOLS = [json.dumps({"order_id": "#W2611340", "total": "89.90", "tracking_number": "1Z999AA10123456784"})]


def test_a_faithful_draft_has_no_flags() -> None:
    evidence = Evidence(tool_texts=TOOLS, proposals=[refund_of("#W2611340", "20.00")])
    draft = "Order #W2611340 (89.90 USD) ships as 1Z999AA10123456784. A refund of $20.00 is being reviewed."
    assert verify_draft(draft, evidence) == ()


def test_invented_amounts_ids_and_claims_are_flagged_and_another_customers_data_too() -> None:
    evidence = Evidence(tool_texts=TOOLS, withheld=["Ana Diaz"])
    draft = "Hi Ana Diaz, your refund of 12.00 was processed for order W99887766."
    flags = verify_draft(draft, evidence)
    assert "The draft quotes the amount 12.00, which no tool result or proposal gave." in flags
    assert any("'W99887766'" in f for f in flags)
    assert any("money moved" in f and "never made" in f for f in flags)
    assert "The draft contains personal data of another customer, which the tools withheld." in flags


def test_a_claim_matching_an_executed_refund_is_not_flagged() -> None:
    evidence = Evidence(tool_texts=TOOLS, proposals=[refund_of("", "20.00")], executed_refunds_cents=[2000])
    assert verify_draft("Your refund of 20.00 has been processed.", evidence) == ()
