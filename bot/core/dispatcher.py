"""The dispatcher: executes approved actions exactly once, then posts the approved reply
exactly once; the policy's fixed texts (acknowledgement, out of hours, hand-off) are outbox rows
too, posted exactly once the same way (no draft, no refund, no card).

Due outbox rows are claimed under a lease the dispatcher renews while it works; different threads
are delivered concurrently (bounded), one thread's replies in order, so one hanging post never
holds back the rest. A claim left behind by a crash expires with its lease; the next claimer first
asks the platform whether the reply is already there. Refunds run before the reply, with an
idempotency key per action: a refund that fails stops the reply, and the card says so.

A reply queued as :attr:`~bot.domain.states.OutboxKind.DIRECT_REPLY` (``[identity] public_places
= "dm"`` in a public place) goes to the conversation's customer by direct message; the very
transaction that records it sent queues the policy's ``dm_notice`` for the public thread (a fixed
text under its own key), so each is posted once, a crash between them included. A customer who
accepts no direct message gets nothing, in the thread neither: the card says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC
from typing import Any

from sqlalchemy import select

from bot import metrics
from bot.core import fixed_texts
from bot.core.refund_execution import RefundExecutor
from bot.core.tasks import Supervisor
from bot.core.timing import WorkTiming
from bot.domain.outcome import AuditLine
from bot.domain.states import ActionStatus, DraftStatus, OutboxKind
from bot.errors import DirectMessageRefused, PlatformError
from bot.events import ThreadRef
from bot.logs import log_event
from bot.policy import PolicyStore
from bot.ports import CustomerChannel
from bot.store import Database, records, utcnow
from bot.store import conversations as conversation_rows
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store import outbox as outbox_rows
from bot.store.conversations import ConversationState
from bot.store.outbox import ClaimedReply
from bot.store.records import StoredAction
from bot.store.schema import Conversation, Draft
from tools.orders import OrderBackend

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims due outbox rows and delivers them."""

    def __init__(
        self,
        db: Database,
        policy: PolicyStore,
        orders: OrderBackend,
        channels: dict[str, CustomerChannel],
        counters: Counter[str],
        owner: str,
        *,
        timing: WorkTiming,
        concurrency: int,
        refresh_card: Callable[[str], Any],
        supervisor: Supervisor,
    ) -> None:
        self.db = db
        self.policy = policy
        self.orders = orders
        self.channels = channels
        self.counters = counters
        self.owner = owner
        self.timing = timing
        self.lease = timing.lease
        self.concurrency = concurrency
        self._refresh_card = refresh_card
        self.supervisor = supervisor
        self.refunds = RefundExecutor(db, policy, orders, counters, timing)
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[Any]] = {}
        # One claiming pass at a time in this process: a second one (settle's) would skip the
        # rows the first holds locked on PostgreSQL and see none of them in flight yet.
        self._claiming = asyncio.Lock()
        self._winding_down = False
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, poll_seconds: float = 1.0) -> None:
        """Deliver forever: on every approval, and every ``poll_seconds`` for retries, expired
        leases and rows other instances left behind."""
        renewing = asyncio.create_task(self._renew_forever())
        try:
            while True:
                await self.deliver_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=poll_seconds)
                self._wake.clear()
        finally:
            renewing.cancel()
            for task in list(self._in_flight.values()):
                task.cancel()
            await asyncio.gather(renewing, *self._in_flight.values(), return_exceptions=True)

    async def wind_down(self, timeout: float) -> bool:
        """Claim nothing more (what is due stays in the outbox for the next run) and wait up to
        ``timeout`` for the replies being posted; True when none is left."""
        self._winding_down = True
        if self._in_flight:
            await asyncio.wait(set(self._in_flight.values()), timeout=timeout)
        return not self._in_flight

    async def deliver_due(self) -> int:
        """Claim what is due (up to the free slots) and start delivering it; returns how many."""
        async with self._claiming:
            free = self.concurrency - len(self._in_flight)
            if free <= 0 or self._winding_down:
                return 0
            async with self.db.write() as conn:
                claimed = await outbox_rows.claim_due(conn, self.owner, utcnow(), self.lease, free)
            self.passes += 1
            for item in claimed:
                # The supervisor owns each delivery: a failure is logged with the draft and counted
                # (the row is retried when its lease expires).
                task = self.supervisor.spawn("deliver", self._deliver_and_free(item), draft=item.label)
                self._in_flight[item.id] = task
            return len(claimed)

    async def _deliver_and_free(self, item: ClaimedReply) -> None:
        try:
            await self._deliver(item)
        finally:
            self._in_flight.pop(item.id, None)
            self._wake.set()  # the thread's next reply may be due now

    async def settle(self, timeout: float = 10.0) -> None:
        """Deliver everything due now and wait for it (tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.deliver_due()
            if not self._in_flight:
                return
            await asyncio.wait(set(self._in_flight.values()), timeout=max(0.0, deadline - loop.time()))

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_every)
            if self._in_flight:
                try:
                    async with self.db.write() as conn:
                        await outbox_rows.renew(conn, list(self._in_flight), self.owner, utcnow() + self.lease)
                except Exception:
                    metrics.background_failure("outbox-lease-renewal")
                    log.exception("renewing outbox leases failed")

    async def _deliver(self, item: ClaimedReply) -> None:
        if item.draft_id is None:
            await self._deliver_text(item)
            return
        d, c = Draft.__table__.c, Conversation.__table__.c
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(d.conversation_id, d.decided_at, c.platform, c.workspace, c.channel, c.thread, c.customer_id)
                    .join(Conversation.__table__, c.id == d.conversation_id)
                    .where(d.id == item.draft_id)
                )
            ).one()
            actions = await records.actions_of(conn, item.draft_id, status=ActionStatus.APPROVED)
            conversation = (
                await conversation_rows.load_conversation(conn, str(row.conversation_id)) if actions else None
            )
        thread = ThreadRef(row.platform, row.workspace, row.channel, row.thread)
        conversation_id = str(row.conversation_id)
        channel = self.channels.get(thread.platform)
        if channel is None:
            await self._retry(item, f"{thread.platform} is not connected")
            return
        target: ThreadRef | None = thread
        if item.kind is OutboxKind.DIRECT_REPLY:  # opened before any refund: a refusal moves no money
            target = await self._open_direct(item, channel, thread, str(row.customer_id), conversation_id)
        if target is None or not await self._refund(item, conversation_id, conversation, actions):
            return
        message_id = await self._post(item, channel, target, conversation_id)
        if message_id is None or not await self._record_sent(item, conversation_id, thread, message_id):
            return
        self.counters["replies_sent"] += 1
        decided_at = (
            row.decided_at if row.decided_at is None or row.decided_at.tzinfo else row.decided_at.replace(tzinfo=UTC)
        )
        metrics.delivered(decided_at)
        log_event(
            log,
            "reply_sent",
            conversation=conversation_id,
            draft=item.draft_id,
            platform=thread.platform,
            message=message_id,
            attempts=item.attempts,
        )
        await self._refresh_card(item.draft_id)

    async def _deliver_text(self, item: ClaimedReply) -> None:
        """A fixed text of the policy: posted once under its key, recorded by an audit line."""
        c = Conversation.__table__.c
        conversation_id = str(item.conversation_id)
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(c.platform, c.workspace, c.channel, c.thread).where(c.id == conversation_id))
            ).one()
        thread = ThreadRef(row.platform, row.workspace, row.channel, row.thread)
        channel = self.channels.get(thread.platform)
        if channel is None:
            await self._retry(item, f"{thread.platform} is not connected")
            return
        message_id = await self._post(item, channel, thread, conversation_id)
        if message_id is None:
            return
        now = utcnow()
        async with self.db.write() as conn:
            if not await outbox_rows.mark_sent(conn, item.id, self.owner, message_id, now):
                return
            line = AuditLine(conversation_id, None, "sent", "dispatcher", f"{item.kind} text posted as {message_id}")
            await records.add_audit(conn, [line], now)
        self.counters["fixed_texts_sent"] += 1
        log_event(log, "fixed_text_sent", conversation=conversation_id, key=item.key, message=message_id)

    async def _refund(
        self,
        item: ClaimedReply,
        conversation_id: str,
        conversation: ConversationState | None,
        actions: list[StoredAction],
    ) -> bool:
        """Execute the draft's approved refunds before its reply; False when the reply must wait
        (retried) or never go (failed)."""
        held = await self.refunds.execute(conversation_id, conversation, actions, attempts=item.attempts)
        if held is None:
            return True
        if held.retry:
            await self._retry(item, held.reason)
        else:
            await self._fail(item, conversation_id, held.reason)
        return False

    async def _open_direct(
        self, item: ClaimedReply, channel: CustomerChannel, thread: ThreadRef, customer: str, conversation_id: str
    ) -> ThreadRef | None:
        """The customer's direct message with the bot (opening it again finds the same one); None
        when the reply must wait or never go."""
        try:
            return await channel.open_direct(thread, customer)
        except PlatformError as exc:
            await self._platform_failed(item, thread, conversation_id, exc, "open_direct")
            return None

    async def _post(
        self, item: ClaimedReply, channel: CustomerChannel, thread: ThreadRef, conversation_id: str
    ) -> str | None:
        """Post the reply (or find the one an earlier attempt posted); None when it must wait."""
        key = item.key
        try:
            existing = await channel.find_reply(thread, key) if item.attempts > 1 else None
            if existing:
                return existing
            if item.draft_id and item.kind is OutboxKind.REPLY and self.policy.current.feedback.after_reply:
                return await channel.post_reply(thread, item.text, idempotency_key=key, feedback_for=item.draft_id)
            # Without buttons the argument is left out: a channel written before it keeps working.
            return await channel.post_reply(thread, item.text, idempotency_key=key)
        except PlatformError as exc:
            await self._platform_failed(item, thread, conversation_id, exc, "post_reply")
            return None

    async def _platform_failed(
        self, item: ClaimedReply, thread: ThreadRef, conversation_id: str, exc: PlatformError, call: str
    ) -> None:
        """Retry later, or give up once the attempts are spent (at once for a customer who
        accepts no direct message: the reply is never posted anywhere else)."""
        log.warning("%s for %s failed (attempt %d): %s", call, item.label, item.attempts, exc)
        metrics.platform_error(thread.platform, call)
        if isinstance(exc, DirectMessageRefused):
            await self._fail(
                item,
                conversation_id,
                f"the customer accepts no direct message ({exc}), and the reply was not posted in the public "
                "thread either: answer them by hand, or ask them to open their direct messages",
            )
        elif item.attempts >= self.timing.reply_attempts:
            await self._fail(item, conversation_id, f"the platform refused the reply ({exc})")
        else:
            await self._retry(item, f"{type(exc).__name__}: {exc}")

    async def _record_sent(self, item: ClaimedReply, conversation_id: str, thread: ThreadRef, message_id: str) -> bool:
        """The reply is in the thread (or the customer's direct messages): outbox, draft,
        conversation and audit say so, and a direct reply queues the thread's ``dm_notice``
        (False: our lease expired and someone else took over; they found the reply)."""
        draft_id = str(item.draft_id)  # a reply's row (a fixed text is recorded by _deliver_text)
        now = utcnow()
        async with self.db.write() as conn:
            await life_rows.lock(conn, conversation_id)
            if not await outbox_rows.mark_sent(conn, item.id, self.owner, message_id, now):
                return False
            status = await draft_rows.status_of(conn, draft_id)
            if status in (DraftStatus.APPROVED, DraftStatus.EDITED):
                await draft_rows.transition(conn, draft_id, status, DraftStatus.SENT, now, sent_message_id=message_id)
            await conversation_rows.add_reply(conn, conversation_id, draft_id, item.text, message_id, now)
            where = "sent by direct message" if item.kind is OutboxKind.DIRECT_REPLY else "posted"
            await records.add_audit(
                conn,
                [AuditLine(conversation_id, draft_id, "sent", "dispatcher", f"reply {where} as {message_id}")],
                now,
            )
            if item.kind is OutboxKind.DIRECT_REPLY:
                line = self.policy.current.identity.dm_notice
                key = f"dm-notice-{draft_id}"
                await fixed_texts.claim(conn, OutboxKind.DM_NOTICE, conversation_id, thread, key, line, now)
        return True

    async def _retry(self, item: ClaimedReply, error: str) -> None:
        due = utcnow() + self.timing.reply_retry_after(item.attempts)
        async with self.db.write() as conn:
            await outbox_rows.retry_later(conn, item.id, self.owner, error, due)

    async def _fail(self, item: ClaimedReply, conversation_id: str, error: str) -> None:
        now = utcnow()
        async with self.db.write() as conn:
            if not await outbox_rows.mark_failed(conn, item.id, self.owner, error):
                return  # our lease expired and someone else took over
            if item.draft_id is not None:
                status = await draft_rows.status_of(conn, item.draft_id)
                if status in (DraftStatus.APPROVED, DraftStatus.EDITED):
                    await draft_rows.transition(conn, item.draft_id, status, DraftStatus.SEND_FAILED, now)
            await records.add_audit(
                conn, [AuditLine(conversation_id, item.draft_id, "send_failed", "dispatcher", error)], now
            )
        self.counters["sends_failed"] += 1
        if item.draft_id is not None:
            await self._refresh_card(item.draft_id)
