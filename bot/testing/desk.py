"""The test desk: the real core with a customer channel and a review desk the scenario drives,
after errbot's test backend (every feature is message in, message out) and procrastinate's
in-memory connector (shipped in the package, so anyone can test their rules the same way).

A scenario reads as a support conversation::

    async with TestDesk.open(desk_settings(tmp_path, kimi.base_url, KEY, policy=POLICY)) as desk:
        await desk.import_orders(rows)
        said = await desk.customer("kim").says("my chair from 40021 broke, refund please")
        card = await desk.card_for(said)
        assert "needs a manager" in card.proposals[0].verdict
        told = await desk.approve(card, as_="U_AGENT")
        assert "needs a manager" in told and desk.replies_to(said) == []

It starts :class:`bot.app.Supportbot` as ``supportbot run`` does (a real SQLite file, the policy
file, Kimi at ``KIMI_BASE_URL``: a simulator on loopback in tests) and asserts on what a person
would notice: the :class:`~bot.ports.ReviewCard` each draft shows, what the approver is told, the
replies posted and the refunds made. The desk touches the core only as ``Supportbot`` (start,
stop), the :class:`~bot.ports.Core` surface and the ports it implements, and the shop's tables
(orders imported, refunds read): never the drafting internals.

By default the platform lives in memory (:class:`MemoryDriver`). Another :class:`Driver` runs the
same scenario through a real adapter (the tests have one for Slack and one for Discord over their
fake platforms): it delivers the customer's message and the agent's click the platform's way, reads
the replies where the platform shows them, and the adapter's review desk keeps its cards on the
board (:func:`bot.testing.memory.recording`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import SecretStr
from sqlalchemy import select

from bot.app import Supportbot
from bot.events import (
    Actor,
    Attachment,
    Author,
    DecisionAction,
    InboundMessage,
    MessageKind,
    Place,
    ReviewDecision,
    ThreadRef,
)
from bot.ports import CardState, Core, PlatformFactory, ReviewCard
from bot.settings import Settings
from bot.testing.memory import Board, DeskCard, MemoryPlatform
from tools import import_orders
from tools.orders import order_refunds_table

__all__ = ["Customer", "Driver", "MemoryDriver", "Move", "Said", "Saying", "TestDesk", "desk_settings", "until"]

_T = TypeVar("_T")

#: How long a scenario waits for a card, a reply or an answer before it fails.
WAIT_SECONDS = 10.0


def desk_settings(workdir: Path, kimi_url: str, kimi_key: str, *, policy: str = "", **overrides: Any) -> Settings:
    """Settings for a desk in ``workdir``: a SQLite file and ``policy`` as the policy file there,
    Kimi at ``kimi_url``, the HTTP server on a free loopback port; ``overrides`` win."""
    (workdir / "policy.toml").write_text(policy, encoding="utf-8")
    values: dict[str, Any] = {
        "moonshot_api_key": SecretStr(kimi_key),
        "kimi_base_url": kimi_url,
        "kimi_model": "kimi-k2.5",
        "kimi_timeout_seconds": 5.0,
        "database_url": f"sqlite+aiosqlite:///{workdir / 'supportbot.db'}",
        "policy_file": workdir / "policy.toml",
        "policy_reload_seconds": 0.2,
        "host": "127.0.0.1",
        "port": 0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


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
        n = next(self._events)
        thread = message.thread
        if thread is None:
            thread = f"t{n}"
            self._threads[thread] = ThreadRef(self.platform, "W-DESK", message.channel or "C-SUPPORT", thread)
        ref = self._threads[thread]
        customer = message.customer
        inbound = InboundMessage(
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
        return thread, await self._core().receive(inbound)

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

    def _core(self) -> Core:
        if self._bot is None or self._bot.core is None:
            raise RuntimeError("the desk is not open")
        return self._bot.core


class TestDesk:
    """The running bot, seen from a support floor: customers write, cards show, agents decide."""

    __test__ = False  # not a pytest test class, whatever module imports it

    def __init__(self, bot: Supportbot, driver: Driver, board: Board) -> None:
        self.bot = bot
        self.driver = driver
        self.board = board

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, driver: Driver | None = None, orders: Sequence[Mapping[str, Any]] = ()
    ) -> AsyncIterator[TestDesk]:
        """Start the bot with ``settings`` on ``driver``'s platform (in memory by default), with
        ``orders`` imported; stop it (letting background work finish) after."""
        driver = driver if driver is not None else MemoryDriver()
        board = Board()
        bot = Supportbot(settings, factories=driver.factories(board))
        await bot.start()
        try:
            desk = cls(bot, driver, board)
            await driver.attach(bot)
            if orders:
                await desk.import_orders(orders)
            yield desk
        finally:
            await bot.stop()

    # -- people ---------------------------------------------------------------------------

    def customer(self, name: str, *, display_name: str = "", email: str = "") -> Customer:
        """A customer; ``email`` is what their platform profile shares (Slack's users.info)."""
        return Customer(self, name, display_name, email)

    def account(self, person: str) -> str:
        """``person``'s account as the orders file links it (``desk:kim``, ``slack:U222``)."""
        return f"{self.driver.platform}:{self.driver.user_id(person)}"

    # -- the shop -------------------------------------------------------------------------

    async def import_orders(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Import ``rows`` as the shop's orders export (``supportbot orders import``)."""
        path = self.bot.settings.policy_file.parent / "orders.jsonl"
        path.write_text("\n".join(json.dumps(dict(r)) for r in rows) + "\n", encoding="utf-8")
        await import_orders(self.bot.engine, path)

    async def refunds(self, order_id: str) -> list[int]:
        """The refunds the shop made on ``order_id``, in cents, oldest first."""
        table = order_refunds_table
        async with self.bot.engine.connect() as conn:
            rows = await conn.execute(
                select(table.c.amount_cents).where(table.c.order_id == order_id).order_by(table.c.created_at)
            )
            return [int(r[0]) for r in rows]

    async def settle(self) -> None:
        """Let background work (drafting, refunds, sending) finish."""
        core = self.bot.core
        assert core is not None
        await core.settle(WAIT_SECONDS)

    # -- the review desk ------------------------------------------------------------------

    @property
    def cards(self) -> list[ReviewCard]:
        """Every card shown, as it looks now, in posting order."""
        return [c.latest for c in self.board.cards.values()]

    @property
    def notices(self) -> list[str]:
        return list(self.board.notices)

    async def card(self, index: int, timeout: float = WAIT_SECONDS) -> ReviewCard:
        """The ``index``-th card shown on the desk (0 is the first), once drafted."""

        def probe() -> ReviewCard | None:
            cards = list(self.board.cards.values())
            if len(cards) <= index or cards[index].latest.state is CardState.DRAFTING:
                return None
            return cards[index].latest

        found = await self.board.wait_for(probe, timeout)
        if found is None:
            raise AssertionError(f"card {index + 1} never showed; the desk has {len(self.board.cards)}")
        return found

    async def card_for(self, said: Said, timeout: float = WAIT_SECONDS) -> ReviewCard:
        """The card of the draft answering ``said`` (the next one shown after it)."""
        return await self.card(said.cards_before, timeout)

    def versions(self, card: ReviewCard) -> list[ReviewCard]:
        """Every version ``card`` was shown in, first to latest."""
        return list(self.board.cards[card.draft_id].versions)

    async def latest(
        self, card: ReviewCard, until: Callable[[ReviewCard], bool] = lambda _: True, timeout: float = WAIT_SECONDS
    ) -> ReviewCard:
        """``card`` as the desk shows it now, once ``until`` holds for it."""

        def probe() -> ReviewCard | None:
            newest = self.board.cards[card.draft_id].latest
            return newest if until(newest) else None

        found = await self.board.wait_for(probe, timeout)
        if found is None:
            raise AssertionError(f"card {card.draft_id[:8]} never got there; it is {self.board.cards[card.draft_id]}")
        return found

    def thread_of(self, card: ReviewCard) -> list[str]:
        """What was posted in ``card``'s thread on the desk (SLA reminders), oldest first."""
        return list(self.board.cards[card.draft_id].thread)

    async def approve(self, card: ReviewCard, *, as_: str) -> str:
        """``as_`` clicks Approve; returns what they were told."""
        return await self._decide(card, Move(DecisionAction.APPROVE), as_)

    async def edit(
        self, card: ReviewCard, text: str | None = None, *, refund_amount: str | None = None, as_: str
    ) -> str:
        """``as_`` submits the Edit form with ``text`` (the draft as it stands when None)."""
        return await self._decide(card, Move(DecisionAction.EDIT, text=text, refund_amount=refund_amount), as_)

    async def reject(self, card: ReviewCard, *, as_: str, reason: str | None = None) -> str:
        return await self._decide(card, Move(DecisionAction.REJECT, reason=reason), as_)

    async def regenerate(self, card: ReviewCard, *, as_: str, instruction: str | None = None) -> str:
        return await self._decide(card, Move(DecisionAction.REGENERATE, instruction=instruction), as_)

    async def take_over(self, card: ReviewCard, *, as_: str) -> str:
        """``as_`` clicks Take over on ``card`` (its conversation); returns what they were told."""
        return await self._decide(card, Move(DecisionAction.TAKE_OVER), as_)

    async def hand_back(self, card: ReviewCard, *, as_: str) -> str:
        return await self._decide(card, Move(DecisionAction.HAND_BACK), as_)

    async def claim(self, card: ReviewCard, *, as_: str) -> str:
        return await self._decide(card, Move(DecisionAction.CLAIM), as_)

    async def resolve(self, card: ReviewCard, *, as_: str) -> str:
        return await self._decide(card, Move(DecisionAction.RESOLVE), as_)

    async def _decide(self, card: ReviewCard, move: Move, agent: str) -> str:
        return await self.driver.decide(self.board.cards[card.draft_id], move, self.driver.user_id(agent))

    # -- the customer's side --------------------------------------------------------------

    def replies_to(self, said: Said) -> list[str]:
        """The replies posted in the thread of ``said``, oldest first."""
        return self.driver.replies(said.thread)

    async def reply_to(self, said: Said, timeout: float = WAIT_SECONDS) -> str:
        """The first reply in the thread of ``said``, once posted."""
        return (await until(lambda: self.replies_to(said), f"a reply to {said.text!r}", timeout))[0]


async def until(probe: Callable[[], _T], what: str, timeout: float = WAIT_SECONDS) -> _T:
    """Poll ``probe`` until it returns something truthy, and return that; fail after ``timeout``.
    For what a fake platform records (a Slack ephemeral, a Discord reply), which wakes nobody."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = probe()
        if found:
            return found
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
