"""The review card: ONE builder for a fresh card and a refresh.

:func:`build_card` turns a :class:`bot.store.cards.CardSource` (the draft as its card shows it,
just recorded by drafting or read back by :func:`bot.store.cards.load_card`; its conversation;
the message it answers; the reply's outbox row) into the :class:`bot.ports.ReviewCard` every
desk renders (Slack, Discord, the playground, the evaluation's desk). Pure: nothing here reads
the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot import identity
from bot.domain.states import ActionStatus, ConversationOwner, ConversationStatus, DraftStatus, OutboxStatus
from bot.events import DecisionAction
from bot.policy import Policy
from bot.ports import ConversationView, ProposalView, ReviewCard, ToolLookup
from bot.store.cards import CardSource
from bot.store.conversations import ConversationState
from bot.store.records import StoredAction
from tools.money import Money


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


def on_call_for(policy: Policy, desk_name: str) -> str:
    """The on-call group's id on the desk named ``desk_name`` (empty: none configured). The one
    place the core reads it, for escalations and SLA reminders alike."""
    return policy.escalation.on_call(desk_name)


def build_card(source: CardSource, policy: Policy, desk_name: str) -> ReviewCard:
    """The card for ``source`` as the desk named ``desk_name`` shows it."""
    draft, conversation, trigger = source.draft, source.conversation, source.trigger
    on_call = on_call_for(policy, desk_name) if draft.escalation else ""
    sent = source.outbox is not None and source.outbox[0] is OutboxStatus.SENT
    return ReviewCard(
        draft_id=draft.id,
        state=draft.status,
        asked_by=conversation.customer_name or conversation.customer_id,
        where=conversation.location or conversation.thread.key,
        customer_text=trigger.text if trigger else "",
        draft_text=draft.edited_text or draft.text,
        revision=draft.revision,
        model=draft.model,
        lookups=tuple(ToolLookup(c.name, c.summary, ok=not c.error) for c in draft.calls),
        proposals=tuple(
            ProposalView(
                kind=a.kind, summary=proposal_summary(a), verdict=a.verdict, allowed=a.allowed, status=a.status.value
            )
            for a in draft.actions
        ),
        attachments=card_lines(trigger.attachments if trigger else []),
        failure=draft.failure,
        notice=_notice(source),
        escalation=draft.escalation,
        on_call=on_call,
        decided_by=draft.decided_by,
        decided_at=draft.decided_at,
        sent_text=source.outbox[1] if source.outbox is not None and sent else "",
        identity=identity.card_line(conversation, trigger.author_id if trigger else ""),
        flags=draft.guard_flags,
        conversation=conversation_view(conversation, draft.status, source.customer_wrote),
        overdue=source.overdue if draft.status is DraftStatus.AWAITING_REVIEW else "",
        thread=conversation.thread,
        edited=draft.edited_text is not None,
        translation=source.translation,
    )


def conversation_view(conversation: ConversationState, status: DraftStatus, customer_wrote: str) -> ConversationView:
    """The card's conversation block, with the buttons its state offers: Take over (the bot
    drafts) or Hand back (a human answers), Claim and Resolve until it is resolved (a customer
    writing reopens it). A card still being drafted offers none yet. What the customer wrote
    since the card's message shows only while a human answers (nobody drafts for it then)."""
    actions: tuple[DecisionAction, ...] = ()
    human = conversation.owner is ConversationOwner.HUMAN
    if status is not DraftStatus.DRAFTING and conversation.status is not ConversationStatus.RESOLVED:
        actions = (
            DecisionAction.HAND_BACK if human else DecisionAction.TAKE_OVER,
            DecisionAction.CLAIM,
            DecisionAction.RESOLVE,
        )
    return ConversationView(
        conversation.status,
        conversation.owner,
        conversation.owner_reason,
        conversation.assignee,
        customer_wrote if human else "",
        actions,
    )


def _notice(source: CardSource) -> str:
    draft = source.draft
    notices = [draft.notice] if draft.notice else []
    if draft.status is DraftStatus.AWAITING_REVIEW and any(
        a.approvals and a.status is ActionStatus.PROPOSED for a in draft.actions
    ):
        notices.append("One approval recorded; a second approver is needed.")
    if source.outbox is not None and source.outbox[0] is OutboxStatus.FAILED:
        notices.append(f"Sending failed: {source.outbox[2]}. Nothing was sent to the customer.")
    return " ".join(notices)


def card_lines(files: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Each file as the card lists it: its name, and why it was not downloaded or not sent when
    it was not (``image.png: not downloaded (over 5 MB)``, ``scan.png: not sent to the model
    (over 4 images)``)."""
    lines = []
    for file in files:
        name = str(file.get("filename", ""))
        if file.get("error"):
            lines.append(f"{name}: not downloaded ({file['error']})")
        elif file.get("not_sent"):
            lines.append(f"{name}: not sent to the model ({file['not_sent']})")
        else:
            lines.append(name)
    return tuple(lines)
