"""An in-memory platform, after errbot's test backend: message in, card out, click in, reply out.

:class:`MemoryPlatform` is a :class:`bot.ports.PlatformAdapter` whose customer channel and review
desk keep everything on a :class:`Board` in memory and wake waiters (an :class:`asyncio.Condition`)
on every post, so a caller waits for the event that proves a step happened instead of sleeping.
The evaluation runner (one platform per trial) and :class:`bot.testing.TestDesk` share it.

:func:`recording` wraps a real adapter's factory instead: the adapter runs as in production and
every :class:`~bot.ports.ReviewCard` its review desk is given is also kept on a board, so the same
scenarios can assert on cards whichever platform renders them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bot.errors import DirectMessageRefused, PlatformNotFound
from bot.events import ThreadRef
from bot.ports import ReviewCard

if TYPE_CHECKING:
    from aiohttp import web

    from bot.ports import Core, CustomerChannel, FileFetcher, PlatformAdapter, PlatformFactory, ReviewDesk
    from bot.settings import Settings

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PostedReply:
    """A reply the core posted into a customer thread."""

    thread: ThreadRef
    text: str
    idempotency_key: str
    message_id: str
    feedback_for: str = ""  # the draft the reply's 👍 / 👎 rate (empty: no buttons)


@dataclass(slots=True)
class DeskCard:
    """A card on the desk, with every version it was shown in (the first is the post), and the
    posts in its thread (SLA reminders: ``"@<on-call id> <text>"``, or the text alone)."""

    ref: str
    versions: list[ReviewCard] = field(default_factory=list)
    thread: list[str] = field(default_factory=list)

    @property
    def latest(self) -> ReviewCard:
        return self.versions[-1]


class Board:
    """What one platform showed: replies, cards, notices, and one condition to wait on."""

    def __init__(self) -> None:
        self.changed = asyncio.Condition()
        self.replies: list[PostedReply] = []
        self.cards: dict[str, DeskCard] = {}  # by draft id, in posting order
        self.refs: dict[str, str] = {}  # card ref -> draft id
        self.keys: dict[str, str] = {}  # card idempotency key -> card ref
        self.notices: list[str] = []
        self.pending_shown = 0
        #: The users who accept no direct message (opening one is refused).
        self.closed_dms: set[str] = set()
        #: Cleared: a posted reply shows at once but the platform's answer to the post waits for
        #: it (a slow API), so the customer can click on a reply the bot has not yet seen sent.
        self.post_answered = asyncio.Event()
        self.post_answered.set()

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

    async def card_posted(self, ref: str, card: ReviewCard, idempotency_key: str) -> None:
        self.refs[ref] = card.draft_id
        self.keys[idempotency_key] = ref
        self.cards[card.draft_id] = DeskCard(ref, [card])
        await self.notify()

    async def card_updated(self, ref: str, card: ReviewCard) -> None:
        draft_id = self.refs.get(ref)
        if draft_id is None:
            raise PlatformNotFound("memory", f"no card {ref!r}")
        self.cards[draft_id].versions.append(card)
        await self.notify()

    async def thread_post(self, ref: str, text: str, on_call: str) -> None:
        draft_id = self.refs.get(ref)
        if draft_id is None:
            raise KeyError(f"no card {ref!r}")
        self.cards[draft_id].thread.append(f"@{on_call} {text}" if on_call else text)
        await self.notify()


class MemoryChannel:
    """The customer's side: replies land on the board."""

    def __init__(self, board: Board, platform: str) -> None:
        self._board = board
        self.platform = platform

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        for reply in self._board.replies:
            if reply.idempotency_key == idempotency_key:
                return reply.message_id  # the platform recognises a retried post
        message_id = f"m{len(self._board.replies) + 1}"
        self._board.replies.append(PostedReply(thread, text, idempotency_key, message_id, feedback_for))
        await self._board.notify()
        await self._board.post_answered.wait()
        return message_id

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        for reply in self._board.replies:
            if reply.idempotency_key == idempotency_key:
                return reply.message_id
        return None

    async def show_pending(self, thread: ThreadRef) -> None:
        self._board.pending_shown += 1

    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        if user_id in self._board.closed_dms:
            raise DirectMessageRefused(self.platform, f"{user_id} accepts no direct messages")
        return ThreadRef(thread.platform, thread.workspace, f"dm-{user_id}", f"dm-{user_id}")


class MemoryDesk:
    """The agents' side: cards land on the board, each update appended to its card."""

    def __init__(self, board: Board, name: str) -> None:
        self._board = board
        self.name = name

    def cards_changed(self) -> None:
        """The board is the only list of cards here."""

    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        ref = f"card-{len(self._board.refs) + 1}"
        await self._board.card_posted(ref, card, idempotency_key)
        return ref

    async def find_card(self, idempotency_key: str) -> str | None:
        return self._board.keys.get(idempotency_key)

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        await self._board.card_updated(ref, card)

    async def post_notice(self, text: str) -> None:
        self._board.notices.append(text)
        await self._board.notify()

    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        await self._board.thread_post(ref, text, on_call)


class MemoryPlatform:
    """A platform named ``name`` living in memory: the customer channel and review desk the core
    gets. Accounts on it read ``<name>:<user id>`` (``eval:U1`` in an evaluation run)."""

    def __init__(self, name: str = "desk", board: Board | None = None) -> None:
        self.name = name
        self.board = board if board is not None else Board()
        self._channel = MemoryChannel(self.board, name)
        self._desk = MemoryDesk(self.board, name)
        self.core: Core | None = None

    @property
    def customer_channel(self) -> MemoryChannel:
        return self._channel

    @property
    def review_desk(self) -> MemoryDesk:
        return self._desk

    @property
    def desk_preferred(self) -> bool:
        return False

    @property
    def files(self) -> None:
        """None: attachments come with their bytes, nothing is downloaded."""
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

    # -- what a caller reads --------------------------------------------------------------

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


class RecordingDesk:
    """A real review desk that also keeps every card it is given on a board."""

    def __init__(self, inner: ReviewDesk, board: Board) -> None:
        self._inner = inner
        self._board = board
        self.name = inner.name

    def cards_changed(self) -> None:
        self._inner.cards_changed()

    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        ref = await self._inner.post_card(card, idempotency_key=idempotency_key)
        await self._board.card_posted(ref, card, idempotency_key)
        return ref

    async def find_card(self, idempotency_key: str) -> str | None:
        return await self._inner.find_card(idempotency_key)

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        await self._inner.update_card(ref, card)
        if ref in self._board.refs:
            await self._board.card_updated(ref, card)

    async def post_notice(self, text: str) -> None:
        await self._inner.post_notice(text)
        self._board.notices.append(text)
        await self._board.notify()

    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        await self._inner.post_in_card_thread(ref, text, on_call=on_call)
        if ref in self._board.refs:
            await self._board.thread_post(ref, text, on_call)


class _Recorded:
    """A real adapter, unchanged but for its review desk, which records onto a board."""

    def __init__(self, inner: PlatformAdapter, board: Board) -> None:
        self._inner = inner
        self._board = board
        self.name = inner.name
        self._desk: RecordingDesk | None = None

    @property
    def customer_channel(self) -> CustomerChannel:
        return self._inner.customer_channel

    @property
    def review_desk(self) -> ReviewDesk | None:
        inner = self._inner.review_desk
        if inner is None:
            return None
        if self._desk is None:
            self._desk = RecordingDesk(inner, self._board)
        return self._desk

    @property
    def desk_preferred(self) -> bool:
        return self._inner.desk_preferred

    @property
    def files(self) -> FileFetcher | None:
        return self._inner.files

    def routes(self) -> Sequence[web.RouteDef]:
        return self._inner.routes()

    @property
    def connected(self) -> bool:
        return self._inner.connected

    async def reconnect(self) -> None:
        await self._inner.reconnect()

    async def start(self, core: Core) -> None:
        await self._inner.start(core)

    async def stop(self) -> None:
        await self._inner.stop()


def recording(factory: PlatformFactory, board: Board) -> PlatformFactory:
    """``factory``'s adapter with its review desk's cards also kept on ``board``."""

    def make(settings: Settings) -> PlatformAdapter | None:
        adapter = factory(settings)
        return None if adapter is None else _Recorded(adapter, board)

    return make
