"""How a review card reads in Slack: :func:`adapters.slack.cards.card_blocks` renders what the
core put on the :class:`~bot.ports.ReviewCard` (identity, flags, escalation, failure, lookups,
proposals, notices) as Block Kit, with the action ids the review handlers listen to. The rules
that fill the card are scenario tests on the test desk (tests/test_refunds.py, test_guards.py,
test_drafting.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from adapters.slack.cards import APPROVE, EDIT, REGENERATE, REJECT, card_blocks
from bot.ports import CardState, ProposalView, ReviewCard, ToolLookup

DRAFT = "0123456789abcdef0123456789abcdef"


def card(**fields: object) -> ReviewCard:
    values: dict[str, object] = {
        "draft_id": DRAFT,
        "state": CardState.AWAITING_REVIEW,
        "asked_by": "<@U222>",
        "where": "Slack · #support",
        "customer_text": "where is my order?",
        "draft_text": "It ships today.",
        **fields,
    }
    return ReviewCard(**values)  # type: ignore[arg-type]


def text_of(blocks: list[dict[str, object]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_an_actionable_card_has_the_four_buttons_carrying_the_draft_id() -> None:
    blocks = card_blocks(card(revision=2, model="kimi-k2.6", notice="Regenerated once."))
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        (APPROVE, DRAFT),
        (EDIT, DRAFT),
        (REJECT, DRAFT),
        (REGENERATE, DRAFT),
    ]
    assert f"Draft `{DRAFT[:8]}` · rev 2 · kimi-k2.6 · Regenerated once." in text_of(blocks)


def test_a_settled_card_has_no_buttons_and_says_who_decided() -> None:
    when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    blocks = card_blocks(card(state=CardState.SENT, decided_by="U333", decided_at=when))
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "2026-12-01 09:30 UTC" in text_of(blocks) and "*Reply sent*" in text_of(blocks)


def test_identity_flags_and_escalation_are_shown_plainly_and_the_on_call_group_is_tagged() -> None:
    text = text_of(
        card_blocks(
            card(
                identity="Unverified asker (slack:U999)",
                flags=("The draft quotes the amount 45.00, which no tool result or proposal gave.",),
                escalation="identity verification failed 3 times",
                on_call="S0ONCALL",
            )
        )
    )
    assert "Unverified asker (slack:U999)" in text
    assert "*Check before approving:*\\n• The draft quotes the amount 45.00" in text
    assert "<!subteam^S0ONCALL> Escalation: identity verification failed 3 times" in text


def test_a_failure_lookups_and_proposals_are_rendered_with_their_verdicts() -> None:
    blocks = card_blocks(
        card(
            state=CardState.FAILED,
            draft_text="",
            failure="kimi: content_filter",
            lookups=(ToolLookup("get_order_status", "get_order_status failed: timeout", ok=False),),
            proposals=(
                ProposalView("refund", "Refund 5000.00 USD on order 40021", "refused by policy: too much", False),
                ProposalView("refund", "Refund 20.00 USD on order 40021", "needs a manager", True),
            ),
        )
    )
    text = text_of(blocks)
    assert "*Drafting failed*: kimi: content_filter" in text
    assert "• `get_order_status`: get_order_status failed: timeout" in text
    assert (
        ":no_entry: *Proposed refund* (proposed)\\nRefund 5000.00 USD on order 40021\\n_Policy: refused by policy"
        in text
    )
    assert ":moneybag: *Proposed refund* (proposed)\\nRefund 20.00 USD" in text
    assert not [b for b in blocks if b["type"] == "actions"], "a failed draft has nothing to approve"


def test_customer_and_model_text_cannot_ping_or_link() -> None:
    text = text_of(card_blocks(card(customer_text="<!channel> hi", draft_text="<@U1> <https://x|y>")))
    assert "<!channel>" not in text and "<@U1>" not in text and "<https://x|y>" not in text
