"""No card when no reply is needed: "thanks!", "ok 👍", an emoji, "never mind", nothing written.

Two deciders, one guard. The cheap rules (:func:`cheap_rule`) look at the message before any
model call; the model may also say so with the ``no_reply_needed`` tool. Either way
:func:`must_draft` wins: a message with a question mark, an order-id-like token, an escalation
word or phrase of the policy, an attachment, an earlier customer message still unanswered, or
an agent's regenerate always gets a draft. The draft then leaves without a card
(:class:`bot.domain.outcome.NoReply`) and :func:`on_no_reply` resolves the conversation (by the
customer).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.outcome import AuditLine, ToolCallRecord
from bot.domain.states import ConversationStatus
from bot.policy import Policy
from bot.store import life as life_rows
from bot.store import records
from bot.store.conversations import StoredMessage
from tools.no_reply import NoReplyNeeded

#: The audit kind of a conversation resolved by the customer (``supportbot audit`` shows it).
AUDIT_KIND = "no_reply"

# Conservative: an id like #W2611340, 40021, ORD-77 (three digits, or a # with a letter or digit).
_ORDER_LIKE = re.compile(r"#\s?[A-Za-z0-9]|\d{3,}|\b[A-Za-z]{2,5}-\d+")
_WORDS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

# Whole messages that only acknowledge, in a few languages (after lower-casing, emoji and
# punctuation removed, whitespace collapsed). Anything longer or different gets a draft.
_THANKS = frozenset(
    {
        "thanks", "thank you", "thanks a lot", "thank you so much", "thanks so much", "many thanks",
        "thx", "ty", "tysm", "cheers", "thanks again", "thank you very much", "great thanks",
        "perfect thanks", "ok thanks", "okay thanks", "ok thank you", "awesome thanks", "thanks mate",
        "danke", "danke schön", "danke schon", "vielen dank", "merci", "merci beaucoup", "gracias",
        "muchas gracias", "grazie", "grazie mille", "obrigado", "obrigada", "dank je", "bedankt",
        "dziękuję", "спасибо", "ありがとう", "ありがとうございます", "谢谢", "多谢", "감사합니다",
    }
)  # fmt: skip
_ACKS = frozenset(
    {
        "ok", "okay", "k", "kk", "got it", "great", "perfect", "cool", "nice", "awesome", "sounds good",
        "all good", "alright", "understood", "noted", "super", "sure", "will do",
        "that's all", "that is all", "that's it", "d'accord", "parfait", "genial", "vale", "perfecto",
        "alles klar", "gut", "prima", "perfetto", "va bene", "好的", "了解", "はい",
    }
)  # fmt: skip
_NEVER_MIND = frozenset(
    {
        "never mind", "nevermind", "nvm", "never mind found it", "never mind i found it", "found it",
        "all sorted", "sorted", "no worries", "forget it", "ignore that", "ignore me", "solved it",
        "laisse tomber", "egal", "schon gut", "olvídalo", "no importa", "lascia perdere",
    }
)  # fmt: skip


def _plain(text: str) -> str:
    """Lower case, words only (emoji and punctuation gone), whitespace collapsed."""
    return " ".join(_WORDS.findall(unicodedata.normalize("NFC", text).lower()))


def _only_symbols(text: str) -> bool:
    """Emoji, reactions like :+1:, punctuation other than ``?``: no word, no digit."""
    stripped = re.sub(r":[a-z0-9_+-]+:", "", text)
    return bool(text.strip()) and not any(ch.isalnum() for ch in stripped)


def must_draft(
    text: str,
    *,
    attachments: Sequence[object] = (),
    policy: Policy,
    earlier_unanswered: bool = False,
    asked_by_agent: bool = False,
) -> str:
    """Why this message always gets a draft, whatever the rules or the model say ("" when
    nothing forces one)."""
    lowered = text.lower()
    rules = policy.escalation
    if asked_by_agent:
        return "an agent asked for a draft"
    if earlier_unanswered:
        return "an earlier customer message is still unanswered"
    if attachments:
        return "the message has an attachment"
    if "?" in text or "？" in text or "¿" in text:
        return "the message asks a question"
    if _ORDER_LIKE.search(text):
        return "the message names an order or id"
    if any(k.lower() in lowered for k in rules.keywords) or any(
        p.lower() in lowered for p in rules.human_request_phrases
    ):
        return "the message has an escalation word"
    return ""


def cheap_rule(text: str, *, opening: bool) -> str:
    """The rule that says ``text`` needs no reply ("" when none does); the caller checks
    :func:`must_draft` first. ``opening``: the customer's first message in the conversation. A
    message with nothing written needs no reply (a sticker alone) unless it opens: a bare mention
    of the bot opening a conversation, or calling it into a thread, is drafted."""
    if len(text) > 80:
        return ""
    if not text.strip():
        return "" if opening else "cheap rule: nothing written"
    if _only_symbols(text):
        return "cheap rule: emoji"
    plain = _plain(text)
    if plain in _THANKS:
        return "cheap rule: thanks"
    if plain in _ACKS:
        return "cheap rule: acknowledgement"
    if plain in _NEVER_MIND:
        return "cheap rule: never mind"
    return ""


def needs_no_reply(text: str, attachments: Sequence[object], policy: Policy, *, opening: bool) -> bool:
    """What the cheap rules will decide of a customer's message, as the ack sees it (before any
    draft): a greeting promising an answer is not sent for a message that gets none."""
    return not must_draft(text, attachments=attachments, policy=policy) and bool(cheap_rule(text, opening=opening))


def opens(turns: Sequence[StoredMessage], *, summarized: bool) -> bool:
    """Whether the newest of ``turns`` is the customer's first message in the conversation (none
    before it, nor in the summary of what came before ``turns``)."""
    return not summarized and not any(turn.role == "customer" for turn in turns[:-1])


def unanswered_before(turns: Sequence[StoredMessage], policy: Policy) -> bool:
    """True when one of the customer's turns since the last answer, before the newest, wants an
    answer (a draft superseded by the newest message would lose its question). "thanks!" then
    "🙏" want none; "where is my order?", "thanks!", "🙏" do."""
    earlier = list(turns[:-1])
    while earlier and earlier[-1].role == "customer":
        turn = earlier.pop()
        if not needs_no_reply(turn.text, turn.attachments, policy, opening=opens([*earlier, turn], summarized=False)):
            return True
    return False


def model_said(calls: Sequence[ToolCallRecord]) -> str:
    """The model's reason when it called ``no_reply_needed`` successfully ("" otherwise)."""
    for call in calls:
        if call.name == NoReplyNeeded.name and not call.error:
            try:
                reason = json.loads(call.arguments or "{}").get("reason", "")
            except (ValueError, AttributeError):
                reason = ""
            return f"model: {str(reason).strip()[:200] or 'no reason given'}"
    return ""


def by_of(reason: str) -> str:
    """Who decided: ``rule`` or ``model`` (the metric's label)."""
    return "model" if reason.startswith("model:") else "rule"


async def on_no_reply(
    conn: AsyncConnection, conversation_id: str, draft_id: str, reason: str, now: datetime
) -> str | None:
    """THE no-reply hook, in the transaction that retires the draft: the conversation is resolved
    by the customer (its status ``resolved``; their next message reopens it) and the audit trail
    says why (kind ``no_reply``). Returns the draft whose card shows the conversation's status
    (to refresh), if any."""
    line = AuditLine(conversation_id, draft_id, AUDIT_KIND, "customer", f"no reply needed ({reason})"[:300])
    await records.add_audit(conn, [line], now)
    for current in (ConversationStatus.OPEN, ConversationStatus.WAITING_ON_CUSTOMER):
        if await life_rows.move_status(conn, conversation_id, current, ConversationStatus.RESOLVED, now):
            return await life_rows.latest_card(conn, conversation_id)
    return None
