"""Review decisions: Approve, Edit, Reject, Regenerate on a draft, and Take over, Hand back,
Claim, Resolve on the draft's conversation, each a handler in a table.

A decision is one transaction: the compare-and-set on the draft's status (the first click wins,
the rest are told who was first), the decision record, the audit line and, on approval, the
outbox row. It returns once committed, so an adapter can acknowledge the click knowing it is
kept; anything after (the card refresh, the delivery, a new draft) is handed to other rooms.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import metrics
from bot.approval import (
    RefundVerdict,
    amount_of,
    check_draft_refunds,
    current_facts,
    is_manager,
    may_approve,
    money,
    parse_amount,
    verdicts_of,
)
from bot.core import conversation_decisions
from bot.domain.states import ActionStatus, DraftStatus
from bot.events import CONVERSATION_ACTIONS, DecisionAction, ReviewDecision
from bot.identity import refund_owner
from bot.logs import log_event
from bot.policy import Policy, PolicyStore
from bot.ports import DecisionOutcome, EditForm
from bot.store import Database, records, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store import outbox as outbox_rows
from bot.store.records import AuditLine, StoredAction
from bot.store.schema import Conversation, Draft
from tools.orders import OrderBackend
from tools.refunds import OrderFacts

log = logging.getLogger(__name__)

_ALREADY = {
    DraftStatus.APPROVED: "approved",
    DraftStatus.EDITED: "edited and approved",
    DraftStatus.SENT: "approved and sent",
    DraftStatus.REJECTED: "rejected",
    DraftStatus.SUPERSEDED: "superseded",
    DraftStatus.FAILED: "marked failed",
    DraftStatus.DRAFTING: "still being drafted",
    DraftStatus.SEND_FAILED: "approved, but sending failed",
}


@dataclass(slots=True)
class DraftUnderReview:
    """The draft a decision is about, as read inside the decision's transaction."""

    id: str
    conversation_id: str
    thread_key: str
    message_id: int
    status: DraftStatus
    revision: int
    text: str
    edited_text: str | None
    decided_by: str


@dataclass(slots=True)
class Effects:
    """What must happen once the decision has committed."""

    refresh: bool = True
    deliver: bool = False
    new_draft: str | None = None
    #: Other cards to refresh (the conversation's newest, after a conversation decision).
    cards: list[str] = field(default_factory=list)
    #: The orders the draft's refunds name, fetched fresh before the transaction.
    order_facts: dict[str, OrderFacts] = field(default_factory=dict)


Handler = Callable[
    [AsyncConnection, DraftUnderReview, ReviewDecision, Policy, datetime, Effects], Awaitable[DecisionOutcome]
]


def already(draft: DraftUnderReview) -> str:
    who = f" by {draft.decided_by}" if draft.decided_by else ""
    return f"This draft was already {_ALREADY.get(draft.status, draft.status.value)}{who}."


class ReviewDesk:
    """Applies agents' decisions to drafts (named after the place agents decide in)."""

    def __init__(
        self, db: Database, policy: PolicyStore, orders: OrderBackend, on_decided: Callable[[str, Effects], None]
    ) -> None:
        self.db = db
        self.policy = policy
        self.orders = orders
        self.on_decided = on_decided
        self.desks: set[str] = set()  # platforms with a review desk: a click there is from the review channel
        self._handlers: dict[DecisionAction, Handler] = {
            DecisionAction.APPROVE: self._approve,
            DecisionAction.EDIT: self._approve,
            DecisionAction.REJECT: self._reject,
            DecisionAction.REGENERATE: self._regenerate,
            **dict.fromkeys(CONVERSATION_ACTIONS, self._on_conversation),
        }

    async def _load(self, conn: AsyncConnection, draft_id: str) -> DraftUnderReview | None:
        d, c = Draft.__table__.c, Conversation.__table__.c
        query = (
            select(
                d.id,
                d.conversation_id,
                c.thread_key,
                d.message_id,
                d.status,
                d.revision,
                d.text,
                d.edited_text,
                d.decided_by,
            )
            .join(Conversation.__table__, c.id == d.conversation_id)
            .where(d.id == draft_id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=Draft.__table__)
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        return DraftUnderReview(
            row.id,
            row.conversation_id,
            row.thread_key,
            row.message_id,
            DraftStatus(row.status),
            row.revision,
            row.text,
            row.edited_text,
            row.decided_by,
        )

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        """Apply one click. Raises when the decision could not be recorded (the database is
        unavailable): the adapter then tells the clicker to click again."""
        policy = self.policy.current
        now = utcnow()
        effects = Effects()
        if decision.action in (DecisionAction.APPROVE, DecisionAction.EDIT):
            # The shop is asked before the write transaction (it may be a remote service).
            async with self.db.read() as conn:
                proposed = await records.actions_of(conn, decision.draft_id, status=ActionStatus.PROPOSED)
            if proposed:
                effects.order_facts = await current_facts(self.orders, [a.params for a in proposed])
        async with self.db.write() as conn:
            draft = await self._load(conn, decision.draft_id)
            if draft is None:
                return DecisionOutcome(False, "This draft does not exist (any more).")
            on_desk = decision.actor.platform in self.desks
            if not may_approve(decision.actor, policy, on_desk=on_desk):
                outcome = DecisionOutcome(False, _not_an_approver(on_desk))
            elif decision.action not in CONVERSATION_ACTIONS and draft.status is not DraftStatus.AWAITING_REVIEW:
                outcome = DecisionOutcome(False, already(draft))
            else:
                outcome = await self._handlers[decision.action](conn, draft, decision, policy, now, effects)
            await self._record(conn, draft, decision, outcome, now)
        metrics.decided(str(decision.action), outcome.ok)
        log_event(
            log,
            "decision",
            conversation=draft.conversation_id,
            draft=draft.id,
            platform=decision.actor.platform,
            action=str(decision.action),
            actor=decision.actor.id,
            accepted=outcome.ok,
            outcome=outcome.message,
        )
        self.on_decided(draft.id, effects)
        return outcome

    @staticmethod
    async def _record(
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        outcome: DecisionOutcome,
        now: datetime,
    ) -> None:
        """Every click is kept; refused ones also go to the audit trail (accepted ones leave
        their own state-change lines there)."""
        await records.add_decision(
            conn,
            {
                "draft_id": decision.draft_id,
                "action": str(decision.action),
                "actor_platform": decision.actor.platform,
                "actor_id": decision.actor.id,
                "actor_name": decision.actor.display_name,
                "accepted": outcome.ok,
                "message": outcome.message,
                "created_at": now,
            },
        )
        if not outcome.ok:
            actor = decision.actor.display_name or decision.actor.id
            await records.add_audit(
                conn,
                [AuditLine(draft.conversation_id, draft.id, f"{decision.action}_refused", actor, outcome.message)],
                now,
            )

    @staticmethod
    def _decided_by(decision: ReviewDecision, now: datetime) -> dict[str, object]:
        return {
            "decided_by": decision.actor.display_name or decision.actor.id,
            "decided_by_id": decision.actor.id,
            "decided_at": now,
        }

    async def _reject(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        moved = await draft_rows.transition(
            conn, draft.id, DraftStatus.AWAITING_REVIEW, DraftStatus.REJECTED, now, **self._decided_by(decision, now)
        )
        if not moved:
            return DecisionOutcome(False, already(draft))
        await records.move_actions_of(conn, [draft.id], ActionStatus.PROPOSED, ActionStatus.REJECTED)
        await records.add_audit(
            conn,
            [AuditLine(draft.conversation_id, draft.id, "reject", decision.actor.id, decision.reason or "rejected")],
            now,
        )
        return DecisionOutcome(True, "Rejected; nothing was sent.")

    async def _regenerate(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        who = decision.actor.display_name or decision.actor.id
        moved = await draft_rows.transition(
            conn,
            draft.id,
            DraftStatus.AWAITING_REVIEW,
            DraftStatus.SUPERSEDED,
            now,
            notice=f"Regenerated by {who}",
            **self._decided_by(decision, now),
        )
        if not moved:
            return DecisionOutcome(False, already(draft))
        await records.move_actions_of(conn, [draft.id], ActionStatus.PROPOSED, ActionStatus.SUPERSEDED)
        effects.new_draft = await draft_rows.insert_draft(
            conn,
            draft.conversation_id,
            draft.message_id,
            now,
            revision=draft.revision + 1,
            instruction=(decision.instruction or "").strip()[:500] or None,
        )
        await records.add_audit(
            conn,
            [AuditLine(draft.conversation_id, draft.id, "regenerate", decision.actor.id, decision.instruction or "")],
            now,
        )
        return DecisionOutcome(True, "A new draft is on its way.")

    async def _on_conversation(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        """Take over, Hand back, Claim, Resolve: :mod:`bot.core.conversation_decisions`."""
        click = conversation_decisions.Click(decision.action, draft.conversation_id, draft.id, decision.actor, now)
        decided = await conversation_decisions.decide(conn, click)
        effects.new_draft = decided.new_draft
        effects.cards.extend(decided.cards)
        return decided.outcome

    async def _approve(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        actor = decision.actor
        text = draft.edited_text or draft.text  # a first approver's edit stands until changed
        if decision.action is DecisionAction.EDIT:
            text = (decision.edited_text or "").strip()
            if not text:
                return DecisionOutcome(False, "The edited reply is empty; nothing was sent.")
            if len(text) > policy.limits.max_reply_chars:
                return DecisionOutcome(
                    False, f"The edited reply is longer than {policy.limits.max_reply_chars} characters."
                )
        refunds = [a for a in await records.actions_of(conn, draft.id, status=ActionStatus.PROPOSED) if a.allowed]
        edited_amount: int | None = None
        if decision.refund_amount not in (None, ""):
            edited_amount = parse_amount(decision.refund_amount or "")
            if edited_amount is None:
                return DecisionOutcome(False, f"{decision.refund_amount!r} is not an amount.")
            if len(refunds) != 1:
                return DecisionOutcome(False, "There is no single refund proposal whose amount could be edited.")
        first_of_two: list[StoredAction] = []
        approved: list[tuple[StoredAction, int, list[str]]] = []
        amounts = [edited_amount if edited_amount is not None else amount_of(a.params) for a in refunds]
        verdicts = await self._recheck(conn, draft, refunds, amounts, policy, now, effects)
        for action, amount, verdict in zip(refunds, amounts, verdicts, strict=True):
            earlier = action.params.get("approved_amount_cents")
            if not verdict.allowed:
                return DecisionOutcome(False, f"Refused: the refund {verdict.reason}. Nothing was sent.")
            if verdict.needs_manager and not is_manager(actor, policy):
                return DecisionOutcome(False, f"Refused: a refund of {money(amount)} needs a manager's approval.")
            approvers = list(action.approvals)
            if verdict.needs_two_approvers:
                # Both approvals must be for the same amount: a changed amount starts over.
                approvers = approvers if earlier in (None, amount) else []
                if actor.id in approvers:
                    return DecisionOutcome(False, "You already approved this refund; a different approver is needed.")
                if not approvers:
                    first_of_two.append(action)
            approved.append((action, amount, approvers))
        if first_of_two:
            for action, amount, _approvers in approved:
                await records.amend_proposal(
                    conn,
                    action.id,
                    params={**action.params, "approved_amount_cents": amount},
                    approvals=[actor.id] if action in first_of_two else action.approvals,
                )
            changes: dict[str, object] = {"edited_text": text} if decision.action is DecisionAction.EDIT else {}
            await draft_rows.touch(conn, draft.id, now, **changes)
            await records.add_audit(
                conn, [AuditLine(draft.conversation_id, draft.id, "approval", actor.id, "first of two approvals")], now
            )
            return DecisionOutcome(
                True, "Your approval is recorded; a second approver is needed before anything is sent."
            )
        edited = decision.action is DecisionAction.EDIT or bool(draft.edited_text)
        target = DraftStatus.EDITED if edited else DraftStatus.APPROVED
        values: dict[str, object] = self._decided_by(decision, now)
        if decision.action is DecisionAction.EDIT:
            values["edited_text"] = text
        if not await draft_rows.transition(conn, draft.id, DraftStatus.AWAITING_REVIEW, target, now, **values):
            return DecisionOutcome(False, already(draft))
        for action, amount, approvers in approved:
            await records.move_action(
                conn,
                action.id,
                ActionStatus.PROPOSED,
                ActionStatus.APPROVED,
                params={**action.params, "approved_amount_cents": amount},
                approvals=[*approvers, actor.id],
            )
        await outbox_rows.enqueue(conn, draft.id, draft.thread_key, text, now)
        await records.add_audit(
            conn, [AuditLine(draft.conversation_id, draft.id, target.value, actor.id, text[:200])], now
        )
        effects.deliver = True
        return DecisionOutcome(
            True,
            "Approved; the reply is on its way." if not refunds else "Approved; refund and reply are on their way.",
        )

    async def _recheck(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        actions: list[StoredAction],
        amounts: list[int],
        policy: Policy,
        now: datetime,
        effects: Effects,
    ) -> list[RefundVerdict]:
        """THE refund rule over the draft's refunds together, as the orders are now."""
        if not actions:
            return []
        conversation = await conversation_rows.load_conversation(conn, draft.conversation_id)
        params = [a.params for a in actions]
        batch = await check_draft_refunds(
            conn,
            effects.order_facts or await current_facts(self.orders, params),
            policy,
            checked_ids=[a.id for a in actions],
            verified_customer_id=refund_owner(conversation, params),
            refunds=[(a.params, amount) for a, amount in zip(actions, amounts, strict=True)],
            now=now,
        )
        return verdicts_of(batch)

    async def edit_form(self, draft_id: str) -> EditForm | None:
        d = Draft.__table__.c
        async with self.db.read() as conn:
            row = (await conn.execute(select(d.text, d.edited_text).where(d.id == draft_id))).first()
            if row is None:
                return None
            refunds = [a for a in await records.actions_of(conn, draft_id) if a.allowed]
        amount = money(refunds[0].amount_cents) if len(refunds) == 1 else None
        return EditForm(draft_id=draft_id, text=row.edited_text or row.text, refund_amount=amount)


def _not_an_approver(on_desk: bool) -> str:
    if on_desk:
        return "You are not on the policy's approver list for drafts."
    return (
        "Away from the review desk only an approver the policy names ([approvers] agents or managers) may decide;"
        " decide on the review desk instead."
    )
