"""The playground's memory: the customer's threads and the review desk's cards.

Nothing here is a business rule: it keeps what the core posted (replies, cards, notices) so
the page can show it, and bumps :attr:`PlaygroundState.version` on every change so the page
knows when to redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.events import ThreadRef
from bot.ports import ReviewCard

PLATFORM = "playground"


@dataclass
class ChatLine:
    """One message in a customer thread, as the customer pane shows it."""

    id: str
    role: str  # "customer" or "support"
    text: str
    at: datetime
    attachments: tuple[str, ...] = ()
    key: str = ""
    images: tuple[str, ...] = ()  # ids of the uploaded images (:attr:`PlaygroundState.images`)
    by_hand: bool = False  # an agent's reply written by hand on the desk


@dataclass
class Thread:
    """One playground conversation."""

    ref: ThreadRef
    number: int
    lines: list[ChatLine] = field(default_factory=list)
    pending: bool = False
    #: The message a draft is being written for, until its card is up ("" when none).
    drafting: str = ""

    @property
    def location(self) -> str:
        return f"Playground · conversation {self.number}"


@dataclass(frozen=True)
class Image:
    """An image a customer uploaded, kept for its thumbnail."""

    content_type: str
    data: bytes


#: Images kept for thumbnails (the oldest is forgotten first).
MAX_IMAGES = 100


class PlaygroundState:
    """Threads, cards and notices, with a change counter the page long-polls on."""

    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.cards: dict[str, ReviewCard] = {}  # card ref -> the latest card
        self.notices: list[str] = []
        self.card_threads: dict[str, list[str]] = {}  # card ref -> posts in its thread (SLA reminders)
        self.images: dict[str, Image] = {}
        self.version = 0
        self.boot = uuid.uuid4().hex[:12]  # this run's id: a page from before a restart starts over
        self.closed = False
        self.waiting = 0  # pages waiting for a change right now
        self._changed = asyncio.Condition()
        self._numbers = itertools.count(1)
        self.current = self.new_thread()

    def new_thread(self) -> Thread:
        number = next(self._numbers)
        ref = ThreadRef(PLATFORM, "local", "web", f"t{number}-{uuid.uuid4().hex[:8]}")
        thread = Thread(ref, number)
        self.threads[ref.thread] = thread
        self.current = thread
        return thread

    def thread(self, ref: ThreadRef) -> Thread:
        found = self.threads.get(ref.thread)
        if found is None:  # a conversation from before a restart: shown again once it speaks
            found = Thread(ref, next(self._numbers))
            self.threads[ref.thread] = found
        return found

    def keep_image(self, image: Image) -> str:
        """Keep an uploaded image for its thumbnail; returns its id."""
        key = uuid.uuid4().hex
        self.images[key] = image
        while len(self.images) > MAX_IMAGES:
            del self.images[next(iter(self.images))]
        return key

    def card_of(self, draft_id: str) -> ReviewCard | None:
        return next((card for card in self.cards.values() if card.draft_id == draft_id), None)

    def cards_of(self, thread: Thread) -> list[ReviewCard]:
        """The thread's cards, oldest first."""
        return [card for card in self.cards.values() if card.thread == thread.ref]

    def pending_card(self) -> ReviewCard | None:
        """The newest card still waiting for a decision."""
        waiting = [card for card in self.cards.values() if card.actionable]
        return waiting[-1] if waiting else None

    async def changed(self) -> None:
        self.version += 1
        async with self._changed:
            self._changed.notify_all()

    async def wait_change(self, since: int, timeout: float) -> int:
        """Return once :attr:`version` is past ``since`` (or ``timeout`` seconds passed)."""
        self.waiting += 1
        try:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.version > since or self.closed), timeout)
        finally:
            self.waiting -= 1
        return self.version

    async def close(self) -> None:
        """Wake every waiting page (the server is stopping)."""
        self.closed = True
        async with self._changed:
            self._changed.notify_all()


def now() -> datetime:
    return datetime.now(UTC)
