"""What customers say about the answers (``[feedback]``): their 👍 / 👎 on a delivered reply,
and the CSAT question after an agent's Resolve.

A vote is kept with the draft whose reply it rates, once per customer per reply (a second click
changes it). Only the person who asked may rate: the role classifier
(:func:`bot.domain.roles.classify`) tells an agent or an outsider, who are refused politely; a
bot's click is ignored. The CSAT question is a fixed text of the policy, queued through the
outbox (:mod:`bot.core.fixed_texts`) under ``csat-<conversation>-<opening>`` in the Resolve's
own transaction, so it is sent once per opening; the bot's own resolutions (a "thanks!" it
answered with no reply, an idle conversation) never ask it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core import fixed_texts
from bot.domain.feedback import Feedback, FeedbackKind
from bot.domain.outcome import AuditLine
from bot.domain.roles import Role, classify
from bot.domain.states import DraftStatus, OutboxKind
from bot.events import FeedbackClick
from bot.logs import log_event
from bot.policy import FeedbackSection, PolicyStore
from bot.ports import DecisionOutcome
from bot.store import Database, records, utcnow
from bot.store import conversations as conversation_rows
from bot.store import feedback as feedback_rows
from bot.store.schema import Draft, Message, table_of

log = logging.getLogger(__name__)

_drafts, _messages = table_of(Draft).c, table_of(Message).c
#: A reply's buttons can be clicked the moment the platform shows it, before the bot has recorded
#: the post as sent: an approved or edited draft is one being delivered.
_RATED_STATES = (DraftStatus.APPROVED, DraftStatus.EDITED, DraftStatus.SENT)

THANKS = "Thanks for your feedback!"
NOT_RATED = "This reply cannot be rated (any more)."
AGENTS_DO_NOT_RATE = "Only the customer rates the replies; an agent's view goes on the review card."
ONLY_THE_ASKER = "Only the person who asked can rate this reply."


@dataclass(frozen=True, slots=True)
class RatedReply:
    """A delivered reply as a vote needs it: its conversation and who asked."""

    conversation_id: str
    asker_id: str


async def _rated_reply(conn: AsyncConnection, draft_id: str) -> RatedReply | None:
    row = (
        await conn.execute(
            select(_drafts.conversation_id, _messages.author_id)
            .join(table_of(Message), _messages.id == _drafts.message_id)
            .where(_drafts.id == draft_id, _drafts.status.in_(_RATED_STATES))
        )
    ).first()
    return RatedReply(row[0], row[1]) if row is not None else None


class FeedbackDesk:
    """Takes the customers' clicks on the feedback buttons."""

    def __init__(self, db: Database, policy: PolicyStore) -> None:
        self.db = db
        self.policy = policy

    async def rate(self, click: FeedbackClick) -> DecisionOutcome:
        """Keep the asker's vote on a delivered reply; refuse anyone else's with a short reason
        (an empty message: a bot's click, ignored)."""
        now = utcnow()
        async with self.db.write() as conn:
            reply = await _rated_reply(conn, click.draft_id)
            if reply is None:
                return DecisionOutcome(False, NOT_RATED)
            role = classify(click.author, reply.asker_id, self.policy.current)
            if role is Role.BOT:
                return DecisionOutcome(False)
            if role is Role.AGENT:
                outcome = DecisionOutcome(False, AGENTS_DO_NOT_RATE)
            elif click.author.id != reply.asker_id:
                outcome = DecisionOutcome(False, ONLY_THE_ASKER)
            else:
                answer = Feedback(click.draft_id, FeedbackKind.REPLY, click.vote.score, click.author.id)
                await feedback_rows.record(conn, answer, now)
                line = AuditLine(reply.conversation_id, click.draft_id, "feedback", click.author.id, str(click.vote))
                await records.add_audit(conn, [line], now)
                outcome = DecisionOutcome(True, THANKS)
        log_event(
            log,
            "feedback",
            conversation=reply.conversation_id,
            draft=click.draft_id,
            role=str(role),
            vote=str(click.vote),
            accepted=outcome.ok,
        )
        return outcome


async def ask_csat(conn: AsyncConnection, conversation_id: str, feedback: FeedbackSection, now: datetime) -> bool:
    """In the transaction where an agent resolved the conversation: queue the CSAT question;
    False when the policy has none or this opening was asked already."""
    if not feedback.csat_question:
        return False
    conversation = await conversation_rows.load_conversation(conn, conversation_id)
    key = f"csat-{conversation_id}-{await fixed_texts.opening(conn, conversation_id)}"
    return await fixed_texts.claim(
        conn, OutboxKind.CSAT, conversation_id, conversation.thread, key, feedback.csat_question, now
    )
