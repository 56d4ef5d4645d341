"""The ports platform adapters plug into, and the core surface they call.

An adapter package exposes one class implementing :class:`PlatformAdapter`, registered under
the ``supportbot.platforms`` entry-point group. ``supportbot run`` loads every registered
adapter, asks each whether it is configured, and wires the configured ones to the core. The
core never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from bot.domain.states import ConversationOwner, ConversationStatus, DraftStatus
from bot.domain.translation import Translation
from bot.events import (
    AgentCommand,
    Author,
    DecisionAction,
    DraftRequest,
    FeedbackClick,
    InboundMessage,
    MessageDeleted,
    ReviewDecision,
    ThreadRef,
)

if TYPE_CHECKING:
    from aiohttp import web

    from bot.errors import PolicyError
    from bot.insight.figures import Report
    from bot.settings import Settings


#: What every platform route answers, with a 503 and ``Retry-After``, until the bot is ready:
#: Slack retries the event, an agent clicks again, a person in the playground reads it.
STARTING_UP = "the bot is starting; retry in a moment"
#: The headers of that answer: a start takes seconds, so ask again in one.
STARTING_UP_HEADERS: Mapping[str, str] = MappingProxyType({"Retry-After": "1"})

#: What a review card shows: the draft's state. The adapter renders buttons only for
#: ``AWAITING_REVIEW``; ``DRAFTING`` is a draft still forming on the card (streamed).
CardState = DraftStatus


@dataclass(frozen=True, slots=True)
class ToolLookup:
    """One tool call the model made, summarised for the agent reading the card."""

    name: str
    summary: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class ProposalView:
    """A side effect the model proposed (a refund), as the agent must see it before approving."""

    kind: str
    summary: str
    verdict: str
    allowed: bool
    status: str = "proposed"


@dataclass(frozen=True, slots=True)
class ConversationView:
    """The card's conversation: its status, who answers it (``owner``, and why a human does:
    ``owner_reason``), who it is assigned to, what the customer wrote since this card's message
    while a human answers (``customer_wrote``: no draft is made for it), and the conversation
    buttons the card offers (``actions``, in order: Take over or Hand back, Claim, Resolve)."""

    status: ConversationStatus = ConversationStatus.OPEN
    owner: ConversationOwner = ConversationOwner.BOT
    owner_reason: str = ""
    assignee: str = ""
    customer_wrote: str = ""
    actions: tuple[DecisionAction, ...] = ()

    @property
    def life(self) -> str:
        """The status and who answers: "Conversation: open · the bot drafts" (plain text)."""
        who = "the bot drafts"
        if self.owner is ConversationOwner.HUMAN:
            who = "a human answers" + (f" ({self.owner_reason})" if self.owner_reason else "") + "; no drafts"
        return f"Conversation: {self.status.value.replace('_', ' ')} · {who}"

    def assigned(self, name: str) -> str:
        """ "assigned to <name>" (the assignee as the desk renders it), or "unassigned"."""
        return f"assigned to {name}" if self.assignee else "unassigned"

    @property
    def line(self) -> str:
        """One plain line for the card: "Conversation: open · answered by a human (…) · assigned to …"."""
        return f"{self.life} · {self.assigned(self.assignee)}"


@dataclass(frozen=True, slots=True)
class ReviewCard:
    """Everything a review desk shows about one draft. Platform-neutral: the adapter renders
    it (Block Kit in Slack, an embed with buttons in Discord). ``escalation`` says why the
    on-call group is needed and ``on_call`` is that group's id on the desk's platform (the
    adapter renders the mention)."""

    draft_id: str
    state: CardState
    asked_by: str
    where: str
    customer_text: str
    draft_text: str = ""
    revision: int = 1
    model: str = ""
    lookups: tuple[ToolLookup, ...] = ()
    proposals: tuple[ProposalView, ...] = ()
    attachments: tuple[str, ...] = ()
    failure: str = ""
    notice: str = ""
    escalation: str = ""
    on_call: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    sent_text: str = ""
    # Guards (issue 8): who the conversation is verified as ("Unverified asker (slack:U1)"), and
    # what the verification pass and the identity checks found; both shown plainly on the card.
    identity: str = ""
    flags: tuple[str, ...] = ()
    #: The conversation's life (issue 19): shown on every desk, with its buttons.
    conversation: ConversationView = ConversationView()
    # SLA (issue 19 point 7): set once the card waited twice the first-response time undecided
    # ("Overdue: waiting 12 min"); the adapter shows it prominently.
    overdue: str = ""
    #: The customer thread the card's draft answers (an adapter that is its own customer channel,
    #: the playground, finds the conversation again by it; chat desks link to it).
    thread: ThreadRef | None = None
    #: What drafting has done so far on a card still being drafted ("looking up order #W2611340").
    progress: tuple[str, ...] = ()
    #: The agent rewrote the draft before approving (``draft_text`` is their text).
    edited: bool = False
    #: The customer writes another language than the desk's: their message and the draft
    #: translated for reading (the reply goes out as ``draft_text``, in their language).
    translation: Translation | None = None

    @property
    def actionable(self) -> bool:
        return self.state is CardState.AWAITING_REVIEW

    @property
    def retryable(self) -> bool:
        """A failed draft may be drafted again (Regenerate on a failed card: "Retry")."""
        return self.state is CardState.FAILED


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """What the core answers to a click. ``ok`` False carries ``message`` for an ephemeral
    reply to the clicker ("already approved by @x", "only managers may approve this")."""

    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True)
class EditForm:
    """What an Edit modal is pre-filled with."""

    draft_id: str
    text: str
    refund_amount: str | None = None


class SlaState(StrEnum):
    """Where a waiting card stands against ``[desk] first_response_minutes``."""

    NONE = "none"  # no SLA set
    WITHIN = "within"
    DUE = "due"  # past the first-response time
    OVERDUE = "overdue"  # past twice that


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A card waiting for a decision, as an agent's Home shows it."""

    draft_id: str
    where: str
    customer: str
    text: str
    waited: timedelta
    sla: SlaState
    assignee: str = ""


@dataclass(frozen=True, slots=True)
class MyConversation:
    """An open conversation assigned to the agent looking."""

    conversation_id: str
    where: str
    customer: str
    status: ConversationStatus
    owner: ConversationOwner


@dataclass(frozen=True, slots=True)
class TodayFigures:
    """The desk's day so far (since midnight in the desk's timezone)."""

    replies_sent: int = 0
    waiting: int = 0
    resolved: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0


@dataclass(frozen=True, slots=True)
class DeskHome:
    """What an agent's home on a desk shows: the queue (oldest first), their conversations and
    today's figures; ``sla_minutes`` is the first-response time the ages are held against (0:
    none). Platform-neutral: the Slack adapter renders it as its App Home."""

    queue: tuple[QueueItem, ...]
    mine: tuple[MyConversation, ...]
    today: TodayFigures
    sla_minutes: float = 0.0
    more_waiting: int = 0


class CustomerChannel(Protocol):
    """Posts approved replies into customer threads on one platform."""

    platform: str

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        """Post ``text`` in ``thread`` and return the platform's message id. The key lets the
        platform (or :meth:`find_reply`) recognise a retried post. ``feedback_for``: the draft
        whose reply this is, when the reply carries 👍 / 👎 buttons (a click comes back as a
        :class:`bot.events.FeedbackClick` for it); empty: no buttons."""
        ...

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        """Return the id of a reply already posted with this key, if any (crash recovery)."""
        ...

    async def show_pending(self, thread: ThreadRef) -> None:
        """Tell the customer a human-reviewed answer is coming (reaction or typing)."""
        ...

    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        """The direct message between the bot and ``user_id`` (the customer of ``thread``), opened
        if need be; opening it again returns the same one. Raises
        :class:`bot.errors.DirectMessageRefused` when the user accepts no direct message."""
        ...


class ReviewDesk(Protocol):
    """Where agents see draft cards and decide."""

    name: str

    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        """Show a new card carrying ``idempotency_key``; return an opaque reference to it."""
        ...

    async def find_card(self, idempotency_key: str) -> str | None:
        """The reference of a card already posted with this key, if any (crash recovery)."""
        ...

    async def update_card(self, ref: str, card: ReviewCard) -> None: ...

    def cards_changed(self) -> None:
        """A card was recorded as shown on this desk, and that is committed: the cards waiting
        changed. A desk that also lists them elsewhere (Slack's Home) refreshes that list; it must
        not block."""
        ...

    async def post_notice(self, text: str) -> None:
        """Post a plain notice for the agents (e.g. a policy file that failed to reload)."""
        ...

    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        """Post ``text`` in the thread of the card ``ref`` (an SLA reminder), mentioning the
        group or person ``on_call`` (an id on this desk's platform; empty: nobody) and no one
        else. The core decides when; the adapter only renders the mention and posts."""
        ...


class FileFetcher(Protocol):
    """Reads a customer's file from its platform's own file host, with the platform's credential
    (which stays in the adapter). The core decides which files to fetch, when, how many bytes at
    most and for how long (it cancels a fetch at its deadline); see :mod:`bot.core.files`.
    :class:`bot.downloads.FileHost` is the implementation both chat adapters use."""

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """The file's bytes. Raises :class:`bot.errors.FileNotFetched` when ``url`` is not on the
        platform's file host (nothing is requested then), the host answers anything but 200 (a
        redirect is never followed), or the body runs past ``max_bytes`` (reading stops there)."""
        ...


class AgentHomes(Protocol):
    """The agents' homes on a desk (Slack's App Home): what each shows, and who looks at them."""

    async def home(self, viewer: Author) -> DeskHome | None:
        """What the desk's home shows ``viewer`` now (the queue, their conversations, today's
        figures); None when the viewer is no agent by the policy (they see nothing of the desk)."""
        ...

    async def opened(self, desk: str, viewer: Author) -> None:
        """``viewer`` opened their home on ``desk`` (e.g. "slack"): an agent's is kept fresh by
        every instance for the next hour (anyone else's shows nothing that changes)."""
        ...

    async def viewers(self, desk: str) -> list[str]:
        """Who opened their home on ``desk`` in the last hour, on any instance: the homes to
        publish again when the queue changes."""
        ...


class Core(Protocol):
    """The surface of the core an adapter may call."""

    settings: Settings

    @property
    def homes(self) -> AgentHomes:
        """The agents' homes (Slack's App Home)."""
        ...

    async def receive(self, message: InboundMessage) -> bool:
        """Record a customer message and start drafting in the background. Returns False when
        the event was already seen (a redelivery) and nothing was done. A message with
        ``edited`` set, or one already stored under the same thread and message id, is an edit of
        the stored message: its pending draft, if any, is superseded by one new draft."""
        ...

    async def retract(self, deleted: MessageDeleted) -> bool:
        """A customer deleted a message: its pending draft is retired and nothing is sent for it.
        False when nothing changed (a redelivery, or a message the core never stored)."""
        ...

    async def has_conversation(self, thread: ThreadRef) -> bool: ...

    async def draft_on_request(self, request: DraftRequest) -> str:
        """An agent asks for a draft on a message that did not mention the bot: it goes through
        intake as a mention (stored in one short transaction before this returns) unless a rule
        refuses it (:mod:`bot.core.on_demand`). What the agent alone is told."""
        ...

    async def agent_command(self, command: AgentCommand) -> str:
        """An agent's ``/supportbot`` command; the answer the agent alone is told."""
        ...

    def serves(self, thread: ThreadRef) -> bool:
        """Whether the bot serves ``thread``'s workspace (the operator's allowlists); an adapter
        asks before it acts on a message visibly (Discord opens a thread), and a refusal is
        counted. :meth:`receive` checks it too."""
        ...

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome: ...

    async def edit_form(self, draft_id: str) -> EditForm | None: ...

    async def rate(self, click: FeedbackClick) -> DecisionOutcome:
        """A click on a delivered reply's 👍 / 👎. ``ok`` False carries ``message`` for an
        ephemeral answer to the clicker (an agent or outsider is refused; empty: say nothing)."""
        ...

    async def reshow_cards(self, desk: str, limit: int = 30) -> int:
        """Update the newest ``limit`` cards on the desk named ``desk`` to what they are now, with
        their stored references (a desk that keeps its cards in memory, the playground, shows them
        again after a restart). Returns how many."""
        ...

    async def reload_policy(self) -> PolicyError | None:
        """Take up an edited policy file now rather than at the next poll (the playground's
        policy editor). None when the file's policy is in force; else why it was refused (the
        previous policy stays)."""
        ...

    async def report(self, since: timedelta) -> Report:
        """What the team learns over the last ``since`` (``supportbot report``'s figures), for a
        page the adapter serves (the playground's ``/report``)."""
        ...


class PlatformAdapter(Protocol):
    """One chat platform. Adapters translate; they hold no business rules."""

    name: str

    @property
    def customer_channel(self) -> CustomerChannel: ...

    @property
    def review_desk(self) -> ReviewDesk | None:
        """The adapter's review desk when its settings name a review channel, else None."""
        ...

    @property
    def desk_preferred(self) -> bool:
        """True when this adapter's settings ask for every platform's new cards on its desk
        (``DISCORD_REVIEW_CHANNEL``: review in Discord instead of Slack). Otherwise the first
        desk registered takes new cards."""
        ...

    @property
    def files(self) -> FileFetcher | None:
        """How the core downloads this platform's attachments; None when it never needs to (the
        adapter hands over the bytes itself, or its messages carry no files)."""
        ...

    def routes(self) -> Sequence[web.RouteDef]:
        """HTTP routes this adapter serves on the bot's HTTP server (e.g. ``/slack/events``).
        Until the bot is ready they answer 503 with :data:`STARTING_UP` (the app's gate)."""
        ...

    @property
    def connected(self) -> bool:
        """Started, and the connection to the platform is live."""
        ...

    async def reconnect(self) -> None:
        """Restart what died (the app's watchdog calls this when ``connected`` stays False)."""
        ...

    async def start(self, core: Core) -> None: ...

    async def stop(self) -> None: ...


class PlatformFactory(Protocol):
    """What the ``supportbot.platforms`` entry point names: builds an adapter from settings,
    or returns None when the platform is not configured at all. A half-configured platform
    raises :class:`bot.errors.ConfigError` naming each missing variable."""

    def __call__(self, settings: Settings) -> PlatformAdapter | None: ...
