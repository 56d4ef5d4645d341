"""The review card, built from what the core already holds: a pure function of the draft's
facts and the policy, used right after drafting (nothing re-read) and on every refresh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain.states import ActionStatus, DraftStatus, OutboxStatus
from bot.policy import Policy
from bot.ports import ProposalView, ReviewCard, ToolLookup
from bot.store.records import StoredAction
from tools.money import Money


@dataclass(slots=True)
class CardSource:
    """Everything a card shows about one draft."""

    draft_id: str
    status: DraftStatus
    revision: int
    asked_by: str
    where: str
    customer_text: str
    text: str = ""
    edited_text: str | None = None
    model: str = ""
    failure: str = ""
    notice: str = ""
    escalation: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    attachments: tuple[str, ...] = ()
    lookups: tuple[ToolLookup, ...] = ()
    actions: Sequence[StoredAction] = field(default_factory=tuple)
    outbox: tuple[OutboxStatus, str, str] | None = None
    identity: str = ""
    flags: tuple[str, ...] = ()


def proposal_summary(action: StoredAction) -> str:
    """One line saying what the refund is and what its verdict relied on."""
    refund, order = action.proposal, action.proposal.order
    text = f"Refund {refund.due} on order {refund.order_id}"
    if refund.reason:
        text += f": {refund.reason}"
    relied = []
    if order.status:
        relied.append(f"status {order.status}")
    if order.delivered_at:
        relied.append(f"delivered {order.delivered_at.isoformat()[:10]}")
    relied.append(f"refundable {Money.of_cents(order.refundable_cents).format()}")
    text += f" (relied on: {', '.join(relied)})"
    if action.result.get("error"):
        text += f" — failed: {action.result['error']}"
    elif action.result.get("refund_id"):
        text += f" — executed as {action.result['refund_id']}"
    return text


def build_card(source: CardSource, policy: Policy, desk_name: str) -> ReviewCard:
    """The card for ``source`` as the desk named ``desk_name`` shows it."""
    notices = [source.notice] if source.notice else []
    if source.status is DraftStatus.AWAITING_REVIEW and any(
        a.approvals and a.status is ActionStatus.PROPOSED for a in source.actions
    ):
        notices.append("One approval recorded; a second approver is needed.")
    if source.outbox is not None and source.outbox[0] is OutboxStatus.FAILED:
        notices.append(f"Sending failed: {source.outbox[2]}. Nothing was sent to the customer.")
    on_call = ""
    if source.escalation:
        on_call = policy.escalation.on_call_slack if desk_name == "slack" else policy.escalation.on_call_discord
    sent_text = source.outbox[1] if source.outbox is not None and source.outbox[0] is OutboxStatus.SENT else ""
    return ReviewCard(
        draft_id=source.draft_id,
        state=source.status,
        asked_by=source.asked_by,
        where=source.where,
        customer_text=source.customer_text,
        draft_text=source.edited_text or source.text,
        revision=source.revision,
        model=source.model,
        lookups=source.lookups,
        proposals=tuple(
            ProposalView(
                kind=a.kind, summary=proposal_summary(a), verdict=a.verdict, allowed=a.allowed, status=a.status.value
            )
            for a in source.actions
        ),
        attachments=source.attachments,
        failure=source.failure,
        notice=" ".join(notices),
        escalation=source.escalation,
        on_call=on_call,
        decided_by=source.decided_by,
        decided_at=source.decided_at,
        sent_text=sent_text,
        identity=source.identity,
        flags=source.flags,
    )
