"""The repository moves of ``supportbot forget`` (:mod:`bot.forget`): finding one person's
conversations, retiring their open drafts, and erasing what the shop's tables hold about them.
The conversations' rows themselves are erased by :mod:`bot.store.retention`'s erasers."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.states import OPEN_DRAFT_STATES, ActionStatus, DraftStatus, check_transition
from bot.store import pending_edits
from bot.store.records import move_actions_of
from bot.store.retention import ERASED, ERASURE_KIND, conversations_in_flight
from bot.store.schema import AuditEvent, Conversation, Draft, Message, table_of
from tools.orders import customer_accounts_table, order_refunds_table, orders_table

_conversations = table_of(Conversation)
_drafts = table_of(Draft)
_messages = table_of(Message)
_audit = table_of(AuditEvent)

#: What a retired draft's card says in place of its notice.
RETIRED_NOTICE = "Erased on request (supportbot forget); nothing will be sent."


@dataclass(frozen=True, slots=True)
class Card:
    """A review card that showed an erased conversation: where it is on its desk."""

    desk: str
    ref: str


async def linked_accounts(conn: AsyncConnection, customer_ids: Collection[str]) -> set[str]:
    """The chat accounts linked to these shop customers."""
    a = customer_accounts_table.c
    return set((await conn.execute(select(a.account).where(a.customer_id.in_(customer_ids)))).scalars())


async def linked_customers(conn: AsyncConnection, accounts: Collection[str]) -> set[str]:
    """The shop customers these chat accounts are linked to."""
    a = customer_accounts_table.c
    return set((await conn.execute(select(a.customer_id).where(a.account.in_(accounts)))).scalars())


async def emails_of(conn: AsyncConnection, customer_ids: Collection[str]) -> set[str]:
    """The e-mail addresses the shop's orders give for these customers."""
    o = orders_table.c
    query = select(o.customer_email).where(o.customer_id.in_(customer_ids), o.customer_email.is_not(None))
    return {str(e) for e in (await conn.execute(query)).scalars() if e}


async def conversations_of(
    conn: AsyncConnection, accounts: Collection[str], customer_ids: Collection[str], emails: Collection[str]
) -> list[str]:
    """Conversations started by one of ``accounts`` (``platform:user``), verified as one of
    ``customer_ids``, or where the asker gave one of ``emails``."""
    c = _conversations.c
    by_account = [
        and_(c.platform == platform, c.customer_id == user)
        for platform, _, user in (account.partition(":") for account in accounts)
    ]
    query = select(c.id).where(
        or_(
            false(),
            *by_account,
            c.verified_customer_id.in_(customer_ids),
            c.asker_email.in_(emails),
        )
    )
    return sorted(str(i) for i in (await conn.execute(query.order_by(c.id))).scalars())


async def sending(conn: AsyncConnection, conversation_id: str) -> bool:
    """A reply of this conversation was approved and is not posted yet (a refund being made, a
    reply waiting to be posted or being posted right now)."""
    approved = conversations_in_flight((DraftStatus.APPROVED, DraftStatus.EDITED)).subquery()
    query = select(approved.c[0]).where(approved.c[0] == conversation_id)
    return (await conn.execute(query.limit(1))).first() is not None


async def retire_open_drafts(conn: AsyncConnection, conversation_id: str, now: datetime) -> int:
    """Drafts being written or awaiting review become superseded (their proposals too): nothing
    of the conversation is sent any more. Their cards are brought up to date by a running bot."""
    for current in OPEN_DRAFT_STATES:
        check_transition(current, DraftStatus.SUPERSEDED)
    d = _drafts.c
    result = await conn.execute(
        update(_drafts)
        .where(d.conversation_id == conversation_id, d.status.in_(OPEN_DRAFT_STATES))
        .values(status=DraftStatus.SUPERSEDED, notice=RETIRED_NOTICE, version=d.version + 1, updated_at=now)
        .returning(d.id)
    )
    ids = [str(i) for i in result.scalars()]
    if ids:
        await move_actions_of(conn, ids, ActionStatus.PROPOSED, ActionStatus.SUPERSEDED)
        await pending_edits.forget(conn, ids)
    return len(ids)


async def refresh_cards(conn: AsyncConnection, conversation_id: str, now: datetime) -> list[Card]:
    """Mark every card of the conversation out of date (a running bot's sweeper redraws it from
    the erased rows: "[erased]"); the cards, to name them to the operator."""
    d = _drafts.c
    has_card = and_(d.conversation_id == conversation_id, d.card_ref != "")
    await conn.execute(update(_drafts).where(has_card).values(version=d.version + 1, updated_at=now))
    rows = await conn.execute(select(d.card_desk, d.card_ref).where(has_card).order_by(d.created_at))
    return [Card(str(r.card_desk), str(r.card_ref)) for r in rows]


async def forget_ids(conn: AsyncConnection, conversation_id: str) -> None:
    """The person's platform id and shop customer id off the conversation, its messages and its
    audit lines (the thread itself stays, so a later message there starts afresh)."""
    c, m, e = _conversations.c, _messages.c, _audit.c
    author = await conn.scalar(select(c.customer_id).where(c.id == conversation_id))
    await conn.execute(
        update(_conversations)
        .where(c.id == conversation_id)
        .values(customer_id="", verified_customer_id="", verified_via="")
    )
    await conn.execute(update(_messages).where(m.conversation_id == conversation_id).values(author_id=""))
    if author:
        await conn.execute(
            update(_audit).where(e.conversation_id == conversation_id, e.actor == author).values(actor="")
        )


async def note_erasure(conn: AsyncConnection, conversation_id: str, now: datetime) -> None:
    """One audit line saying the conversation was erased on request (and nothing else)."""
    await conn.execute(
        _audit.insert(),
        {
            "conversation_id": conversation_id,
            "draft_id": None,
            "kind": ERASURE_KIND,
            "actor": "supportbot forget",
            "summary": "erased on request",
            "detail": {},
            "created_at": now,
        },
    )


async def erase_orders(conn: AsyncConnection, customer_ids: Collection[str]) -> int:
    """The customer's name, e-mail and postal code off the shop's orders (amounts and dates stay)."""
    o = orders_table.c
    personal = or_(o.customer_name.is_not(None), o.customer_email.is_not(None), o.customer_postal_code.is_not(None))
    result = await conn.execute(
        update(orders_table)
        .where(o.customer_id.in_(customer_ids), personal)
        .values(customer_name=None, customer_email=None, customer_postal_code=None)
    )
    return int(result.rowcount)


async def erase_refund_reasons(conn: AsyncConnection, customer_ids: Collection[str]) -> int:
    """The free-text reasons of the customer's refunds (amounts, dates and keys stay)."""
    r, o = order_refunds_table.c, orders_table.c
    theirs = select(o.order_id).where(o.customer_id.in_(customer_ids))
    result = await conn.execute(
        update(order_refunds_table).where(r.order_id.in_(theirs), r.reason != ERASED).values(reason=ERASED)
    )
    return int(result.rowcount)


async def unlink(conn: AsyncConnection, accounts: Collection[str], customer_ids: Collection[str]) -> int:
    """Remove the links between the person's chat accounts and shop customer ids."""
    a = customer_accounts_table.c
    result = await conn.execute(
        delete(customer_accounts_table).where(or_(a.account.in_(accounts), a.customer_id.in_(customer_ids)))
    )
    return int(result.rowcount)
