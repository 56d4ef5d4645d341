"""An in-memory platform for evaluation runs, after errbot's test backend: message in, card out,
click in, reply out.

:class:`EvalPlatform` is a :class:`bot.ports.PlatformAdapter` whose customer channel and review
desk keep everything in memory and wake waiters (an :class:`asyncio.Condition`) on every post,
so the runner waits for the event that proves a step happened instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bot.events import ThreadRef
from bot.ports import ReviewCard

if TYPE_CHECKING:
    from aiohttp import web

    from bot.ports import Core, PlatformAdapter, PlatformFactory
    from bot.settings import Settings

PLATFORM = "eval"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PostedReply:
    """A reply the core posted into a customer thread."""

    thread: ThreadRef
    text: str
    idempotency_key: str
    message_id: str


@dataclass(slots=True)
class DeskCard:
    """A card on the desk, with every version it was shown in (the first is the post)."""

    ref: str
    versions: list[ReviewCard] = field(default_factory=list)

    @property
    def latest(self) -> ReviewCard:
        return self.versions[-1]


class _Board:
    """The shared memory of one trial's platform: replies, cards, notices, and one condition."""

    def __init__(self) -> None:
        self.changed = asyncio.Condition()
        self.replies: list[PostedReply] = []
        self.cards: dict[str, DeskCard] = {}  # by draft id, in posting order
        self.refs: dict[str, str] = {}  # card ref -> draft id
        self.keys: dict[str, str] = {}  # card idempotency key -> card ref
        self.notices: list[str] = []
        self.pending_shown = 0

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, probe: Callable[[], _T | None], timeout: float) -> _T | None:
        """Wait until ``probe()`` returns something, or ``timeout`` seconds pass (then None)."""
        async with self.changed:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        found = probe()
                        if found is not None:
                            return found
                        await self.changed.wait()
            except TimeoutError:
                return probe()


class EvalChannel:
    """The customer's side: replies land in memory."""

    platform = PLATFORM

    def __init__(self, board: _Board) -> None:
        self._board = board

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str) -> str:
        for reply in self._board.replies:
            if reply.idempotency_key == idempotency_key:
                return reply.message_id  # the platform recognises a retried post
        message_id = f"m{len(self._board.replies) + 1}"
        self._board.replies.append(PostedReply(thread, text, idempotency_key, message_id))
        await self._board.notify()
        return message_id

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        for reply in self._board.replies:
            if reply.idempotency_key == idempotency_key:
                return reply.message_id
        return None

    async def show_pending(self, thread: ThreadRef) -> None:
        self._board.pending_shown += 1


class EvalDesk:
    """The agents' side: cards land in memory, each update appended to its card."""

    name = PLATFORM

    def __init__(self, board: _Board) -> None:
        self._board = board

    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        ref = f"card-{len(self._board.refs) + 1}"
        self._board.refs[ref] = card.draft_id
        self._board.keys[idempotency_key] = ref
        self._board.cards[card.draft_id] = DeskCard(ref, [card])
        await self._board.notify()
        return ref

    async def find_card(self, idempotency_key: str) -> str | None:
        return self._board.keys.get(idempotency_key)

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        draft_id = self._board.refs.get(ref)
        if draft_id is None:
            raise KeyError(f"no card {ref!r}")
        self._board.cards[draft_id].versions.append(card)
        await self._board.notify()

    async def post_notice(self, text: str) -> None:
        self._board.notices.append(text)
        await self._board.notify()


class EvalPlatform:
    """One trial's platform: the only customer channel and review desk the core gets."""

    name = PLATFORM

    def __init__(self) -> None:
        self.board = _Board()
        self._channel = EvalChannel(self.board)
        self._desk = EvalDesk(self.board)
        self.core: Core | None = None

    @property
    def customer_channel(self) -> EvalChannel:
        return self._channel

    @property
    def review_desk(self) -> EvalDesk:
        return self._desk

    @property
    def files(self) -> None:
        """None: a case's images come with their bytes, nothing is downloaded."""
        return None

    def routes(self) -> Sequence[web.RouteDef]:
        return ()

    @property
    def connected(self) -> bool:
        return self.core is not None

    async def reconnect(self) -> None:
        return None

    async def start(self, core: Core) -> None:
        self.core = core

    async def stop(self) -> None:
        self.core = None

    # -- what the runner reads ------------------------------------------------------------

    @property
    def replies(self) -> list[PostedReply]:
        return list(self.board.replies)

    def cards(self) -> list[DeskCard]:
        return list(self.board.cards.values())

    def factory(self) -> PlatformFactory:
        """A :class:`bot.ports.PlatformFactory` handing out this very platform."""

        def make(settings: Settings) -> PlatformAdapter | None:
            return self

        return make
