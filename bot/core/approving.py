"""Approve and Edit on a draft: the reply to send, THE refund rule once more over the draft's
refunds as the orders are now, who may approve them (a manager, two different approvers), and then
either the first of two approvals kept or the draft approved with its refunds and its reply queued
in the outbox (as a direct message where the policy says so), all in the decision's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot import public_places
from bot.approval import check_draft_refunds, current_facts, is_manager
from bot.core.decided import Effects, already, decided_by
from bot.domain.measures import edit_distance
from bot.domain.outcome import AuditLine
from bot.domain.states import ActionStatus, DraftStatus, OutboxKind
from bot.events import Actor, DecisionAction, ReviewDecision
from bot.identity import refund_owner
from bot.policy import Policy
from bot.ports import DecisionOutcome
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store import outbox as outbox_rows
from bot.store import records
from bot.store.records import StoredAction
from bot.store.reviews import DraftUnderReview
from tools.money import Money
from tools.orders import OrderBackend
from tools.refunds import RefundVerdict


class Approving:
    """The Approve and Edit handler of :class:`bot.core.review.Decisions`."""

    def __init__(self, orders: OrderBackend) -> None:
        self.orders = orders

    async def approve(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        try:
            text = _reply_text(draft, decision, policy)
            refunds = [a for a in await records.actions_of(conn, draft.id, status=ActionStatus.PROPOSED) if a.allowed]
            amounts = _amounts(decision, refunds)
            verdicts = await self._recheck(conn, draft, refunds, amounts, policy, now, effects)
            approvals = _approvals(refunds, amounts, verdicts, decision.actor, policy)
        except Refused as refused:
            return DecisionOutcome(False, str(refused))
        if any(a.first_of_two for a in approvals):
            return await self._first_of_two(conn, draft, decision, text, approvals, now)
        return await self._approved(conn, draft, decision, text, approvals, now, effects, policy)

    @staticmethod
    async def _first_of_two(
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        text: str,
        approvals: list[RefundApproval],
        now: datetime,
    ) -> DecisionOutcome:
        """The first of two approvers: the approvals (and amounts) are kept, nothing is sent."""
        actor = decision.actor
        for a in approvals:
            await records.amend_proposal(
                conn,
                a.action.id,
                proposal=a.action.proposal.approve(a.amount),
                approvals=[actor.id] if a.first_of_two else list(a.action.approvals),
            )
        changes: dict[str, object] = {"edited_text": text} if decision.action is DecisionAction.EDIT else {}
        await draft_rows.touch(conn, draft.id, now, **changes)
        await records.add_audit(
            conn, [AuditLine(draft.conversation_id, draft.id, "approval", actor.id, "first of two approvals")], now
        )
        return DecisionOutcome(True, "Your approval is recorded; a second approver is needed before anything is sent.")

    async def _approved(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        text: str,
        approvals: list[RefundApproval],
        now: datetime,
        effects: Effects,
        policy: Policy,
    ) -> DecisionOutcome:
        """The draft is approved (or edited): its refunds too, and the reply goes to the outbox
        (as a direct message when the policy says so for the conversation's place)."""
        actor = decision.actor
        edited = decision.action is DecisionAction.EDIT or bool(draft.edited_text)
        target = DraftStatus.EDITED if edited else DraftStatus.APPROVED
        values: dict[str, object] = await decided_by(conn, draft, decision, now)
        values["edit_distance"] = edit_distance(draft.text, text)
        if decision.action is DecisionAction.EDIT:
            values["edited_text"] = text
        if not await draft_rows.transition(conn, draft.id, DraftStatus.AWAITING_REVIEW, target, now, **values):
            return DecisionOutcome(False, already(draft))
        for a in approvals:
            await records.move_action(
                conn,
                a.action.id,
                ActionStatus.PROPOSED,
                ActionStatus.APPROVED,
                proposal=a.action.proposal.approve(a.amount),
                approvals=[*a.approvers, actor.id],
            )
        direct = public_places.by_direct_message(draft.place, policy.identity, draft.notice)
        kind = OutboxKind.DIRECT_REPLY if direct else OutboxKind.REPLY
        await outbox_rows.enqueue(conn, draft.id, draft.conversation_id, draft.thread_key, text, now, kind=kind)
        await records.add_audit(
            conn, [AuditLine(draft.conversation_id, draft.id, target.value, actor.id, text[:200])], now
        )
        effects.deliver = True
        return DecisionOutcome(
            True,
            ("Approved; the reply is on its way" if not approvals else "Approved; refund and reply are on their way")
            + (" (by direct message)." if direct else "."),
        )

    async def _recheck(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        actions: list[StoredAction],
        amounts: list[Money],
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> list[RefundVerdict]:
        """THE refund rule over the draft's refunds together, as the orders are now."""
        if not actions:
            return []
        conversation = await conversation_rows.load_conversation(conn, draft.conversation_id)
        proposals = [a.proposal for a in actions]
        verdicts = await check_draft_refunds(
            conn,
            effects.order_facts or await current_facts(self.orders, proposals),
            policy,
            checked_ids=[a.id for a in actions],
            verified_customer_id=refund_owner(conversation, proposals),
            refunds=[p.request(amount) for p, amount in zip(proposals, amounts, strict=True)],
            now=now,
        )
        return list(verdicts)


class Refused(Exception):
    """A click the rules refuse; the message says why (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class RefundApproval:
    """One refund as a click approves it: the amount, the earlier approvers that still count,
    and whether this is the first of two approvals it needs."""

    action: StoredAction
    amount: Money
    approvers: list[str]
    first_of_two: bool


def _reply_text(draft: DraftUnderReview, decision: ReviewDecision, policy: Policy) -> str:
    """The reply an approval sends: the draft, a first approver's edit, or this click's edit."""
    if decision.action is not DecisionAction.EDIT:
        return draft.edited_text or draft.text  # a first approver's edit stands until changed
    text = (decision.edited_text or "").strip()
    if not text:
        raise Refused("The edited reply is empty; nothing was sent.")
    if len(text) > policy.limits.max_reply_chars:
        raise Refused(f"The edited reply is longer than {policy.limits.max_reply_chars} characters.")
    return text


def _amounts(decision: ReviewDecision, refunds: list[StoredAction]) -> list[Money]:
    """What each refund is approved for: what it stands for, or the amount the agent typed."""
    if decision.refund_amount in (None, ""):
        return [a.proposal.due for a in refunds]
    try:
        currency = refunds[0].proposal.amount.currency if refunds else ""
        edited = Money.parse(decision.refund_amount or "", currency)
    except ValueError:
        raise Refused(f"{decision.refund_amount!r} is not an amount.") from None
    if len(refunds) != 1:
        raise Refused("There is no single refund proposal whose amount could be edited.")
    return [edited]


def _approvals(
    refunds: list[StoredAction], amounts: list[Money], verdicts: list[RefundVerdict], actor: Actor, policy: Policy
) -> list[RefundApproval]:
    """Each refund as ``actor`` may approve it under the verdicts, or :class:`Refused`."""
    approvals = []
    for action, amount, verdict in zip(refunds, amounts, verdicts, strict=True):
        if not verdict.allowed:
            raise Refused(f"Refused: the refund {verdict.reason}. Nothing was sent.")
        if verdict.needs_manager and not is_manager(actor, policy):
            raise Refused(f"Refused: a refund of {amount.format(currency=False)} needs a manager's approval.")
        approvers = list(action.approvals)
        if verdict.needs_two_approvers:
            # Both approvals must be for the same amount: a changed amount starts over.
            earlier = action.proposal.approved
            approvers = approvers if earlier is None or earlier == amount else []
            if actor.id in approvers:
                raise Refused("You already approved this refund; a different approver is needed.")
        approvals.append(RefundApproval(action, amount, approvers, verdict.needs_two_approvers and not approvers))
    return approvals
