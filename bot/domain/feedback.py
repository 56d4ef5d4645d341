"""Customer feedback (issue 21, point 4): a 👍 / 👎 on a delivered reply, or the answer to the
CSAT question asked when an agent resolves a conversation. Kept with the draft it is about; one
answer per customer, kind and draft (a changed mind replaces the earlier answer)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.errors import SupportbotError


class FeedbackKind(StrEnum):
    """What the customer answered: a reply's thumbs (score -1 or +1), or the CSAT question (1..5)."""

    REPLY = "reply"
    CSAT = "csat"


#: The scores each kind allows.
SCORES: dict[FeedbackKind, frozenset[int]] = {
    FeedbackKind.REPLY: frozenset({-1, 1}),
    FeedbackKind.CSAT: frozenset(range(1, 6)),
}


class BadFeedback(SupportbotError):
    """A score its kind does not allow."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """One customer's answer about one draft's reply (or its conversation, for CSAT)."""

    draft_id: str
    kind: FeedbackKind
    score: int
    author_id: str

    def __post_init__(self) -> None:
        if self.score not in SCORES[self.kind]:
            allowed = ", ".join(str(s) for s in sorted(SCORES[self.kind]))
            raise BadFeedback(f"a {self.kind} score is one of {allowed}, not {self.score}")
