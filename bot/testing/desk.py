"""The test desk: the real core with a customer channel and a review desk the scenario drives,
after errbot's test backend (every feature is message in, message out) and procrastinate's
in-memory connector (shipped in the package, so anyone can test their rules the same way).

A scenario reads as a support conversation::

    async with TestDesk.open(desk_settings(tmp_path, kimi.base_url, KEY, policy=POLICY)) as desk:
        await desk.import_orders(rows)
        said = await desk.customer("kim").says("my chair from 40021 broke, refund please")
        card = await desk.card_for(said)
        assert "needs a manager" in card.proposals[0].verdict
        told = await desk.agent("U_AGENT").approve(card)
        assert "needs a manager" in told and desk.replies_to(said) == []

It starts :class:`bot.app.Supportbot` as ``supportbot run`` does (a real SQLite file, the policy
file, Kimi at ``KIMI_BASE_URL``: a simulator on loopback in tests) and asserts on what a person
would notice: the :class:`~bot.ports.ReviewCard` each draft shows, what the approver is told, the
replies posted and the refunds made. Its people are handles it hands out (:mod:`bot.testing.people`):
a customer says something, an agent approves, edits, rejects, regenerates, takes over, hands back,
claims or resolves. The desk touches the core only as ``Supportbot`` (start,
stop), the :class:`~bot.ports.Core` surface and the ports it implements, and the shop's tables
(orders imported, refunds read): never the drafting internals.

By default the platform lives in memory (:class:`~bot.testing.drivers.MemoryDriver`). Another
:class:`~bot.testing.drivers.Driver` runs the
same scenario through a real adapter (the tests have one for Slack and one for Discord over their
fake platforms): it delivers the customer's message and the agent's click the platform's way, reads
the replies where the platform shows them, and the adapter's review desk keeps its cards on the
board (:func:`bot.testing.memory.recording`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr
from sqlalchemy import select

from bot.app import Supportbot
from bot.ports import CardState, ReviewCard
from bot.settings import Settings
from bot.testing.drivers import Driver, MemoryDriver
from bot.testing.memory import Board
from bot.testing.people import Agent, Customer, Said
from tools import import_orders
from tools.orders import order_refunds_table

__all__ = ["WAIT_SECONDS", "TestDesk", "desk_settings", "until"]

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
        cls,
        settings: Settings,
        *,
        driver: Driver | None = None,
        orders: Sequence[Mapping[str, Any]] = (),
        board: Board | None = None,
    ) -> AsyncIterator[TestDesk]:
        """Start the bot with ``settings`` on ``driver``'s platform (in memory by default), with
        ``orders`` imported; stop it (letting background work finish) after. A restart passes the
        same ``driver`` and the earlier run's ``board``: the platform outlives the bot, as Slack's
        channels do."""
        driver = driver if driver is not None else MemoryDriver()
        board = board if board is not None else Board()
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

    def agent(self, name: str) -> Agent:
        """A person on the review desk; what they may do is the policy's ``[approvers]`` call."""
        return Agent(self, name)

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
        await core.background.settle(WAIT_SECONDS)

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
            shown = self.board.cards.get(card.draft_id)  # None: not on this run's desk yet (a restart)
            newest = shown.latest if shown is not None else None
            return newest if newest is not None and until(newest) else None

        found = await self.board.wait_for(probe, timeout)
        if found is None:
            shown = self.board.cards.get(card.draft_id, "not shown")
            raise AssertionError(f"card {card.draft_id[:8]} never got there; it is {shown}")
        return found

    def thread_of(self, card: ReviewCard) -> list[str]:
        """What was posted in ``card``'s thread on the desk (SLA reminders), oldest first."""
        return list(self.board.cards[card.draft_id].thread)

    # -- the customer's side --------------------------------------------------------------

    def replies_to(self, said: Said) -> list[str]:
        """The replies posted in the thread of ``said``, oldest first."""
        return self.driver.replies(said.thread)

    def direct_messages(self, person: str) -> list[str]:
        """What the bot sent ``person`` by direct message, oldest first."""
        return self.driver.direct_messages(person)

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
