"""The customer's answer to the CSAT question (issue 21, point 4), read in intake's ack.

When an agent's Resolve asked the policy's CSAT question (:func:`bot.core.feedback.ask_csat`)
and that question is still the newest text the bot sent in the conversation's current, resolved
opening, the conversation's customer's next message is read as a score if it is one
(:func:`score_of`). Then it is kept as ``csat`` feedback against the conversation's last sent
draft (one per customer and opening: a second answer replaces the first), with an audit line
and the ``supportbot_csat_answers`` metric; the conversation stays resolved, nothing is
drafted, no card and no model call. Anything else is an ordinary message and reopens it.

Accepted answers (:func:`score_of`), a score of 1 to 5 and at most a few words after it:

* a digit alone: ``4``; ``5.``; ``3!``
* out of five: ``4/5``, ``4 / 5``, ``4 out of 5``, ``4 of 5``
* stars: ``3 stars``, ``1 star``, ``⭐⭐⭐⭐``, ``★★★``, ``4⭐``
* any of these followed by a separator (``-``, ``–``, ``:``, ``,``, ``.``, ``!``, ``)``, an
  emoji) and up to eight words with no digit: ``5 - great``, ``5 - thanks!``, ``2, too slow``

Never a score: a question (any ``?``, or a word such as *where*, *when*, *why*, *how*,
*what*, *can*, *could*, *do*, *but*, *please*, *help* after the score), another number
anywhere (an order id, ``10``, ``2 of 3``), words straight after the digit with no separator
(``2 items are missing``), words before it (``my order #W2611340 is late``), or a longer text.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core import fixed_texts
from bot.domain.feedback import Feedback, FeedbackKind
from bot.domain.outcome import AuditLine
from bot.domain.states import ConversationStatus, DraftStatus, OutboxStatus
from bot.store import feedback as feedback_rows
from bot.store.life import Life
from bot.store.records import add_audit
from bot.store.schema import Draft, OutboxItem, table_of

_drafts, _outbox = table_of(Draft).c, table_of(OutboxItem).c

#: At most this many words may follow the score.
MAX_WORDS_AFTER = 8
_STAR = "⭐★"
#: Words after a score that make it the start of a question or a new request, not an answer
#: (a misread answer only reopens the conversation; a misread problem would go unanswered).
_QUESTION_WORDS = ("where", "when", "why", "how", "what", "who", "which", "can", "could", "would", "will")
_ASKING = frozenset((*_QUESTION_WORDS, "do", "does", "did", "but", "please", "help"))
_ANSWER = re.compile(
    rf"""
    (?:
        (?P<digit>[1-5])(?![0-9])
        (?:\s*(?:/|out\s+of|of)\s*5(?![0-9]))?
        (?:\s*(?:stars?\b|[{_STAR}]))?
      | (?P<stars>(?:[{_STAR}]\s*){{1,5}})
    )
    (?P<rest>.*)
    """,
    re.VERBOSE | re.IGNORECASE | re.DOTALL,
)


def score_of(text: str) -> int | None:
    """The CSAT score (1..5) ``text`` answers with, or None when it is not an answer (see the
    module's list of accepted forms)."""
    text = text.replace("\ufe0f", "").strip()  # emoji variation selectors (⭐️)
    if "?" in text:
        return None
    found = _ANSWER.fullmatch(text)
    if found is None:
        return None
    rest = found["rest"].strip()
    if rest:
        words = re.findall(r"[^\W\d_]+", rest.lower())
        if re.search(rf"[0-9{_STAR}]", rest) or len(rest.split()) > MAX_WORDS_AFTER or _ASKING.intersection(words):
            return None
        if found["digit"] and rest[0].isalnum():  # "2 items are missing": a sentence
            return None
    if found["digit"]:
        return int(found["digit"])
    return sum(1 for c in found["stars"] if c in _STAR)


async def _question_is_newest(conn: AsyncConnection, conversation_id: str) -> bool:
    """Whether the newest text the bot sent (or is sending) in the conversation is the CSAT
    question of its current opening."""
    newest = (
        await conn.execute(
            select(_outbox.idempotency_key)
            .where(
                _outbox.conversation_id == conversation_id,
                _outbox.status.in_((OutboxStatus.SENT, OutboxStatus.SENDING)),
            )
            .order_by(_outbox.id.desc())
            .limit(1)
        )
    ).first()
    opening = await fixed_texts.opening(conn, conversation_id)
    return newest is not None and newest[0] == f"csat-{conversation_id}-{opening}"


async def _last_sent_draft(conn: AsyncConnection, conversation_id: str) -> str | None:
    return await conn.scalar(
        select(_drafts.id)
        .where(_drafts.conversation_id == conversation_id, _drafts.status == DraftStatus.SENT)
        .order_by(_drafts.created_at.desc(), _drafts.id.desc())
        .limit(1)
    )


async def take_answer(conn: AsyncConnection, life: Life, author_id: str, text: str, now: datetime) -> int | None:
    """In the ack's transaction: keep ``text`` as the customer's CSAT answer when it is one to
    the question just asked; the score kept, or None (an ordinary message: nothing done)."""
    if life.status is not ConversationStatus.RESOLVED or author_id != life.customer_id:
        return None
    score = score_of(text)
    if score is None or not await _question_is_newest(conn, life.conversation_id):
        return None
    draft_id = await _last_sent_draft(conn, life.conversation_id)
    if draft_id is None or not await feedback_rows.record(
        conn, Feedback(draft_id, FeedbackKind.CSAT, score, author_id), now
    ):
        return None
    line = AuditLine(life.conversation_id, draft_id, "csat_answer", author_id, f"CSAT {score} of 5: {text[:200]}")
    await add_audit(conn, [line], now)
    return score
