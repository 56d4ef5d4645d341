"""What a customer opening a conversation is told at once, before any human answers: the
policy's ``[desk] acknowledgement`` (or its ``[desk.acknowledgement_texts]`` text for the
customer's language) while the desk is open, ``[desk.hours] out_of_hours`` while it is closed.
``{expected_minutes}`` is when an answer can be expected: the median wait of the last 7 days
(:mod:`bot.core.expected_wait`), or the first-response time while there are too few replies to
tell, counted in business time. Fixed texts the managers wrote, never the model's: queued in the
outbox by the ack that opens (or reopens) the conversation, in its transaction, and posted once
by the dispatcher (:mod:`bot.core.fixed_texts`)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core import fixed_texts, no_reply
from bot.core.expected_wait import ExpectedWait
from bot.domain.business_time import BusinessHours, business_deadline, is_open
from bot.domain.states import OutboxKind
from bot.events import InboundMessage
from bot.policy import DeskSection, PolicyStore
from bot.store import Database
from bot.store import conversations as conversation_rows


def _hours(desk: DeskSection) -> BusinessHours | None:
    return desk.hours.business_hours() if desk.hours is not None else None


def _closed(desk: DeskSection, now: datetime) -> bool:
    """Outside the hours, with an out-of-hours text to say so."""
    hours = desk.hours
    return hours is not None and bool(hours.out_of_hours or hours.out_of_hours_texts) and not is_open(_hours(desk), now)


def greeting(desk: DeskSection, now: datetime, *, language: str | None = None, typical: float | None = None) -> str:
    """The text for a conversation opened at ``now`` ("": say nothing); ``typical``: the median
    wait in business minutes (None: the policy's first-response time)."""
    if desk.hours is not None and _closed(desk, now):
        return fixed_texts.in_language(desk.hours.out_of_hours, desk.hours.out_of_hours_texts, language)
    text = fixed_texts.in_language(desk.acknowledgement, desk.acknowledgement_texts, language)
    if not text:
        return ""
    wait = desk.first_response_minutes if typical is None else typical
    due = business_deadline(_hours(desk), now, timedelta(minutes=wait))
    return text.format(expected_minutes=max(1, math.ceil((due - now) / timedelta(minutes=1))))


class Greeter:
    """Queues the greeting of a conversation the ack opened."""

    def __init__(self, db: Database, policy: PolicyStore) -> None:
        self.policy = policy
        self.expected = ExpectedWait(db)
        self._typical: float | None = None

    def _says_anything(self) -> bool:
        desk = self.policy.current.desk
        hours = desk.hours
        return bool(
            desk.acknowledgement
            or desk.acknowledgement_texts
            or (hours and (hours.out_of_hours or hours.out_of_hours_texts))
        )

    async def prepare(self, now: datetime) -> None:
        """Before the ack's transaction: the median wait (read from SQL at most every few
        minutes), when an acknowledgement counts it."""
        desk = self.policy.current.desk
        texts = (desk.acknowledgement, *desk.acknowledgement_texts.values())
        if any("{expected_minutes}" in t for t in texts):
            self._typical = await self.expected.minutes(_hours(desk), now)

    async def claim(
        self,
        conn: AsyncConnection,
        conversation_id: str,
        message: InboundMessage,
        said: str,
        now: datetime,
        *,
        opening: bool,
    ) -> bool:
        """In the ack's transaction: queue the greeting of this opening of the conversation by
        ``message`` (``said``: its text as stored; ``opening``: its first). False: nothing to say,
        it was queued before, or the message will get no answer to promise ("thanks!" reopening a
        resolved conversation, an emoji alone: :func:`bot.core.no_reply.needs_no_reply`)."""
        policy = self.policy.current
        if not self._says_anything() or no_reply.needs_no_reply(said, message.attachments, policy, opening=opening):
            return False
        thread = message.thread
        desk = policy.desk
        closed = _closed(desk, now)
        language = None
        if desk.hours.out_of_hours_texts if closed and desk.hours else desk.acknowledgement_texts:
            facts = await conversation_rows.facts_of(conn, conversation_id)
            language = await fixed_texts.language_of(conn, conversation_id, facts, said)
        text = greeting(desk, now, language=language, typical=self._typical)
        if not text:
            return False
        kind = OutboxKind.OUT_OF_HOURS if closed else OutboxKind.ACKNOWLEDGEMENT
        key = f"greeting-{conversation_id}-{await fixed_texts.opening(conn, conversation_id)}"
        return await fixed_texts.claim(conn, kind, conversation_id, thread, key, text, now)
