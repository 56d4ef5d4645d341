"""The decisions about a card's conversation rather than its draft: Take over, Hand back, Claim,
Resolve. Each is one compare-and-set on the conversation's life (:mod:`bot.store.life`) inside
the review desk's decision transaction (:mod:`bot.core.review` checks who may click first); the
conversation's cards are marked to be refreshed, and the audit trail keeps the click."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.outcome import AuditLine
from bot.domain.states import ConversationOwner, ConversationStatus
from bot.events import Actor, DecisionAction
from bot.ports import DecisionOutcome
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store import records
from bot.store.life import Life


@dataclass(frozen=True, slots=True)
class Click:
    """A conversation button clicked on the card of ``draft_id``."""

    action: DecisionAction
    conversation_id: str
    draft_id: str
    actor: Actor
    now: datetime

    @property
    def who(self) -> str:
        return self.actor.display_name or self.actor.id


@dataclass(slots=True)
class Decided:
    """The outcome, a draft the decision started, and the other cards to refresh."""

    outcome: DecisionOutcome
    new_draft: str | None = None
    cards: list[str] = field(default_factory=list)


GONE = DecisionOutcome(False, "This conversation does not exist (any more).")


async def decide(conn: AsyncConnection, click: Click) -> Decided:
    """Apply one conversation click; on success its cards show it and the audit keeps it."""
    life = await life_rows.load(conn, click.conversation_id)
    if life is None:
        return Decided(GONE)
    decided = await _DECIDERS[click.action](conn, click, life)
    if decided.outcome.ok:
        await life_rows.touch_card(conn, click.draft_id, click.now)
        newest = await life_rows.latest_card(conn, click.conversation_id)
        if newest is not None and newest != click.draft_id:
            await life_rows.touch_card(conn, newest, click.now)
            decided.cards.append(newest)
        line = AuditLine(click.conversation_id, click.draft_id, click.action.value, click.actor.id, click.who)
        await records.add_audit(conn, [line], click.now)
    return decided


async def _take_over(conn: AsyncConnection, click: Click, life: Life) -> Decided:
    if life.owner is ConversationOwner.HUMAN:
        if life.assignee_id == click.actor.id:
            return Decided(DecisionOutcome(False, "You already answer this conversation."))
        if not await life_rows.assign(
            conn, life.conversation_id, life.assignee_id, click.actor.id, click.who, click.now
        ):
            return Decided(DecisionOutcome(False, "Someone else changed this conversation just now; look again."))
    elif not await life_rows.move_owner(
        conn,
        life.conversation_id,
        ConversationOwner.BOT,
        ConversationOwner.HUMAN,
        click.now,
        reason=f"taken over by {click.who}",
        assignee_id=click.actor.id,
        assignee=click.who,
    ):
        return Decided(DecisionOutcome(False, "Someone else took this conversation over just now."))
    return Decided(
        DecisionOutcome(True, "You answer this conversation now; the bot drafts nothing there until Hand back.")
    )


async def _hand_back(conn: AsyncConnection, click: Click, life: Life) -> Decided:
    if not await life_rows.move_owner(
        conn, life.conversation_id, ConversationOwner.HUMAN, ConversationOwner.BOT, click.now, reason=""
    ):
        return Decided(DecisionOutcome(False, "The bot already drafts in this conversation."))
    waiting = await life_rows.unanswered_customer_message(conn, life.conversation_id)
    if waiting is None:
        return Decided(DecisionOutcome(True, "Handed back: the bot drafts the next answer."))
    # The customer waits for an answer: the bot drafts it now, seeing what the agent wrote.
    await draft_rows.supersede_open(conn, life.conversation_id, "the hand-back", click.now)
    fresh = await draft_rows.insert_draft(conn, life.conversation_id, waiting, click.now)
    return Decided(
        DecisionOutcome(True, "Handed back: the bot drafts the answer to the customer's last message."), fresh
    )


async def _claim(conn: AsyncConnection, click: Click, life: Life) -> Decided:
    if life.assignee_id == click.actor.id:
        return Decided(DecisionOutcome(False, "This conversation is already assigned to you."))
    if not await life_rows.assign(conn, life.conversation_id, life.assignee_id, click.actor.id, click.who, click.now):
        return Decided(DecisionOutcome(False, "Someone else claimed this conversation just now."))
    return Decided(DecisionOutcome(True, "Claimed: the conversation is assigned to you."))


async def _resolve(conn: AsyncConnection, click: Click, life: Life) -> Decided:
    if life.status is ConversationStatus.RESOLVED:
        return Decided(DecisionOutcome(False, "This conversation is already resolved."))
    if not await life_rows.move_status(conn, life.conversation_id, life.status, ConversationStatus.RESOLVED, click.now):
        return Decided(DecisionOutcome(False, "The conversation changed just now; look again."))
    return Decided(DecisionOutcome(True, "Resolved; the customer writing again reopens it."))


_DECIDERS: dict[DecisionAction, Callable[[AsyncConnection, Click, Life], Awaitable[Decided]]] = {
    DecisionAction.TAKE_OVER: _take_over,
    DecisionAction.HAND_BACK: _hand_back,
    DecisionAction.CLAIM: _claim,
    DecisionAction.RESOLVE: _resolve,
}
