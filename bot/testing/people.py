"""The people of a test desk's scenario: a :class:`Customer` writes (message in), an
:class:`Agent` decides on cards and takes conversations (click in, what they were told out).

Both are handles the desk hands out (``desk.customer("kim")``, ``desk.agent("mgr")``), so a
scenario reads as the support floor would tell it::

    said = await desk.customer("kim").says("my chair from 40021 broke, refund please")
    told = await desk.agent("mgr").approve(await desk.card_for(said))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.events import Attachment, DecisionAction, Place
from bot.testing.drivers import Move, Saying

if TYPE_CHECKING:
    from bot.ports import ReviewCard
    from bot.testing.desk import TestDesk

__all__ = ["Agent", "Customer", "Said"]


@dataclass(frozen=True, slots=True)
class Said:
    """A customer message the desk delivered. ``thread`` is the driver's handle of the
    conversation; ``cards_before`` counts the cards shown before it (its card comes next);
    ``taken`` is False when the core said it would do nothing with it (an unwatched channel)."""

    customer: Customer
    text: str
    thread: str
    cards_before: int
    taken: bool = True


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer writing to the shop through the desk's platform."""

    desk: TestDesk
    name: str
    display_name: str = ""
    email: str = ""

    @property
    def user_id(self) -> str:
        return self.desk.driver.user_id(self.name)

    async def says(
        self,
        text: str,
        *,
        after: Said | None = None,
        channel: str = "",
        attachments: Sequence[Attachment] = (),
        place: Place = Place.PUBLIC,
    ) -> Said:
        """Write ``text``: a new conversation, or a follow-up in the thread of ``after``."""
        before = len(self.desk.board.cards)
        thread, taken = await self.desk.driver.say(
            Saying(self, text, after.thread if after else None, channel, tuple(attachments), place)
        )
        return Said(self, text, thread, before, taken)


@dataclass(frozen=True, slots=True)
class Agent:
    """A person on the review desk. Each verb is one click (or one submitted form) on a card and
    returns what the agent was told; whether they may is the core's call (the policy's lists)."""

    desk: TestDesk
    name: str

    @property
    def user_id(self) -> str:
        return self.desk.driver.user_id(self.name)

    # -- the draft on the card ------------------------------------------------------------

    async def approve(self, card: ReviewCard) -> str:
        """Click Approve."""
        return await self._make(card, Move(DecisionAction.APPROVE))

    async def edit(self, card: ReviewCard, text: str | None = None, *, refund_amount: str | None = None) -> str:
        """Submit the Edit form with ``text`` (the draft as it stands when None)."""
        return await self._make(card, Move(DecisionAction.EDIT, text=text, refund_amount=refund_amount))

    async def reject(self, card: ReviewCard, *, reason: str | None = None) -> str:
        return await self._make(card, Move(DecisionAction.REJECT, reason=reason))

    async def regenerate(self, card: ReviewCard, *, instruction: str | None = None) -> str:
        return await self._make(card, Move(DecisionAction.REGENERATE, instruction=instruction))

    # -- the card's conversation ----------------------------------------------------------

    async def take_over(self, card: ReviewCard) -> str:
        """Take the conversation over: the bot stops drafting in it."""
        return await self._make(card, Move(DecisionAction.TAKE_OVER))

    async def hand_back(self, card: ReviewCard) -> str:
        return await self._make(card, Move(DecisionAction.HAND_BACK))

    async def claim(self, card: ReviewCard) -> str:
        return await self._make(card, Move(DecisionAction.CLAIM))

    async def resolve(self, card: ReviewCard) -> str:
        return await self._make(card, Move(DecisionAction.RESOLVE))

    async def _make(self, card: ReviewCard, move: Move) -> str:
        return await self.desk.driver.decide(self.desk.board.cards[card.draft_id], move, self.user_id)
