"""The states a draft, an outbox row and a proposed action move through, and the moves allowed.

A state change is always a compare-and-set in SQL (``WHERE status = <from>``); these tables are
what the repositories check before they issue one, so an illegal move is a programming error
caught in tests, never a silent write.
"""

from __future__ import annotations

from enum import StrEnum


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
    DraftStatus.FAILED: frozenset(),
    DraftStatus.SENT: frozenset(),
    DraftStatus.SEND_FAILED: frozenset(),
}

#: Drafts a newer customer message supersedes.
OPEN_DRAFT_STATES = (DraftStatus.DRAFTING, DraftStatus.AWAITING_REVIEW)
#: Drafts whose card must be on the review desk (a draft superseded before it had a card, by a
#: newer message or by the verification pass's one retry, never needs one).
CARD_STATES = frozenset(DraftStatus) - {DraftStatus.DRAFTING, DraftStatus.SUPERSEDED}


class OutboxStatus(StrEnum):
    """``pending → sending → sent | failed``; a sending row whose lease expired is pending again."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


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


def check_transition(current: DraftStatus, target: DraftStatus) -> None:
    """Raise ``ValueError`` when ``current → target`` is not an allowed move."""
    if target not in DRAFT_TRANSITIONS[current]:
        raise ValueError(f"a draft cannot move from {current} to {target}")
