"""The review card, built from what the core already holds: a pure function of the draft's
facts and the policy, used right after drafting (nothing re-read) and on every refresh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.approval import money
from bot.domain.states import ActionStatus, ConversationOwner, ConversationStatus, DraftStatus, OutboxStatus
from bot.events import DecisionAction
from bot.policy import Policy
from bot.ports import ConversationView, ProposalView, ReviewCard, ToolLookup
from bot.store.conversations import ConversationState
from bot.store.records import StoredAction


@dataclass(frozen=True, slots=True)
class ConversationLife:
    """What a card shows of its conversation's life (:mod:`bot.store.life`)."""

    status: ConversationStatus = ConversationStatus.OPEN
    owner: ConversationOwner = ConversationOwner.BOT
    owner_reason: str = ""
    assignee: str = ""
    #: The customer's newest message after the card's own, while a human answers.
    customer_wrote: str = ""


def life_of(conversation: ConversationState, *, customer_wrote: str = "") -> ConversationLife:
    """The card's view of a conversation as read."""
    return ConversationLife(
        conversation.status, conversation.owner, conversation.owner_reason, conversation.assignee, customer_wrote
    )


def conversation_view(life: ConversationLife, status: DraftStatus) -> ConversationView:
    """The conversation block of a card, with the buttons its state offers: Take over (the bot
    drafts) or Hand back (a human answers), Claim and Resolve until it is resolved (a customer
    writing reopens it). A card still being drafted offers none yet."""
    actions: tuple[DecisionAction, ...] = ()
    if status is not DraftStatus.DRAFTING and life.status is not ConversationStatus.RESOLVED:
        owner = DecisionAction.TAKE_OVER if life.owner is ConversationOwner.BOT else DecisionAction.HAND_BACK
        actions = (owner, DecisionAction.CLAIM, DecisionAction.RESOLVE)
    wrote = life.customer_wrote if life.owner is ConversationOwner.HUMAN else ""
    return ConversationView(life.status, life.owner, life.owner_reason, life.assignee, wrote, actions)


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
    life: ConversationLife = ConversationLife()


def proposal_summary(action: StoredAction) -> str:
    """One line saying what the refund is and what its verdict relied on."""
    p = action.params
    text = f"Refund {money(action.amount_cents, str(p.get('currency', '')))} on order {p.get('order_id')}"
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
        conversation=conversation_view(source.life, source.status),
    )
