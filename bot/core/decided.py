"""What every decision room shares: what must happen once a decision has committed
(:class:`Effects`), the answer to a click that came too late (:func:`already`), and who decided a
draft with what the conversation had cost by then (:func:`decided_by`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import DraftStatus
from bot.events import ReviewDecision
from bot.store import outcomes as outcome_rows
from bot.store.pending_edits import HeldEdit
from bot.store.reviews import DraftUnderReview
from tools.refunds import OrderFacts

_ALREADY = {
    DraftStatus.APPROVED: "approved",
    DraftStatus.EDITED: "edited and approved",
    DraftStatus.SENT: "approved and sent",
    DraftStatus.REJECTED: "rejected",
    DraftStatus.SUPERSEDED: "superseded",
    DraftStatus.FAILED: "marked failed",
    DraftStatus.DRAFTING: "still being drafted",
    DraftStatus.SEND_FAILED: "approved, but sending failed",
}


@dataclass(slots=True)
class Effects:
    """What must happen once the decision has committed."""

    refresh: bool = True
    deliver: bool = False
    new_draft: str | None = None
    #: Other cards to refresh (the conversation's newest, after a conversation decision).
    cards: list[str] = field(default_factory=list)
    #: The orders the draft's refunds name, fetched fresh before the transaction.
    order_facts: dict[str, OrderFacts] = field(default_factory=dict)
    #: An edit held for its translation into the customer's language, to translate now.
    translate: HeldEdit | None = None


def already(draft: DraftUnderReview) -> str:
    who = f" by {draft.decided_by}" if draft.decided_by else ""
    return f"This draft was already {_ALREADY.get(draft.status, draft.status.value)}{who}."


async def decided_by(
    conn: AsyncConnection, draft: DraftUnderReview, decision: ReviewDecision, now: datetime
) -> dict[str, object]:
    """Who decided and when, and what the conversation had cost by then (the report's figures)."""
    tokens, cost = await outcome_rows.conversation_spend(conn, draft.conversation_id)
    return {
        "decided_by": decision.actor.display_name or decision.actor.id,
        "decided_by_id": decision.actor.id,
        "decided_at": now,
        "conversation_tokens": tokens,
        "conversation_cost_microusd": cost,
    }
