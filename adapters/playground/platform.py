"""The playground: a customer channel and a review desk kept in memory, served as one local
web page on the bot's own HTTP server.

It drives the real core through :class:`bot.ports.Core` like any platform: a message typed in
the customer pane becomes an :class:`bot.events.InboundMessage`, a click on a card a
:class:`bot.events.ReviewDecision`; the core's replies and cards land back here. With no chat
platform configured it opens by itself (``supportbot run`` with only ``MOONSHOT_API_KEY``);
next to Slack or Discord it is there only with ``PLAYGROUND_TOKEN`` (cards then go to that
platform's review desk, the policy editor checks without saving, and decisions are taken as
``PLAYGROUND_APPROVER``, whom the core accepts only from the policy's approver lists). Without a
token it answers only requests from this machine (loopback), whatever ``HOST`` it listens on.

Every API request must carry the ``X-Playground`` header, which a cross-site form cannot send;
:mod:`adapters.playground.guard` checks ``Host`` and ``Origin`` (DNS rebinding), keeps the
token out of the cookie and the address bar, and adds the security headers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from aiohttp import web

from adapters.playground.gate import AccessGate
from adapters.playground.guard import HostGuard
from adapters.playground.handlers import PageHandlers, PolicyEditor
from adapters.playground.report import STYLESHEET_PATH, ReportPage
from adapters.playground.settings import PlaygroundSettings
from adapters.playground.state import PLATFORM, ChatLine, PlaygroundState, now
from bot.domain.states import ConversationOwner
from bot.events import Actor, ThreadRef
from bot.ports import CardState, Core, ReviewCard
from bot.secret_values import configured_secrets
from bot.settings import Settings

log = logging.getLogger(__name__)

AGENT = Actor(PLATFORM, "playground-agent", "You (playground)")


def create(settings: object) -> PlaygroundPlatform | None:
    """The ``supportbot.platforms`` entry point. Open when no chat platform is configured (and
    ``PLAYGROUND_ENABLED`` is not false); behind ``PLAYGROUND_TOKEN`` next to one; else None."""
    assert isinstance(settings, Settings)
    own = PlaygroundSettings()
    token = own.token.get_secret_value() if own.token else ""
    if token:
        return PlaygroundPlatform(settings, own, token=token, with_desk=not _other_platform(settings))
    if own.enabled and not _other_platform(settings):
        return PlaygroundPlatform(settings, own)
    return None


def _other_platform(settings: Settings) -> bool:
    """Whether the operator configured a chat platform (its settings say it is enabled)."""
    return any(platform.enabled for platform in settings.platforms.values())


class PlaygroundPlatform:
    """Customer channel, review desk and web page in one object (the state lives in memory:
    the conversations themselves are in the database like any other)."""

    name = PLATFORM
    platform = PLATFORM

    def __init__(
        self, settings: Settings, own: PlaygroundSettings | None = None, *, token: str = "", with_desk: bool = True
    ) -> None:
        own = own if own is not None else PlaygroundSettings()
        self.settings = settings
        self.token = token
        self._gate = AccessGate(HostGuard(settings.host, own.allowed_hosts), token, lambda: self._core is not None)
        approver = own.approver.strip()
        self.actor = Actor(PLATFORM, approver, f"{approver} (playground)") if approver else AGENT
        self.secrets = {**configured_secrets(settings), **({"PLAYGROUND_TOKEN": token} if token else {})}
        self.state = PlaygroundState()
        self.with_desk = with_desk
        self._core: Core | None = None
        self._chat = PlaygroundChat(self.state)
        self._desk = PlaygroundDesk(self.state)
        self._pages = PageHandlers(self)
        self._policy = PolicyEditor(self)
        self._report = ReportPage(self)

    # -- PlatformAdapter ------------------------------------------------------------------

    @property
    def customer_channel(self) -> PlaygroundChat:
        return self._chat

    @property
    def review_desk(self) -> PlaygroundDesk | None:
        return self._desk if self.with_desk else None

    @property
    def desk_preferred(self) -> bool:
        return False

    @property
    def files(self) -> None:
        """None: the page uploads an image's bytes with the message, nothing is downloaded."""
        return None

    @property
    def can_apply_policy(self) -> bool:
        """Saving the policy file is for a playground of its own, not one next to live customers."""
        return self.with_desk and not self.token

    def routes(self) -> Sequence[web.RouteDef]:
        guard, pages, policy = self._gate.guarded, self._pages, self._policy
        return [
            web.get("/", guard(pages.page)),
            web.get("/playground/static/{name}", guard(pages.static)),
            web.get("/playground/image/{image_id}", guard(pages.image)),
            web.get("/playground/api/state", guard(pages.state)),
            web.get("/playground/api/edit/{draft_id}", guard(pages.edit)),
            web.post("/playground/api/message", guard(pages.message)),
            web.post("/playground/api/thread", guard(pages.thread)),
            web.post("/playground/api/decide", guard(pages.decide)),
            web.post("/playground/api/reply", guard(pages.reply)),
            web.post("/playground/api/orders", guard(pages.orders)),
            web.post("/playground/api/policy/check", guard(policy.check)),
            web.post("/playground/api/policy/apply", guard(policy.apply)),
            web.get("/report", guard(self._report.page)),
            web.get(STYLESHEET_PATH, guard(self._report.stylesheet)),
        ]

    async def start(self, core: Core) -> None:
        self._core = core
        if self.with_desk:  # the cards of before a restart, rebuilt from the database
            await core.reshow_cards(self.name)
        where = f"http://localhost:{self.settings.port}/"
        if self.token:
            log.info("the playground is at %s?token=… (PLAYGROUND_TOKEN)", where)
        else:
            log.info("no chat platform is configured: the playground is open at %s", where)

    @property
    def connected(self) -> bool:
        """Nothing to connect to: live once started."""
        return self._core is not None

    async def reconnect(self) -> None:
        """Nothing can die here; the app's watchdog may still ask."""

    async def stop(self) -> None:
        self._core = None
        await self.state.close()

    @property
    def core(self) -> Core:
        assert self._core is not None
        return self._core


class PlaygroundChat:
    """The customer side of the page (the platform's customer channel): replies land as chat
    lines, once per idempotency key."""

    platform = PLATFORM

    def __init__(self, state: PlaygroundState) -> None:
        self.state = state
        self.keys: dict[str, str] = {}

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        existing = self.keys.get(idempotency_key)
        if existing is not None:
            return existing
        chat = self.state.thread(thread)
        line = ChatLine(uuid.uuid4().hex, "support", text, now(), key=idempotency_key)
        chat.lines.append(line)
        chat.pending = False
        self.keys[idempotency_key] = line.id
        await self.state.changed()
        return line.id

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        return self.keys.get(idempotency_key)

    async def show_pending(self, thread: ThreadRef) -> None:
        self.state.thread(thread).pending = True
        await self.state.changed()

    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        return thread  # each playground chat is one customer's, already private

class PlaygroundDesk:
    """The review desk of the page: cards, notices and the lines under a card, kept in memory
    (a restart rebuilds them from the database through ``Core.reshow_cards``)."""

    name = PLATFORM

    def __init__(self, state: PlaygroundState) -> None:
        self.state = state
        self.keys: dict[str, str] = {}

    def cards_changed(self) -> None:
        """The page lists the cards themselves."""

    async def post_card(self, card: ReviewCard, *, idempotency_key: str = "") -> str:
        existing = self.keys.get(idempotency_key) if idempotency_key else None
        if existing is not None:
            return existing
        ref = f"card-{len(self.state.cards) + 1}-{card.draft_id[:8]}"
        self._show(ref, card)
        if idempotency_key:
            self.keys[idempotency_key] = ref
        await self.state.changed()
        return ref

    async def find_card(self, idempotency_key: str) -> str | None:
        """A card already posted with this key (the rebuilt core's crash recovery asks)."""
        return self.keys.get(idempotency_key)

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        self._show(ref, card)
        await self.state.changed()

    def _show(self, ref: str, card: ReviewCard) -> None:
        """Keep the card; its thread stops waiting once a draft (or a human) answers it."""
        self.state.cards[ref] = card
        if card.thread is None:
            return
        thread = self.state.thread(card.thread)
        done = card.state not in (CardState.DRAFTING, CardState.SUPERSEDED)
        if done or card.conversation.owner is ConversationOwner.HUMAN:
            thread.drafting = ""

    async def post_notice(self, text: str) -> None:
        self.state.notices.append(text)
        await self.state.changed()

    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        tag = f"@{on_call} " if on_call else ""
        self.state.card_threads.setdefault(ref, []).append(f"{tag}{text}")
        await self.state.changed()
