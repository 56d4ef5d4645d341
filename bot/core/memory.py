"""Conversation memory: a rolling summary of older turns, folded in batches, and the recent
turns verbatim. Facts (order ids, refunds, the customer) live on the conversation."""

from __future__ import annotations

from collections import Counter

from bot.core.drafting_text import fit
from bot.kimi import KimiClient, Usage
from bot.policy import Policy
from bot.prompt import Turn, summary_messages
from bot.settings import Settings
from bot.store import Database, utcnow
from bot.store import conversations as conversation_rows
from bot.store.conversations import ConversationState, StoredMessage

MAX_SUMMARY_CHARS = 1200


class Memory:
    """Builds a prompt's memory, folding older turns into the summary when enough piled up."""

    def __init__(self, settings: Settings, db: Database, kimi: KimiClient, counters: Counter[str]) -> None:
        self.settings = settings
        self.db = db
        self.kimi = kimi
        self.counters = counters

    async def prepare(
        self,
        conversation: ConversationState,
        turns: list[StoredMessage],
        images: list[tuple[str, bytes]],
        policy: Policy,
        spent: list[tuple[str, str, Usage]],
    ) -> tuple[str, list[Turn]]:
        """The summary and the verbatim turns (images on the newest) for one prompt."""
        summary = conversation.summary
        keep = policy.memory.keep_recent_turns
        if len(turns) >= policy.memory.summarize_after_turns:
            fold, turns = turns[:-keep], turns[-keep:]
            model = policy.models.summarizing or self.settings.kimi_model
            completion = await self.kimi.chat(
                model=model,
                messages=summary_messages(summary, [Turn(r.role, r.text) for r in fold]),
                thinking=False if model.startswith("kimi-k2.") else None,
                max_tokens=400,
            )
            spent.append(("summarizing", completion.model or model, completion.usage))
            summary = fit(completion.content.strip(), MAX_SUMMARY_CHARS) or summary
            async with self.db.write() as conn:
                await conversation_rows.save_summary(conn, conversation.id, summary, fold[-1].id, utcnow())
            self.counters["summaries"] += 1
        newest = turns[-1].id if turns else None
        return summary, [Turn(role=r.role, text=r.text, images=tuple(images) if r.id == newest else ()) for r in turns]
