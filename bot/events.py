"""The common event model every platform adapter translates into and out of."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class MessageKind(StrEnum):
    """How a customer message reached the bot: a mention of it, a direct message, a reply in a
    thread it is in, or a channel message that does not mention it (an edit of one matters only
    when the message is stored: its mention was edited out)."""

    MENTION = "mention"
    DIRECT = "direct"
    CHANNEL = "channel"
    FOLLOW_UP = "follow-up"


class Place(StrEnum):
    """Who can read a conversation's thread, as the adapter sees it: ``public`` when people other
    than the customer and the shop may read it (a public Slack channel, a Slack Connect channel, a
    Discord server's channel or public thread), ``private`` when only they can (a direct message,
    a private channel or group, a private thread). The core decides what may be said where."""

    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """One conversation: a thread on one platform.

    ``thread`` is the Slack ``thread_ts`` of the root message, or the Discord thread (or DM
    channel) id. ``workspace`` is the Slack team id or the Discord guild id (``"@me"`` for DMs).
    """

    platform: str
    workspace: str
    channel: str
    thread: str

    @property
    def key(self) -> str:
        """A stable, unique text key for the thread (used as the conversation's natural key)."""
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message, as the platform identifies them, with the facts the core needs to
    decide who is speaking (:func:`bot.domain.roles.classify`); the adapter decides nothing.

    ``email`` is the platform profile's e-mail when the platform shares it (Slack with
    ``users:read.email``), else empty. ``groups``: the Slack user-group ids or Discord role ids
    the author holds. ``home_workspace``: in a Slack Connect channel, whether the author belongs to
    the workspace that installed the bot (None elsewhere: not a fact there). ``review_member``:
    whether the author is a member of the review channel (None when the adapter cannot say)."""

    id: str
    display_name: str = ""
    email: str = ""
    is_bot: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    home_workspace: bool | None = None
    review_member: bool | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file on a customer message, as the platform describes it: ``size`` is what the platform
    claims (never trusted), ``url`` where its own file host serves it. ``external`` marks a file
    that lives elsewhere (a Slack link to Google Drive): it is only listed on the card. An adapter
    that already holds the bytes (the playground's upload) passes them as ``data``; otherwise the
    core downloads an image through the platform's :class:`bot.ports.FileFetcher` in the drafting
    worker, never before the ack."""

    filename: str
    content_type: str = "application/octet-stream"
    size: int = 0
    url: str = ""
    data: bytes | None = None
    external: bool = False

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A customer message, translated by an adapter.

    ``event_id`` is the platform's own delivery id: a redelivered event carries the same id and
    is ignored. ``location`` is a human-readable "where" for the review card, e.g.
    ``"Slack · #support"`` or ``"Discord · Acme · #help · @kim"``.

    ``place``: who can read the thread (:class:`Place`); an adapter that cannot tell says public,
    the safe side.

    ``edited`` marks the platform telling of an edit: ``message_id`` names the message as first
    sent and ``text`` is its new text (Slack's ``message_changed``, or an ``app_mention``
    re-sent with ``edited``; Discord's MESSAGE_UPDATE). The core decides what an edit changes.
    """

    event_id: str
    thread: ThreadRef
    message_id: str
    author: Author
    text: str
    kind: MessageKind
    sent_at: datetime
    attachments: tuple[Attachment, ...] = ()
    location: str = ""
    edited: bool = False
    place: Place = Place.PUBLIC


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """A message removed from its thread, as the platform told of it (Slack's
    ``message_deleted``; Discord's MESSAGE_DELETE, or each message of a MESSAGE_DELETE_BULK).
    ``event_id`` is the delivery id, as for :class:`InboundMessage`; ``message_id`` the deleted
    message's platform id."""

    event_id: str
    thread: ThreadRef
    message_id: str


class DecisionAction(StrEnum):
    """What an agent did on the review card: with the draft (approve, edit, reject, regenerate)
    or with the draft's conversation (take over, hand back, claim, resolve)."""

    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    REGENERATE = "regenerate"
    TAKE_OVER = "take_over"
    HAND_BACK = "hand_back"
    CLAIM = "claim"
    RESOLVE = "resolve"


#: The decisions about a card's conversation rather than its draft (offered on any card).
CONVERSATION_ACTIONS = frozenset(
    {DecisionAction.TAKE_OVER, DecisionAction.HAND_BACK, DecisionAction.CLAIM, DecisionAction.RESOLVE}
)


@dataclass(frozen=True, slots=True)
class Actor:
    """An agent clicking on a review card. ``groups`` are the Slack user-group ids or Discord
    role ids the adapter knows the agent belongs to (used for approver and manager lists)."""

    platform: str
    id: str
    display_name: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """An agent's decision on a draft. ``edited_text`` goes with EDIT, ``instruction`` with
    REGENERATE ("shorter", "offer store credit instead"), ``refund_amount`` with an EDIT that
    changes a proposed refund (a decimal string such as ``"12.50"``)."""

    draft_id: str
    action: DecisionAction
    actor: Actor
    edited_text: str | None = None
    reason: str | None = None
    instruction: str | None = None
    refund_amount: str | None = None


class Vote(StrEnum):
    """A customer's rating of a delivered reply (its 👍 / 👎 buttons)."""

    UP = "up"
    DOWN = "down"

    @property
    def score(self) -> int:
        """The vote as a reply feedback score (:mod:`bot.domain.feedback`): +1 or -1."""
        return 1 if self is Vote.UP else -1

    @classmethod
    def of_score(cls, score: int) -> Vote:
        """The vote a stored reply score (+1 or -1) stands for."""
        return cls.UP if score > 0 else cls.DOWN


@dataclass(frozen=True, slots=True)
class FeedbackClick:
    """A click on a delivered reply's 👍 / 👎, translated by an adapter: ``draft_id`` names the
    reply it rates (carried by the button), ``author`` who clicked, with the facts the role
    classifier needs. The core decides whether that person may rate it."""

    draft_id: str
    vote: Vote
    author: Author


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """An agent asks for a draft on a message that did not mention the bot (Slack's message
    shortcut "Draft a reply with supportbot"): ``message`` is that message as the customer's (its
    author is the conversation's customer when the request opens it), ``requester`` the agent who
    asked. ``message.event_id`` names the request (one per message:
    asking twice does nothing twice)."""

    requester: Author
    message: InboundMessage
    #: The thread's messages before it the adapter could read (oldest first): the conversation's
    #: context when the request opens it; nothing is drafted for them.
    earlier: tuple[InboundMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentCommand:
    """An agent's ``/supportbot`` command: its ``text`` after the command's name, who typed it,
    and the customer's thread it names (a message link the adapter read), if any."""

    requester: Author
    platform: str
    text: str
    thread: ThreadRef | None = None
