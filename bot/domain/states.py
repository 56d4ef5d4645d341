"""The states a draft, an outbox row, a proposed action and a conversation move through, and the
moves allowed.

A state change is always a compare-and-set in SQL (``WHERE status = <from>``); these tables are
what the repositories check before they issue one, so an illegal move is a programming error
caught in tests, never a silent write.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar


class DraftStatus(StrEnum):
    """``drafting → awaiting_review → approved | edited | rejected | superseded | failed → sent``."""

    DRAFTING = "drafting"
    AWAITING_REVIEW = "awaiting_review"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    SENT = "sent"
    SEND_FAILED = "send_failed"


DRAFT_TRANSITIONS: dict[DraftStatus, frozenset[DraftStatus]] = {
    DraftStatus.DRAFTING: frozenset({DraftStatus.AWAITING_REVIEW, DraftStatus.FAILED, DraftStatus.SUPERSEDED}),
    DraftStatus.AWAITING_REVIEW: frozenset(
        {DraftStatus.APPROVED, DraftStatus.EDITED, DraftStatus.REJECTED, DraftStatus.SUPERSEDED}
    ),
    DraftStatus.APPROVED: frozenset({DraftStatus.SENT, DraftStatus.SEND_FAILED}),
    DraftStatus.EDITED: frozenset({DraftStatus.SENT, DraftStatus.SEND_FAILED}),
    DraftStatus.REJECTED: frozenset(),
    DraftStatus.SUPERSEDED: frozenset(),
    # failed → superseded: Retry (Regenerate on a failed card) drafts the message again.
    DraftStatus.FAILED: frozenset({DraftStatus.SUPERSEDED}),
    DraftStatus.SENT: frozenset(),
    DraftStatus.SEND_FAILED: frozenset(),
}

#: Drafts a newer customer message supersedes.
OPEN_DRAFT_STATES = (DraftStatus.DRAFTING, DraftStatus.AWAITING_REVIEW)
#: Drafts whose card must be on the review desk (a draft superseded before it had a card, by a
#: newer message or by the verification pass's one retry, never needs one).
CARD_STATES = frozenset(DraftStatus) - {DraftStatus.DRAFTING, DraftStatus.SUPERSEDED}

#: The state a draft that needs no reply ends in. ``superseded`` is today's only terminal state
#: without a card that a draft in ``drafting`` may move to without a schema change; the draft's
#: notice and the ``no_reply`` audit line say why. A dedicated ``no_reply`` state needs a
#: migration of the ``ck_drafts_status`` CHECK constraint (see :data:`NO_REPLY_STATE`).
NO_REPLY_STATUS = DraftStatus.SUPERSEDED
#: The value a dedicated draft state would have (not in :class:`DraftStatus` until migrated).
NO_REPLY_STATE = "no_reply"
#: How the notice of a no-reply draft begins (``supportbot conversations`` tells them apart by it).
NO_REPLY_NOTICE = "No reply needed"


class OutboxStatus(StrEnum):
    """``pending → sending → sent | failed``; a sending row whose lease expired is taken over."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxKind(StrEnum):
    """What an outbox row carries: an approved draft's reply, or one of the policy's fixed texts
    (the managers' words, sent unreviewed: never the model's)."""

    REPLY = "reply"
    ACKNOWLEDGEMENT = "acknowledgement"
    OUT_OF_HOURS = "out_of_hours"
    HANDOFF = "handoff"
    CSAT = "csat"
    #: An approved reply that goes to the customer by direct message (``[identity] public_places
    #: = "dm"`` in a public place); its own kind, so an older instance never posts it in the thread.
    DIRECT_REPLY = "direct_reply"
    #: The policy's fixed line in the public thread once that direct message is sent.
    DM_NOTICE = "dm_notice"


OUTBOX_TRANSITIONS: dict[OutboxStatus, frozenset[OutboxStatus]] = {
    OutboxStatus.PENDING: frozenset({OutboxStatus.SENDING}),
    # sending → sending: another worker takes over a row whose sender's lease expired.
    OutboxStatus.SENDING: frozenset(
        {OutboxStatus.SENDING, OutboxStatus.SENT, OutboxStatus.PENDING, OutboxStatus.FAILED}
    ),
    OutboxStatus.SENT: frozenset(),
    OutboxStatus.FAILED: frozenset(),
}


class ActionStatus(StrEnum):
    """A proposed side effect: ``proposed | refused → approved → executed | failed``, or dropped."""

    PROPOSED = "proposed"
    REFUSED = "refused"
    APPROVED = "approved"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class FileStatus(StrEnum):
    """A customer's file: ``pending → fetched | failed`` (an image on the platform's file host,
    downloaded by the drafting worker), or ``listed`` (only named on the card: not an image, or an
    external file). A file stored by an older instance has no status: it was handled at the ack."""

    PENDING = "pending"
    FETCHED = "fetched"
    FAILED = "failed"
    LISTED = "listed"


#: The states a proposal is recorded in: within policy, or refused by it (shown, never run).
ACTION_START_STATES = frozenset({ActionStatus.PROPOSED, ActionStatus.REFUSED})

ACTION_TRANSITIONS: dict[ActionStatus, frozenset[ActionStatus]] = {
    ActionStatus.PROPOSED: frozenset({ActionStatus.APPROVED, ActionStatus.REJECTED, ActionStatus.SUPERSEDED}),
    ActionStatus.REFUSED: frozenset(),
    ActionStatus.APPROVED: frozenset({ActionStatus.EXECUTED, ActionStatus.FAILED}),
    ActionStatus.EXECUTED: frozenset(),
    ActionStatus.FAILED: frozenset(),
    ActionStatus.REJECTED: frozenset(),
    ActionStatus.SUPERSEDED: frozenset(),
}


class ConversationStatus(StrEnum):
    """A conversation's life: ``open → waiting_on_customer → resolved``; the customer writing
    moves it back to ``open`` (a resolved one is reopened)."""

    OPEN = "open"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    RESOLVED = "resolved"


CONVERSATION_TRANSITIONS: dict[ConversationStatus, frozenset[ConversationStatus]] = {
    ConversationStatus.OPEN: frozenset({ConversationStatus.WAITING_ON_CUSTOMER, ConversationStatus.RESOLVED}),
    ConversationStatus.WAITING_ON_CUSTOMER: frozenset({ConversationStatus.OPEN, ConversationStatus.RESOLVED}),
    ConversationStatus.RESOLVED: frozenset({ConversationStatus.OPEN}),
}


class ConversationOwner(StrEnum):
    """Who answers a conversation: the bot drafts (``bot``), or a human does and the bot drafts
    nothing there (``human``: taken over, answered by hand, escalated) until it is handed back."""

    BOT = "bot"
    HUMAN = "human"


OWNER_TRANSITIONS: dict[ConversationOwner, frozenset[ConversationOwner]] = {
    ConversationOwner.BOT: frozenset({ConversationOwner.HUMAN}),
    ConversationOwner.HUMAN: frozenset({ConversationOwner.BOT}),
}

#: Each state enum with its transition table and what it is the state of (for messages).
TRANSITIONS: Mapping[type[StrEnum], tuple[str, Mapping[Any, frozenset[Any]]]] = {
    DraftStatus: ("draft", DRAFT_TRANSITIONS),
    ActionStatus: ("proposed action", ACTION_TRANSITIONS),
    OutboxStatus: ("outbox row", OUTBOX_TRANSITIONS),
    ConversationStatus: ("conversation", CONVERSATION_TRANSITIONS),
    ConversationOwner: ("conversation's owner", OWNER_TRANSITIONS),
}

State = TypeVar("State", DraftStatus, ActionStatus, OutboxStatus, ConversationStatus, ConversationOwner)


class IllegalTransition(ValueError):
    """A move its state's transition table does not allow: a programming error, raised before
    anything is written."""


def check_transition(current: State, target: State) -> None:
    """Raise :class:`IllegalTransition` when ``current → target`` is not an allowed move."""
    what, table = TRANSITIONS[type(current)]
    if type(target) is not type(current) or target not in table[current]:
        raise IllegalTransition(f"a {what} cannot move from {current} to {target}")
