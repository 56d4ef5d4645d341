"""A draft as its review card shows it: one typed value, whether just recorded or read back.

:func:`draft_card` maps draft columns to :class:`DraftCard`; the drafting record uses it on the
values it has just written (no re-read), :func:`load_card` on the stored row, so a column the
card shows is mapped in one place. :func:`bot.cards.build_card` builds the card from either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import DraftStatus, OutboxStatus
from bot.domain.translation import Translation
from bot.store import life, outbox, records, sla, translations
from bot.store.conversations import ConversationState, StoredMessage, load_conversation
from bot.store.records import StoredAction
from bot.store.schema import Draft, Message, table_of

_drafts = table_of(Draft)
_messages = table_of(Message)


@dataclass(frozen=True, slots=True)
class CallLine:
    """A tool call as the card lists it."""

    name: str
    summary: str
    error: str


@dataclass(frozen=True, slots=True)
class DraftCard:
    """The draft's columns a card shows, its tool calls and proposed actions."""

    id: str
    status: DraftStatus
    revision: int
    version: int = 0
    text: str = ""
    edited_text: str | None = None
    model: str = ""
    failure: str = ""
    notice: str = ""
    escalation: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    guard_flags: tuple[str, ...] = ()
    card_desk: str = ""
    card_ref: str = ""
    calls: tuple[CallLine, ...] = ()
    actions: tuple[StoredAction, ...] = ()


_COLUMNS = tuple(f.name for f in fields(DraftCard) if f.name not in ("calls", "actions"))


def draft_card(
    columns: Mapping[str, Any], calls: tuple[CallLine, ...] = (), actions: tuple[StoredAction, ...] = ()
) -> DraftCard:
    """The card's view of draft ``columns`` (a stored row, or the values just written)."""
    values = {name: columns[name] for name in _COLUMNS if name in columns and columns[name] is not None}
    values["status"] = DraftStatus(values["status"])
    values["guard_flags"] = tuple(str(f) for f in values.get("guard_flags") or ())
    return DraftCard(**values, calls=calls, actions=actions)


@dataclass(frozen=True, slots=True)
class CardSource:
    """Everything a card shows: the draft, its conversation (who asks, where, who they are
    verified as, and its life), the message it answers (None when unknown), the reply's outbox row
    ((status, text, last error), None before approval) and what the customer wrote since."""

    draft: DraftCard
    conversation: ConversationState
    trigger: StoredMessage | None
    outbox: tuple[OutboxStatus, str, str] | None = None
    #: The customer's newest message after the one the draft answers ("" when none).
    customer_wrote: str = ""
    overdue: str = ""  # the SLA's overdue mark ("Overdue: waiting 12 min"), see bot/core/sla.py
    #: The message and the draft in the desk's language (None: the customer writes the desk's).
    translation: Translation | None = None

    @property
    def draft_id(self) -> str:
        return self.draft.id


async def load_card(conn: AsyncConnection, draft_id: str, desk_language: str = "") -> CardSource | None:
    """The card of ``draft_id`` as stored (None: no such draft), translated into ``desk_language``
    as far as translations are kept."""
    m = _messages.c
    query = select(
        *(_drafts.c[name] for name in _COLUMNS),
        _drafts.c.conversation_id,
        m.id.label("message_id"),
        m.role,
        m.text.label("message_text"),
        m.attachments,
        m.author_id,
        sla.overdue_column(),
    ).join(_messages, m.id == _drafts.c.message_id)
    row = (await conn.execute(query.where(_drafts.c.id == draft_id))).first()
    if row is None:
        return None
    conversation = await load_conversation(conn, row.conversation_id)
    calls = tuple(CallLine(c.name, c.summary, c.error) for c in await records.tool_calls_of(conn, draft_id))
    actions = tuple(await records.actions_of(conn, draft_id))
    trigger = StoredMessage(row.message_id, row.role, row.message_text, list(row.attachments or []), row.author_id)
    sent = await outbox.of_draft(conn, draft_id)
    wrote = await life.customer_wrote_since(conn, row.conversation_id, row.message_id)
    overdue = str(row.overdue or "")
    card = draft_card(dict(row._mapping), calls, actions)
    translation = await translations.card_translation(
        conn, conversation.facts.get("language"), desk_language, trigger.text, card.edited_text or card.text
    )
    return CardSource(card, conversation, trigger, sent, wrote, overdue, translation)
