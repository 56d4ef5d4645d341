"""How a test desk reaches the core: a :class:`Driver` delivers a customer's message and an
agent's move the platform's way and reads the replies where the platform shows them.

:class:`MemoryDriver` is the platform in memory (the default); the tests add one for Slack and one
for Discord over their fake platforms, so the same scenario runs through a real adapter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from bot.events import (
    Actor,
    AgentCommand,
    Attachment,
    Author,
    DecisionAction,
    DraftRequest,
    InboundMessage,
    MessageKind,
    Place,
    ReviewDecision,
    ThreadRef,
)
from bot.testing.memory import Board, DeskCard, MemoryPlatform

if TYPE_CHECKING:
    from bot.app import Supportbot
    from bot.ports import Core, PlatformFactory
    from bot.testing.people import Customer

__all__ = ["Driver", "MemoryDriver", "Move", "Saying"]


@dataclass(frozen=True, slots=True)
class Saying:
    """A customer's message for a driver to deliver: in ``thread`` (None opens one), in
    ``channel`` (empty: the platform's support channel), in a ``place`` others can read or not."""

    customer: Customer
    text: str
    thread: str | None = None
    channel: str = ""
    attachments: tuple[Attachment, ...] = ()
    place: Place = Place.PUBLIC


@dataclass(frozen=True, slots=True)
class Move:
    """What an agent does with a card: the action and what goes with it."""

    action: DecisionAction
    text: str | None = None
    refund_amount: str | None = None
    instruction: str | None = None
    reason: str | None = None


class Driver(Protocol):
    """How a desk reaches the core: the platform the customer and the agents use."""

    platform: str

    def factories(self, board: Board) -> dict[str, PlatformFactory]:
        """The platforms the bot starts with; their review desks keep their cards on ``board``."""
        ...

    async def attach(self, bot: Supportbot) -> None:
        """Called once the bot runs (its port is known)."""
        ...

    def user_id(self, person: str) -> str:
        """The platform's id of the person a scenario calls ``person``."""
        ...

    async def say(self, message: Saying) -> tuple[str, bool]:
        """Deliver a customer's message; return its thread's handle, and False when the core is
        known to have ignored the message (True when only the platform knows)."""
        ...

    async def decide(self, card: DeskCard, move: Move, agent: str) -> str:
        """Make ``move`` on ``card`` as ``agent``; return what the agent was told."""
        ...

    def replies(self, thread: str) -> list[str]:
        """The replies posted in ``thread``, oldest first."""
        ...

    def direct_messages(self, person: str) -> list[str]:
        """What the bot sent ``person`` by direct message, oldest first."""
        ...


class MemoryDriver:
    """The platform in memory: messages go in through ``core.receive``, clicks through
    ``core.decide``, replies land on the board. Person names are the user ids."""

    def __init__(self, platform: str = "desk") -> None:
        self.platform = platform
        self.memory = MemoryPlatform(platform)
        self._bot: Supportbot | None = None
        self._threads: dict[str, ThreadRef] = {}
        self._events = itertools.count(1)

    def factories(self, board: Board) -> dict[str, PlatformFactory]:
        self.memory = MemoryPlatform(self.platform, board)
        return {self.platform: self.memory.factory()}

    async def attach(self, bot: Supportbot) -> None:
        self._bot = bot

    def user_id(self, person: str) -> str:
        return person

    async def say(self, message: Saying) -> tuple[str, bool]:
        thread, inbound = self._inbound(message)
        return thread, await self._core().receive(inbound)

    async def ask_draft(self, message: Saying, agent: str) -> tuple[str, str]:
        """``message`` is posted without mentioning the bot (the core never hears of it); then
        ``agent`` asks for a draft on it (Slack's message shortcut). Returns the thread's handle
        and what the agent was told."""
        thread, inbound = self._inbound(message)
        told = await self._core().draft_on_request(DraftRequest(Author(agent, agent), inbound))
        return thread, told

    async def command(self, agent: str, text: str, thread: str | None = None) -> str:
        """``agent`` types ``/supportbot <text>`` naming ``thread``; what they were told."""
        ref = self._threads.get(thread) if thread is not None else None
        return await self._core().agent_command(AgentCommand(Author(agent, agent), self.platform, text, ref))

    def _inbound(self, message: Saying) -> tuple[str, InboundMessage]:
        n = next(self._events)
        thread = message.thread
        if thread is None:
            thread = f"t{n}"
            self._threads[thread] = ThreadRef(self.platform, "W-DESK", message.channel or "C-SUPPORT", thread)
        ref = self._threads[thread]
        customer = message.customer
        return thread, InboundMessage(
            event_id=f"ev-{n}",
            thread=ref,
            message_id=f"cm{n}",
            author=Author(customer.user_id, customer.display_name or customer.name, email=customer.email),
            text=message.text,
            kind=MessageKind.MENTION if message.thread is None else MessageKind.FOLLOW_UP,
            sent_at=datetime.now(UTC),
            attachments=message.attachments,
            location=f"Desk · #{ref.channel}",
            place=message.place,
        )

    async def decide(self, card: DeskCard, move: Move, agent: str) -> str:
        core = self._core()
        draft_id = card.latest.draft_id
        text = move.text
        if move.action is DecisionAction.EDIT and text is None:
            form = await core.edit_form(draft_id)
            text = form.text if form is not None else ""
        decision = ReviewDecision(
            draft_id,
            move.action,
            Actor(self.platform, agent, agent),
            edited_text=text,
            reason=move.reason,
            instruction=move.instruction,
            refund_amount=move.refund_amount,
        )
        return (await core.decide(decision)).message

    def replies(self, thread: str) -> list[str]:
        return [r.text for r in self.memory.board.replies if r.thread.thread == thread]

    def direct_messages(self, person: str) -> list[str]:
        return [r.text for r in self.memory.board.replies if r.thread.channel == f"dm-{self.user_id(person)}"]

    def _core(self) -> Core:
        if self._bot is None or self._bot.core is None:
            raise RuntimeError("the desk is not open")
        return self._bot.core
