"""Intake: the ack path. Who is speaking is decided here, from the facts the adapter reported
(:func:`bot.domain.roles.classify`), and what their message does, in one short transaction:

* the **customer**'s message is stored and supersedes a pending draft and queues a new one;
  it reopens a resolved conversation, unless it answers the CSAT question just asked
  (:mod:`bot.core.csat`: kept as a score, nothing drafted, the conversation stays resolved);
  in a conversation a human answers it drafts nothing and the conversation's newest card
  shows it instead (at most one card per message: never a new one);
* an **agent** writing in the thread answers by hand: the pending draft is superseded ("answered
  by hand by …", nothing sent), the conversation becomes a human's (assigned to that agent) and
  waits on its customer; the message is stored as an ``agent`` turn the next draft sees;
* an **outsider**'s message is stored as context (an ``outsider`` turn) and drafts nothing;
* a **bot**'s message is ignored.

Drafting happens elsewhere, so the ack never waits behind a model.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot import identity, metrics
from bot.core import csat, edits
from bot.core.fairness import Flood, Pacer
from bot.core.files import records_at_ack
from bot.core.greeting import Greeter
from bot.domain.outcome import AuditLine
from bot.domain.roles import Role, classify
from bot.domain.states import ConversationOwner, ConversationStatus
from bot.domain.text import storable
from bot.events import InboundMessage, MessageDeleted, MessageKind, ThreadRef
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.store import Database, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store.conversations import Delivery, StoredTurn
from bot.store.life import Life
from bot.store.records import add_audit

log = logging.getLogger(__name__)

MAX_CUSTOMER_TEXT = 20_000


@dataclass(frozen=True, slots=True)
class Received:
    """What the ack stored: the new draft (None: nobody drafts for this message, or a deletion only
    retired one), the drafts it superseded, and the other cards whose conversation it changed."""

    draft_id: str | None
    superseded: tuple[str, ...]
    refresh: tuple[str, ...] = ()
    #: This message opened or reopened its conversation (the ack greets the customer then).
    opened: bool = False
    #: A fixed text was queued in the outbox (the dispatcher is woken for it).
    deliver: bool = False
    starts_at: datetime | None = None  # the draft waits for its sender's bucket until then
    flood: Flood | None = None  # a flood the desk has not heard of yet
    csat_score: int | None = None  # the message answered the CSAT question with this score


class Intake:
    """Records messages in customers' threads exactly once, and routes them by who wrote them."""

    def __init__(self, db: Database, policy: PolicyStore, counters: Counter[str]) -> None:
        self.db = db
        self.policy = policy
        self.counters = counters
        self.on_received: Callable[[Received], None] = lambda _received: None
        #: Whether the thread's workspace is served (:class:`bot.core.allowlist.WorkspaceAllowlist`).
        self.served: Callable[[ThreadRef], bool] = lambda _thread: True
        self.pacer = Pacer()
        self.greeter = Greeter(db, policy)

    def _stands_for_its_message(self, message: InboundMessage) -> bool:
        """An edit of a message never stored: the message itself when it is addressed to the bot
        (a mention, a direct message) where the bot listens. Its first delivery failed (Slack
        retries it later, after the edit) or never came; the late original then changes nothing."""
        return message.kind in (MessageKind.MENTION, MessageKind.DIRECT) and self.watched(message)

    def watched(self, message: InboundMessage) -> bool:
        watch = self.policy.current.channels.watch
        return not watch or message.kind is MessageKind.DIRECT or message.thread.channel in watch

    async def receive(
        self, message: InboundMessage, *, requested_by: str = "", earlier: Sequence[InboundMessage] = ()
    ) -> bool:
        """Store the message and do what its author's role calls for (``requested_by``: the agent
        who asked for a draft on it, :mod:`bot.core.on_demand`, audited in the same transaction;
        ``earlier``: its thread's messages before it, stored as context when it opens the
        conversation).
        False when the event was seen before (a redelivery), comes from a workspace not served, a
        channel the policy does not watch, or a bot: nothing is done. An edit (``edited``) of a
        stored message goes to :func:`bot.core.edits.amend` instead: at most one fresh draft,
        never a second message; the same message delivered again changes nothing."""
        if not self.served(message.thread):
            metrics.event_received("ignored")
            return False
        if not message.edited and not self.watched(message):
            self.counters["messages_ignored_unwatched"] += 1
            metrics.event_received("ignored")
            return False
        if message.author.is_bot:
            metrics.event_received("ignored")
            return False
        try:
            return await self._record(message, requested_by, earlier)
        except Exception:
            metrics.event_received("failed")
            raise

    async def _record(
        self, message: InboundMessage, requested_by: str = "", context: Sequence[InboundMessage] = ()
    ) -> bool:
        text = storable(message.text)[:MAX_CUSTOMER_TEXT]  # as stored: an edit compares with it
        now = utcnow()
        await self.greeter.prepare(now)
        # A message deleted before it (or its edit) reached us stays deleted: Slack retries a failed
        # delivery a minute later, and the deletion left its mark (:meth:`retract`).
        unless = conversation_rows.deletion_mark(message.thread, message.message_id)
        async with self.db.write(urgent=True) as conn:
            if not await self._first_delivery(conn, message.event_id, now, unless=unless):
                return False
            life, created, earlier = await self._find_or_open(conn, message, now)
            if earlier is not None or life is None:
                # Only an edit changes a stored message: the same message delivered again, or
                # late (its edit came first), is never newer than what is stored.
                amended = await edits.amend(conn, earlier, text, message.author.id, now) if message.edited else None
                repeated = True
            else:
                repeated = False
                conversation_id = life.conversation_id
                if created and context:
                    await self._store_context(conn, life, context, now)
                role, received = await self._store(conn, life, message, text, now)
                if requested_by:
                    line = AuditLine(
                        conversation_id, received.draft_id, "draft_requested", requested_by, "asked for a draft"
                    )
                    await add_audit(conn, [line], now)
                if created or received.opened:  # in this transaction: the greeting goes out once
                    greeted = await self.greeter.claim(conn, conversation_id, message, text, now, opening=created)
                    received = replace(received, deliver=greeted)
        if repeated:
            return self._amended(amended, "message_edited", message.event_id)
        self.counters["events_received"] += 1
        metrics.event_received("accepted")
        if received.csat_score is not None:
            self.counters["csat_answers"] += 1
            metrics.csat_answered(received.csat_score)
        log_event(
            log,
            "message_received",
            conversation=conversation_id,
            draft=received.draft_id,
            platform=message.thread.platform,
            event_id=message.event_id,
            kind=str(message.kind),
            author=message.author.id,
            role=role.value,
        )
        if received.starts_at is not None:
            flood = self.pacer.flood_to_show(message.thread.platform, message.author.id)
            received = replace(received, flood=flood)
        self.on_received(received)
        return True

    async def _find_or_open(
        self, conn: AsyncConnection, message: InboundMessage, now: datetime
    ) -> tuple[Life | None, bool, StoredTurn | None]:
        """The message as stored already, if it is; else its conversation, opened (and whether
        this opened it), unless it is an edit that stands for nothing we hold.

        An edit, or the same message again under a new event id: never a second message, draft
        or card. The conversation row is upserted before the message is looked up: that locks it
        (PostgreSQL) until this commits, so a concurrent copy of the message finds it stored; a
        conversation this statement created holds no message yet (one statement less on the ack).
        """
        earlier = None
        if message.edited:
            earlier = await conversation_rows.find_message(conn, message.thread, message.message_id)
            if earlier is not None or not self._stands_for_its_message(message):
                return None, False, earlier
        life, created = await conversation_rows.open_conversation(conn, message, now)
        if not created:
            earlier = await conversation_rows.find_message(conn, message.thread, message.message_id)
        return life, created, earlier

    async def _store(
        self, conn: AsyncConnection, life: Life, message: InboundMessage, text: str, now: datetime
    ) -> tuple[Role, Received]:
        """Store a new message and do what its author's role calls for, in the ack's transaction."""
        policy = self.policy.current
        conversation_id = life.conversation_id
        role = classify(message.author, life.customer_id, policy)
        if message.author.email:  # kept only when it may verify (another organisation's may not)
            email = identity.trusted_email(message.author, policy)
            await conversation_rows.note_asker_email(conn, conversation_id, message.author.id, email)
        message_id = await conversation_rows.add_customer_message(
            conn,
            conversation_id,
            message,
            text,
            now,
            records_at_ack(message, policy.limits.max_images_per_message),
            role=role.value,
        )
        if role is Role.AGENT:
            return role, await self._answered_by_hand(conn, life, message, now)
        if role is Role.OUTSIDER:
            line = AuditLine(conversation_id, None, "context", message.author.id, f"outsider wrote: {text[:200]}")
            await add_audit(conn, [line], now)
            return role, Received(None, ())
        return role, await self._from_customer(conn, life, message_id, message, text, now)

    async def _store_context(
        self, conn: AsyncConnection, life: Life, earlier: Sequence[InboundMessage], now: datetime
    ) -> None:
        """A new conversation's earlier thread messages, each as its author's turn (the customer,
        an agent, an outsider; a bot's is left out): context the draft sees, nothing drafted for
        them and nobody takes the conversation over by them."""
        policy = self.policy.current
        for message in earlier:
            role = classify(message.author, life.customer_id, policy)
            if role is Role.BOT:
                continue
            text = storable(message.text)[:MAX_CUSTOMER_TEXT]
            context = replace(message, attachments=())  # the words only
            await conversation_rows.add_customer_message(
                conn, life.conversation_id, context, text, now, [], role=role.value
            )

    async def retract(self, deleted: MessageDeleted) -> bool:
        """A customer deleted a message (see :mod:`bot.core.edits`): one short transaction, like
        the ack of a message. False when nothing changed."""
        now = utcnow()
        async with self.db.write(urgent=True) as conn:
            if not await self._first_delivery(conn, deleted.event_id, now):
                return False
            stored = await conversation_rows.find_message(conn, deleted.thread, deleted.message_id)
            if stored is None:  # not here yet, maybe: its late delivery must not draft it
                mark = conversation_rows.deletion_mark(deleted.thread, deleted.message_id)
                await conversation_rows.record_event(conn, mark, now)
            amended = await edits.retract(conn, stored, now)
        return self._amended(amended, "message_deleted", deleted.event_id)

    async def _first_delivery(self, conn: AsyncConnection, event_id: str, now: datetime, *, unless: str = "") -> bool:
        """Record a platform delivery id; False (counted) for a redelivery, or a message whose
        deletion (``unless``, its mark) came first."""
        delivery = await conversation_rows.record_event(conn, event_id, now, unless=unless)
        if delivery is Delivery.FIRST:
            return True
        if delivery is Delivery.WITHDRAWN:
            self.counters["messages_deleted_before_arrival"] += 1
            metrics.event_received("ignored")
            log_event(log, "message_deleted_before_arrival", event_id=event_id)
        else:
            self.counters["events_duplicate"] += 1
            metrics.event_received("duplicate")
        return False

    def _amended(self, amended: edits.Amended | None, what: str, event_id: str) -> bool:
        """After an edit or deletion committed: log it and hand its drafts on."""
        metrics.event_received("accepted" if amended else "ignored")
        if amended is None:
            return False
        log_event(
            log,
            what,
            conversation=amended.conversation_id,
            draft=amended.new_draft or "",
            superseded=",".join(amended.superseded),
            event_id=event_id,
        )
        if amended.new_draft is not None or amended.superseded:
            self.on_received(Received(amended.new_draft, amended.superseded))
        return True

    async def _from_customer(
        self, conn: AsyncConnection, life: Life, message_id: int, message: InboundMessage, text: str, now: datetime
    ) -> Received:
        conversation_id = life.conversation_id
        audit = [AuditLine(conversation_id, None, "message", message.author.id, f"customer wrote: {text[:200]}")]
        score = await csat.take_answer(conn, life, message.author.id, text, now)
        if score is not None:  # an answer to the CSAT question: it stays resolved, nothing drafted
            await add_audit(conn, audit, now)
            return Received(None, (), csat_score=score)
        if life.status is not ConversationStatus.OPEN:
            await life_rows.move_status(conn, conversation_id, life.status, ConversationStatus.OPEN, now)
            if life.status is ConversationStatus.RESOLVED:
                audit.append(AuditLine(conversation_id, None, "reopened", message.author.id, "the customer wrote"))
        if life.owner is ConversationOwner.HUMAN:
            # A human answers: no draft; the conversation's newest card shows what the customer wrote.
            await add_audit(conn, audit, now)
            retired = await draft_rows.supersede_open(
                conn, conversation_id, "", now, notice="Superseded by a newer customer message; a human answers it."
            )
            card = await life_rows.latest_card(conn, conversation_id)
            if card is None or card in retired:
                return Received(None, tuple(retired), opened=life.status is ConversationStatus.RESOLVED)
            await life_rows.touch_card(conn, card, now)
            return Received(None, tuple(retired), (card,), opened=life.status is ConversationStatus.RESOLVED)
        superseded = await draft_rows.supersede_open(conn, conversation_id, "a newer customer message", now)
        thread = message.thread
        starts_at = self.pacer.start_of(
            self.policy.current.fairness,
            platform=thread.platform,
            workspace=thread.workspace,
            sender=message.author.id,
            conversation=conversation_id,
            now=now,
        )
        draft_id = await draft_rows.insert_draft(conn, conversation_id, message_id, now, starts_at=starts_at)
        await add_audit(conn, audit, now)
        refresh: tuple[str, ...] = ()
        if life.status is ConversationStatus.RESOLVED:  # the old card shows the conversation reopened
            card = await life_rows.latest_card(conn, conversation_id)
            if card is not None and card not in superseded:
                await life_rows.touch_card(conn, card, now)
                refresh = (card,)
        reopened = life.status is ConversationStatus.RESOLVED
        return Received(draft_id, tuple(superseded), refresh, starts_at=starts_at, opened=reopened)

    @staticmethod
    async def _answered_by_hand(conn: AsyncConnection, life: Life, message: InboundMessage, now: datetime) -> Received:
        """An agent wrote in the customer's thread: they take the conversation over."""
        conversation_id = life.conversation_id
        agent = message.author.display_name or message.author.id
        why = f"answered by hand by {agent}"
        superseded = await draft_rows.supersede_open(
            conn, conversation_id, why, now, notice=f"Answered by hand by {agent}; nothing was sent."
        )
        assignee = {} if life.assignee_id else {"assignee_id": message.author.id, "assignee": agent}
        if life.owner is ConversationOwner.BOT:
            await life_rows.move_owner(
                conn, conversation_id, ConversationOwner.BOT, ConversationOwner.HUMAN, now, reason=why, **assignee
            )
        elif assignee:
            await life_rows.assign(conn, conversation_id, "", message.author.id, agent, now)
        if life.status is ConversationStatus.OPEN:
            await life_rows.move_status(
                conn, conversation_id, ConversationStatus.OPEN, ConversationStatus.WAITING_ON_CUSTOMER, now
            )
        refresh: tuple[str, ...] = ()
        card = await life_rows.latest_card(conn, conversation_id)
        if card is not None and card not in superseded:
            await life_rows.touch_card(conn, card, now)
            refresh = (card,)
        await add_audit(
            conn, [AuditLine(conversation_id, None, "answered_by_hand", message.author.id, message.text[:200])], now
        )
        return Received(None, tuple(superseded), refresh)

    async def has_conversation(self, thread: ThreadRef) -> bool:
        async with self.db.read() as conn:
            return await conversation_rows.has_conversation(conn, thread)
