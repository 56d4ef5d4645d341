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
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot import metrics
from bot.approval import current_facts, may_approve
from bot.core import conversation_decisions, feedback
from bot.core.approving import Approving
from bot.core.decided import Effects, already, decided_by
from bot.core.edit_translation import translating_notice
from bot.core.translation import Translator
from bot.domain.outcome import AuditLine
from bot.domain.states import ActionStatus, ConversationOwner, DraftStatus
from bot.events import CONVERSATION_ACTIONS, DecisionAction, ReviewDecision
from bot.logs import log_event
from bot.policy import Policy, PolicyStore
from bot.ports import DecisionOutcome, EditForm
from bot.store import Database, pending_edits, records, utcnow
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store import translations as translation_rows
from bot.store.pending_edits import HeldEdit
from bot.store.reviews import DraftUnderReview, load_for_review, reply_text
from tools.orders import OrderBackend

log = logging.getLogger(__name__)

Handler = Callable[
    [AsyncConnection, DraftUnderReview, ReviewDecision, Policy, datetime, Effects], Awaitable[DecisionOutcome]
]


def _is_retry(decision: ReviewDecision, draft: DraftUnderReview) -> bool:
    return decision.action is DecisionAction.REGENERATE and draft.status is DraftStatus.FAILED


class Decisions:
    """Applies agents' decisions to drafts."""

    def __init__(
        self, db: Database, policy: PolicyStore, orders: OrderBackend, on_decided: Callable[[str, Effects], None]
    ) -> None:
        self.db = db
        self.policy = policy
        self.orders = orders
        self.on_decided = on_decided
        self.approving = Approving(orders)
        self.desks: set[str] = set()  # platforms with a review desk: a click there is from the review channel
        #: Translates an edit in the desk's language back into the customer's (the core wires it).
        self.translator: Translator | None = None
        #: How long the deciding instance owns an edit it holds for translation (the work lease).
        self.lease = timedelta(seconds=10)
        self._handlers: dict[DecisionAction, Handler] = {
            DecisionAction.APPROVE: self.approving.approve,
            DecisionAction.EDIT: self.approving.approve,
            DecisionAction.REJECT: self._reject,
            DecisionAction.REGENERATE: self._regenerate,
            **dict.fromkeys(CONVERSATION_ACTIONS, self._on_conversation),
        }

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
                effects.order_facts = await current_facts(self.orders, [a.proposal for a in proposed])
        on_desk = decision.actor.platform in self.desks
        language = await self._edit_language(decision, policy, on_desk)
        async with self.db.write(urgent=True) as conn:
            draft = await load_for_review(conn, decision.draft_id)
            if draft is None:
                return DecisionOutcome(False, "This draft does not exist (any more).")
            if not may_approve(decision.actor, policy, on_desk=on_desk):
                outcome = DecisionOutcome(False, _not_an_approver(on_desk))
            elif language is not None and draft.status is DraftStatus.AWAITING_REVIEW:
                outcome = await self._hold_edit(conn, draft, decision, language, now, effects)
            elif _is_retry(decision, draft):
                outcome = await self._retry(conn, draft, decision, now, effects)
            elif decision.action not in CONVERSATION_ACTIONS and draft.status is not DraftStatus.AWAITING_REVIEW:
                outcome = DecisionOutcome(False, already(draft))
            else:
                outcome = await self._handlers[decision.action](conn, draft, decision, policy, now, effects)
            await self._record(conn, draft, decision, outcome, now)
        shown_at = None if decision.action in CONVERSATION_ACTIONS else draft.shown_at
        metrics.decided(str(decision.action), outcome.ok, shown_at)
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

    async def _edit_language(self, decision: ReviewDecision, policy: Policy, on_desk: bool) -> str | None:
        """An Edit written in the desk's language for a customer who writes another: theirs, which
        the edit is translated into after the click (no model call here)."""
        if decision.action is not DecisionAction.EDIT or self.translator is None:
            return None
        if not may_approve(decision.actor, policy, on_desk=on_desk):
            return None  # refused in the transaction; nothing is translated for it
        return await self.translator.language_for_edit(decision.draft_id, decision.edited_text or "", policy)

    async def _hold_edit(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        language: str,
        now: datetime,
        effects: Effects,
    ) -> DecisionOutcome:
        """The edit is kept for its translation (:mod:`bot.core.edit_translation`), which goes on
        the card for approval: the agent approves the translation they can read beside it."""
        edit = HeldEdit(
            draft.id,
            (decision.edited_text or "").strip(),
            language,
            decision.actor.id,
            decision.actor.display_name or decision.actor.id,
        )
        if not await draft_rows.revise_under_review(conn, draft.id, now, notice=translating_notice(edit)):
            return DecisionOutcome(False, already(draft))
        await pending_edits.hold(conn, edit, now, self.lease)
        line = AuditLine(draft.conversation_id, draft.id, "edit_translating", decision.actor.id, edit.edit[:200])
        await records.add_audit(conn, [line], now)
        effects.translate = edit
        return DecisionOutcome(
            True, f"Your edit is being translated into {language}; the card shows it for approval in a moment."
        )

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
            conn,
            draft.id,
            DraftStatus.AWAITING_REVIEW,
            DraftStatus.REJECTED,
            now,
            **await decided_by(conn, draft, decision, now),
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
        return await self._draft_again(conn, draft, decision, now, effects, retry=False)

    async def _retry(
        self, conn: AsyncConnection, draft: DraftUnderReview, decision: ReviewDecision, now: datetime, effects: Effects
    ) -> DecisionOutcome:
        """Retry on a failed card: the same message is drafted again, unless a newer draft already
        answers it or a human answers the conversation (Hand back first)."""
        if await draft_rows.open_draft_covering(conn, draft.conversation_id, draft.message_id) is not None:
            return DecisionOutcome(False, "A newer draft for this conversation is already on its way.")
        life = await life_rows.load(conn, draft.conversation_id)
        if life is not None and life.owner is ConversationOwner.HUMAN:
            return DecisionOutcome(False, "A human answers this conversation; Hand back to the bot first.")
        return await self._draft_again(conn, draft, decision, now, effects, retry=True)

    async def _draft_again(
        self,
        conn: AsyncConnection,
        draft: DraftUnderReview,
        decision: ReviewDecision,
        now: datetime,
        effects: Effects,
        *,
        retry: bool,
    ) -> DecisionOutcome:
        """Regenerate (a draft under review) or Retry (a failed one): the draft is superseded and
        its message drafted again as the next revision, with the agent's instruction."""
        who = decision.actor.display_name or decision.actor.id
        moved = await draft_rows.transition(
            conn,
            draft.id,
            DraftStatus.FAILED if retry else DraftStatus.AWAITING_REVIEW,
            DraftStatus.SUPERSEDED,
            now,
            notice=f"{'Retried' if retry else 'Regenerated'} by {who}",
            **await decided_by(conn, draft, decision, now),
        )
        if not moved:
            return DecisionOutcome(False, already(draft))
        if not retry:
            await records.move_actions_of(conn, [draft.id], ActionStatus.PROPOSED, ActionStatus.SUPERSEDED)
        effects.new_draft = await draft_rows.insert_draft(
            conn,
            draft.conversation_id,
            draft.message_id,
            now,
            revision=draft.revision + 1,
            instruction=(decision.instruction or "").strip()[:500] or None,
        )
        kind = "retry" if retry else "regenerate"
        await records.add_audit(
            conn, [AuditLine(draft.conversation_id, draft.id, kind, decision.actor.id, decision.instruction or "")], now
        )
        return DecisionOutcome(True, "Drafting again." if retry else "A new draft is on its way.")

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
        if decided.outcome.ok and decision.action is DecisionAction.RESOLVE:
            await feedback.ask_csat(conn, draft.conversation_id, policy.feedback, now)
        effects.new_draft = decided.new_draft
        effects.cards.extend(decided.cards)
        return decided.outcome

    async def edit_form(self, draft_id: str) -> EditForm | None:
        async with self.db.read() as conn:
            text = await reply_text(conn, draft_id)
            if text is None:
                return None
            desk_language = self.policy.current.desk.language
            if desk_language:  # a reply translated for the card is edited in the desk's language
                text = (await translation_rows.cached(conn, [text], desk_language)).get(text, text)
            refunds = [a for a in await records.actions_of(conn, draft_id) if a.allowed]
        amount = refunds[0].proposal.due.format(currency=False) if len(refunds) == 1 else None
        return EditForm(draft_id=draft_id, text=text, refund_amount=amount)


def _not_an_approver(on_desk: bool) -> str:
    if on_desk:
        return "You are not on the policy's approver list for drafts."
    return (
        "Away from the review desk only an approver the policy names ([approvers] agents or managers) may decide;"
        " decide on the review desk instead."
    )
