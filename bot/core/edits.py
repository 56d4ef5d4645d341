"""Edits and deletions of customer messages: what they change, decided here and written in the
caller's (the ack's) transaction.

* An edit of a message whose draft is still pending (``drafting`` or ``awaiting_review``, and
  answering that message or a later one) supersedes the draft and queues one fresh draft from
  the edited text. The old card says why; the fresh draft gets its own card.
* An edit of a message with no pending draft (already answered, rejected, or never drafted)
  only updates the stored text, so later drafts read what the customer now says: nothing is
  drafted, shown or sent for it.
* A deletion retires the pending draft that answers the deleted message (nothing is sent); a
  pending draft of a later message is drafted afresh without it. A deletion after the answer
  was sent changes nothing that was sent.
* Only the conversation's customer's messages count: a message stored with another role, or
  never stored, is left alone. Text identical to what is stored (Slack re-sends a message when
  a link unfurls, Discord when an embed loads) changes nothing.

The original text always stays in the audit trail (``detail.original``). The text is changed
by compare-and-set, so the two copies of one edit Slack may deliver at once supersede once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.outcome import AuditLine
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store.conversations import StoredTurn
from bot.store.records import add_audit

#: The role of the messages whose edits and deletions matter.
CUSTOMER = "customer"
#: What a deleted message reads as in the conversation afterwards.
DELETED_TEXT = "(the customer deleted this message)"
EDITED_NOTICE = "The customer edited their message; a fresh draft follows."
DELETED_NOTICE = "The customer deleted their message; nothing will be sent for it."
EARLIER_DELETED_NOTICE = "The customer deleted an earlier message; a fresh draft follows."


@dataclass(frozen=True, slots=True)
class Amended:
    """What an edit or a deletion changed: the drafts it superseded (their cards need an update)
    and the fresh draft it queued, if any."""

    conversation_id: str
    superseded: tuple[str, ...] = ()
    new_draft: str | None = None


async def amend(
    conn: AsyncConnection, stored: StoredTurn | None, text: str, author: str, now: datetime
) -> Amended | None:
    """Apply an edit of ``stored`` to ``text``. None when it changes nothing."""
    if stored is None or stored.role != CUSTOMER or stored.text in (text, DELETED_TEXT):
        return None
    if not await conversation_rows.replace_text(conn, stored.id, stored.text, text):
        return None
    detail = {"message_id": stored.id, "original": stored.text, "text": text}
    pending = await draft_rows.open_draft_covering(conn, stored.conversation_id, stored.id)
    if pending is None:
        amended = Amended(stored.conversation_id)
        summary = "customer edited a message with no pending draft: nothing drafted"
    else:
        amended = await _redraft(conn, stored.conversation_id, pending[1], EDITED_NOTICE, now)
        summary = f"customer edited their message; a fresh draft follows: {text[:200]}"
    line = AuditLine(stored.conversation_id, amended.new_draft, "message_edited", author, summary, detail)
    await add_audit(conn, [line], now)
    return amended


async def retract(conn: AsyncConnection, stored: StoredTurn | None, now: datetime) -> Amended | None:
    """Apply the deletion of ``stored``. None when it changes nothing."""
    if stored is None or stored.role != CUSTOMER or stored.text == DELETED_TEXT:
        return None
    if not await conversation_rows.replace_text(conn, stored.id, stored.text, DELETED_TEXT):
        return None
    detail = {"message_id": stored.id, "original": stored.text}
    pending = await draft_rows.open_draft_covering(conn, stored.conversation_id, stored.id)
    if pending is None:
        amended = Amended(stored.conversation_id)
        summary = "customer deleted a message with no pending draft: nothing changed"
    elif pending[1] == stored.id:
        superseded = await draft_rows.supersede_open(conn, stored.conversation_id, "", now, notice=DELETED_NOTICE)
        amended = Amended(stored.conversation_id, tuple(superseded))
        summary = "customer deleted their message; its pending draft was retired, nothing sent"
    else:
        amended = await _redraft(conn, stored.conversation_id, pending[1], EARLIER_DELETED_NOTICE, now)
        summary = f"customer deleted an earlier message; fresh draft {amended.new_draft}"
    await add_audit(conn, [AuditLine(stored.conversation_id, None, "message_deleted", "", summary, detail)], now)
    return amended


async def _redraft(conn: AsyncConnection, conversation_id: str, answering: int, notice: str, now: datetime) -> Amended:
    superseded = await draft_rows.supersede_open(conn, conversation_id, "", now, notice=notice)
    new_draft = await draft_rows.insert_draft(conn, conversation_id, answering, now)
    return Amended(conversation_id, tuple(superseded), new_draft)
