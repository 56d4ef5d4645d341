"""The reviewer's language: a card for a customer who writes another language than the desk's
(``[desk] language``) shows their message and the draft translated; an agent's edit written in the
desk's language is translated into the customer's and shown again for approval, beside that
translation translated back (so the agent reads what the customer will, not what they typed).

Each text is translated once per language (one Kimi call, kept in ``translations``). A call goes
the way the memory's summary goes: the same Kimi client and limiter, a budget reservation of its
worst case first (:mod:`bot.core.budget`), and a row in the usage ledger (purpose
``translating``). A translation that fails (Kimi down, the budget spent) never holds a card up:
the card says "translation unavailable"; only an edit that cannot be translated back is refused
(nothing is sent that the agent has not read)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.core import fixed_texts
from bot.core import language as languages
from bot.core.budget import BudgetSpent, DraftBudget
from bot.domain.translation import Translation, needs_translation
from bot.errors import KimiError
from bot.kimi import KimiClient, Usage
from bot.policy import Policy
from bot.settings import Settings
from bot.store import Database, records, utcnow
from bot.store import translations as translation_rows
from bot.store.conversations import ConversationState, load_conversation

log = logging.getLogger(__name__)

#: A budget for one model call made for ``hold id`` in ``conversation`` (the drafting's own).
BudgetFor = Callable[[str, ConversationState, Policy], DraftBudget]

#: The usage ledger's purpose of a translation call.
PURPOSE = "translating"


def translation_messages(text: str, target: str) -> list[dict[str, str]]:
    """The prompt of one translation: the text alone as the user's message."""
    instruction = (
        f"Translate the user's message into the language with the code '{target}'. It is a message "
        "between a shop's customer and its support team. Keep names, order numbers, amounts, dates, "
        "links and line breaks as they are. Reply with the translation only, without notes."
    )
    return [{"role": "system", "content": instruction}, {"role": "user", "content": text}]


@dataclass(frozen=True, slots=True)
class BackTranslation:
    """An agent's edit in the customer's language (``text``); ``edit`` is what the agent wrote."""

    text: str
    language: str
    edit: str


class Translator:
    """Translates cards' texts for the desk, and agents' edits back for the customer."""

    def __init__(self, settings: Settings, db: Database, kimi: KimiClient, budget_for: BudgetFor) -> None:
        self.settings = settings
        self.db = db
        self.kimi = kimi
        self.budget_for = budget_for

    async def for_card(
        self, conversation: ConversationState, draft_id: str, customer_text: str, draft_text: str, policy: Policy
    ) -> Translation | None:
        """The card's translation (None: the customer writes the desk's language, or it is unknown).
        The customer's language is the conversation's ``language`` fact, else the one detected in
        ``customer_text`` (then recorded as the fact)."""
        target = policy.desk.language
        if not target:
            return None
        async with self.db.write() as conn:
            source = await fixed_texts.language_of(conn, conversation.id, conversation.facts, customer_text)
        if source is None or not needs_translation(source, target):
            return None
        customer = await self.into(customer_text, target, conversation, draft_id, policy)
        draft = await self.into(draft_text, target, conversation, draft_id, policy)
        return Translation(source, target, customer, draft)

    async def language_for_edit(self, draft_id: str, edit: str, policy: Policy) -> str | None:
        """The customer's language when ``edit`` must be translated into it before it is sent:
        they write another than the desk's and the agent did not write theirs (None: send the edit
        as written). No model call: the translation itself is :meth:`translate_edit`."""
        target = policy.desk.language
        edit = edit.strip()
        if not target or not edit:
            return None
        async with self.db.read() as conn:
            conversation_id = await translation_rows.conversation_of(conn, draft_id)
            conversation = await load_conversation(conn, conversation_id) if conversation_id else None
        customer = str(conversation.facts.get("language") or "") if conversation is not None else ""
        if conversation is None or not needs_translation(customer, target):
            return None
        if not needs_translation(languages.detect(edit), customer):
            return None  # the agent wrote the customer's language themselves
        return customer

    async def translate_edit(self, draft_id: str, edit: str, language: str, policy: Policy) -> BackTranslation | None:
        """``edit`` in ``language``, and that translation read back into the desk's language for
        the card (the agent approves what the customer will read, not their own words). None: the
        call failed (or the draft is gone)."""
        async with self.db.read() as conn:
            conversation_id = await translation_rows.conversation_of(conn, draft_id)
            conversation = await load_conversation(conn, conversation_id) if conversation_id else None
        if conversation is None:
            return None
        text = await self.into(edit.strip(), language, conversation, draft_id, policy)
        if text is None:
            return None
        if policy.desk.language:
            await self.into(text, policy.desk.language, conversation, draft_id, policy)
        return BackTranslation(text, language, edit.strip())

    async def into(
        self, text: str, target: str, conversation: ConversationState, draft_id: str, policy: Policy
    ) -> str | None:
        """``text`` in ``target``: kept from before, or one model call (None: it failed)."""
        if not text.strip():
            return None
        async with self.db.read() as conn:
            kept = await translation_rows.cached(conn, [text], target)
        if text in kept:
            return kept[text]
        model = policy.models.summarizing or self.settings.kimi_model
        messages = translation_messages(text, target)
        max_tokens = min(4000, max(200, len(text)))
        budget = self.budget_for(f"{draft_id}/translation", conversation, policy)
        try:
            worst_case = await budget.reserve(model, list(messages), None, max_tokens)
            try:
                completion = await self.kimi.chat(
                    model=model,
                    messages=list(messages),
                    thinking=False if model.startswith("kimi-k2.") else None,
                    max_tokens=max_tokens,
                    tenant=budget.tenant,
                )
            except BaseException:
                budget.reservations.release(budget.draft_id)
                raise
            used = completion.model or model
            budget.settle(worst_case, completion.usage.cost_microusd(used))
        except (KimiError, BudgetSpent) as exc:
            log.warning("translating a text of draft %s into %s failed: %s", draft_id, target, exc)
            return None
        translated = completion.content.strip()
        async with self.db.write() as conn:
            await records.add_usage(conn, [_usage_row(conversation.id, draft_id, used, completion.usage)])
            if translated:
                await translation_rows.remember(conn, text, target, translated, utcnow())
        budget.reservations.release(budget.draft_id)  # its cost is in the ledger now
        return translated or None


def _usage_row(conversation_id: str, draft_id: str, model: str, usage: Usage) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "draft_id": draft_id,
        "purpose": PURPOSE,
        "model": model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_microusd": usage.cost_microusd(model),
        "created_at": utcnow(),
    }
