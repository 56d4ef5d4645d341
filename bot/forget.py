"""``supportbot forget``: erase one person everywhere the bot keeps them.

The person is named by a shop customer id (``--customer C-2``) or a chat account
(``--account slack:U0123``); each leads to the other through the account links. Their
conversations are those started from one of their accounts, verified as them, or where they gave
one of their order e-mails. In each, one transaction each: messages, images, drafts' texts, tool
calls, sent replies, summaries and facts, name, e-mail and ids are erased (the rows, their times
and numbers stay, as the usage rows, which hold only numbers); the audit trail's summaries become
their sha256, plus one line saying the conversation was erased on request. A draft being written
or awaiting review is superseded: nothing of theirs is sent any more. A conversation with a
reply approved and not posted yet (a refund being made, a reply being posted) is skipped and named
(run the command again). Then their orders lose
name, e-mail and postal code, their refunds their free-text reasons, and their account links go.

Review cards live on Slack or Discord, out of the database's reach: the command marks them out of
date, and a running bot redraws them within seconds (``SWEEP_SECONDS``) as "[erased]". Without a
running bot they still show the text: the command lists them, to delete there.

Running it twice erases nothing the second time (every count is 0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store import Database, life, utcnow
from bot.store import erasure as rows
from bot.store.retention import ERASERS, one_conversation

#: How many rows of one kind one statement erases (a conversation's erasure loops until done).
CHUNK = 500

#: The counts, in the order they are printed.
KINDS = (*ERASERS, "open_drafts", "orders", "refund_reasons", "account_links")


@dataclass
class Forgotten:
    """What ``forget`` erased, per kind; the cards to update; conversations skipped."""

    counts: Counter[str] = field(default_factory=Counter)
    cards: list[rows.Card] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{kind.replace('_', ' '):<16}{self.counts[kind]}" for kind in KINDS]
        if self.cards:
            out.append(
                f"{len(self.cards)} review card(s) on Slack/Discord showed this person's text. A running bot"
                ' redraws them as "[erased]" within seconds; without one, delete them there:'
            )
            out.extend(f"  {card.desk} {card.ref}" for card in self.cards)
        if self.busy:
            out.append(
                f"{len(self.busy)} conversation(s) have an approved reply not posted yet and were left as they"
                " are; run the command again in a minute: " + ", ".join(self.busy)
            )
        return out


async def forget(engine: AsyncEngine, *, customer: str | None = None, account: str | None = None) -> Forgotten:
    """Erase the person with shop customer id ``customer`` or chat account ``account``."""
    db = Database(engine, reads=engine)
    forgotten = Forgotten()
    async with db.read() as conn:
        accounts = {account} if account else set()
        customers = {customer} if customer else set()
        customers |= await rows.linked_customers(conn, accounts)
        accounts |= await rows.linked_accounts(conn, customers)
        emails = await rows.emails_of(conn, customers)
        conversations = await rows.conversations_of(conn, accounts, customers, emails)
    for conversation_id in conversations:
        async with db.write() as conn:
            await life.lock(conn, conversation_id)
            if await rows.sending(conn, conversation_id):
                forgotten.busy.append(conversation_id)
                continue
            now = utcnow()
            erased: Counter[str] = Counter({"open_drafts": await rows.retire_open_drafts(conn, conversation_id, now)})
            scope = one_conversation(conversation_id)
            for kind, erase in ERASERS.items():
                while (count := await erase(conn, scope, None, CHUNK)) > 0:
                    erased[kind] += count
                    if count < CHUNK:
                        break
            await rows.forget_ids(conn, conversation_id)
            if sum(erased.values()):
                forgotten.cards.extend(await rows.refresh_cards(conn, conversation_id, now))
                await rows.note_erasure(conn, conversation_id, now)
            forgotten.counts.update(erased)
    async with db.write() as conn:
        forgotten.counts["orders"] += await rows.erase_orders(conn, customers)
        forgotten.counts["refund_reasons"] += await rows.erase_refund_reasons(conn, customers)
        forgotten.counts["account_links"] += await rows.unlink(conn, accounts, customers)
    return forgotten
