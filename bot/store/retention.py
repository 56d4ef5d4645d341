"""Erasing what conversations hold about people, row by row, while keeping the trail: which rows
existed, their ids, states, times and numbers. Used by the retention job (everything older than
the policy's ``[retention] days``, :mod:`bot.core.retention`) and by ``supportbot forget`` (one
person's conversations, :mod:`bot.forget`).

Every function takes ``scope``, a condition on a conversation-id column saying which
conversations it may touch, erases at most ``limit`` rows (so a caller can keep each transaction
short) and returns how many it erased. A row already erased is not counted again: running twice
erases nothing the second time.

Erased text becomes :data:`ERASED`; image bytes become empty; an audit line's summary becomes the
sha256 of what it said (``sha256:…``), so the trail still proves what was written, and when,
without saying it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, bindparam, literal, not_, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import ActionStatus, DraftStatus, OutboxStatus
from bot.store import translations as translation_rows
from bot.store.schema import (
    AttachmentRow,
    AuditEvent,
    Conversation,
    Draft,
    Message,
    OutboxItem,
    ProposedAction,
    ToolCall,
    table_of,
)

#: What erased text reads (on a review card a running bot refreshes, in the audit CLI).
ERASED = "[erased]"
#: The audit kind of the line ``supportbot forget`` leaves (itself never erased: it says only that).
ERASURE_KIND = "erasure"

#: Drafts whose conversation is still being worked on: drafted, reviewed, or sent.
WORKING_DRAFT_STATES = (DraftStatus.DRAFTING, DraftStatus.AWAITING_REVIEW, DraftStatus.APPROVED, DraftStatus.EDITED)

Scope = Callable[[ColumnElement[Any]], ColumnElement[bool]]

_messages = table_of(Message)
_attachments = table_of(AttachmentRow)
_drafts = table_of(Draft)
_calls = table_of(ToolCall)
_outbox = table_of(OutboxItem)
_audit = table_of(AuditEvent)
_conversations = table_of(Conversation)
_actions = table_of(ProposedAction)

#: Proposals nothing more happens to.
SETTLED_ACTION_STATES = (
    ActionStatus.REFUSED,
    ActionStatus.EXECUTED,
    ActionStatus.FAILED,
    ActionStatus.REJECTED,
    ActionStatus.SUPERSEDED,
)


def sha256_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def conversations_in_flight(states: tuple[DraftStatus, ...] = WORKING_DRAFT_STATES) -> CompoundSelect[Any]:
    """The ids of conversations with work in flight: a draft in one of ``states`` (by default
    being written, awaiting review or approved and not sent yet), or a reply waiting to be (or
    being) posted."""
    d, o = _drafts.c, _outbox.c
    return union(
        select(d.conversation_id).where(d.status.in_(states)),
        select(d.conversation_id)
        .join(_outbox, o.draft_id == d.id)
        .where(o.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING))),
    )


def settled(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """The scope of the retention job: conversations with nothing in flight."""
    return not_(column.in_(conversations_in_flight()))


def one_conversation(conversation_id: str) -> Scope:
    return lambda column: column == conversation_id


def _older(column: Any, before: datetime | None) -> ColumnElement[bool]:
    return column < before if before is not None else literal(True)


async def _erase_ids(conn: AsyncConnection, query: Select[Any], table: Any, values: dict[str, Any]) -> int:
    ids = list((await conn.execute(query)).scalars())
    if ids:
        await conn.execute(update(table).where(table.c.id.in_(ids)).values(**values))
    return len(ids)


async def _rewrite(conn: AsyncConnection, table: Any, changes: list[dict[str, Any]]) -> int:
    """Give each row (``row_id``) its own new values, in one executemany."""
    if changes:
        columns = [name for name in changes[0] if name != "row_id"]
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(f"new_{name}") for name in columns})
        )
        await conn.execute(
            statement, [{"row_id": c["row_id"], **{f"new_{name}": c[name] for name in columns}} for c in changes]
        )
    return len(changes)


async def erase_messages(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Messages' text (and its kept translations), author names and file records (names, links)."""
    m = _messages.c
    query = select(m.id, m.text).where(scope(m.conversation_id), m.text != ERASED, _older(m.created_at, before))
    rows = (await conn.execute(query.limit(limit))).all()
    await translation_rows.forget_texts(conn, [row.text for row in rows])
    ids = select(m.id).where(m.id.in_([row.id for row in rows]))
    return await _erase_ids(conn, ids, _messages, {"text": ERASED, "author_name": "", "attachments": []})


async def erase_images(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Images' bytes and file names."""
    a, m = _attachments.c, _messages.c
    query = (
        select(a.id)
        .join(_messages, m.id == a.message_id)
        .where(scope(m.conversation_id), a.filename != ERASED, _older(m.created_at, before))
        .limit(limit)
    )
    return await _erase_ids(conn, query, _attachments, {"filename": ERASED, "data": b""})


async def erase_drafts(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Drafts' texts (and their kept translations): the draft, the agent's edit, the regeneration
    instruction."""
    d = _drafts.c
    query = select(d.id, d.text, d.edited_text).where(
        scope(d.conversation_id), d.text != ERASED, _older(d.created_at, before)
    )
    rows = (await conn.execute(query.limit(limit))).all()
    await translation_rows.forget_texts(conn, [text for row in rows for text in (row.text, row.edited_text)])
    ids = select(d.id).where(d.id.in_([row.id for row in rows]))
    return await _erase_ids(conn, ids, _drafts, {"text": ERASED, "edited_text": None, "instruction": None})


async def erase_tool_calls(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Tool calls' arguments, results, summaries and errors (an order's owner, an address)."""
    t, d = _calls.c, _drafts.c
    query = (
        select(t.id)
        .join(_drafts, d.id == t.draft_id)
        .where(scope(d.conversation_id), t.arguments != ERASED, _older(t.created_at, before))
        .limit(limit)
    )
    return await _erase_ids(conn, query, _calls, {"arguments": ERASED, "result": "", "summary": "", "error": ""})


async def erase_replies(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """The outbox's copies of replies already sent (or given up on); one still to send is kept."""
    o, d = _outbox.c, _drafts.c
    query = (
        select(o.id)
        .join(_drafts, d.id == o.draft_id)
        .where(
            scope(d.conversation_id),
            o.status.in_((OutboxStatus.SENT, OutboxStatus.FAILED)),
            o.text != ERASED,
            _older(o.created_at, before),
        )
        .limit(limit)
    )
    return await _erase_ids(conn, query, _outbox, {"text": ERASED, "last_error": ""})


async def erase_proposals(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Settled proposals' free text and who asked (the reason the model gave, the asker's account
    and the customer it was verified as); order, amounts and outcome stay."""
    a, d = _actions.c, _drafts.c
    rows = (
        await conn.execute(
            select(a.id, a.params)
            .join(_drafts, d.id == a.draft_id)
            .where(
                scope(d.conversation_id),
                a.status.in_(SETTLED_ACTION_STATES),
                a.verdict != ERASED,
                _older(a.created_at, before),
            )
            .limit(limit)
        )
    ).all()
    hidden = {"reason": ERASED, "asked_by": None, "asker_verified_as": None}
    return await _rewrite(
        conn, _actions, [{"row_id": row.id, "params": {**row.params, **hidden}, "verdict": ERASED} for row in rows]
    )


async def hash_audit(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Audit lines' summaries replaced by their sha256 (details by theirs); kind, actor, ids and
    time stay."""
    e = _audit.c
    rows = (
        await conn.execute(
            select(e.id, e.summary, e.detail)
            .where(
                scope(e.conversation_id),
                e.kind != ERASURE_KIND,
                e.summary.not_like("sha256:%"),
                _older(e.created_at, before),
            )
            .limit(limit)
        )
    ).all()
    return await _rewrite(
        conn,
        _audit,
        [
            {
                "row_id": row.id,
                "summary": sha256_of(row.summary),
                "detail": {"sha256": sha256_of(json.dumps(row.detail, sort_keys=True))[7:]} if row.detail else {},
            }
            for row in rows
        ],
    )


async def erase_conversations(conn: AsyncConnection, scope: Scope, before: datetime | None, limit: int) -> int:
    """Conversations' summaries, facts and who the customer is (name, e-mail, where they wrote
    from); the thread, its ids (the platform account, the shop customer verified as) and its
    counters stay."""
    c = _conversations.c
    query = select(c.id).where(scope(c.id), c.customer_name != ERASED, _older(c.updated_at, before)).limit(limit)
    values = {
        "customer_name": ERASED,
        "asker_email": "",
        "location": ERASED,
        "summary": "",
        "facts": {},
        "fact_notes": [],
    }
    return await _erase_ids(conn, query, _conversations, values)


#: Every kind of erasure, by the name it is counted under.
ERASERS = {
    "messages": erase_messages,
    "images": erase_images,
    "drafts": erase_drafts,
    "tool_calls": erase_tool_calls,
    "proposals": erase_proposals,
    "replies": erase_replies,
    "audit_lines": hash_audit,
    "conversations": erase_conversations,
}
