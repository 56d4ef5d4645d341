"""Conversation memory: a rolling summary of older turns, folded in batches, and the recent
turns verbatim. Facts (order ids, refunds, the customer) live on the conversation.

The summary is a list of segments, oldest first, each its own system message in the prompt. A
refresh appends a segment about the turns it folds, so the segments before it stay byte-identical
and in Kimi's prefix cache; only when the segments would outgrow ``MAX_SUMMARY_CHARS`` is the
whole summary rewritten into one (compaction), which re-lays the prompt once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bot.core.drafting_text import fit
from bot.kimi import KimiClient, Usage
from bot.policy import Policy
from bot.prompt import Turn, summary_messages
from bot.settings import Settings
from bot.store import Database, utcnow
from bot.store import conversations as conversation_rows
from bot.store.conversations import ConversationState, StoredMessage

#: The whole summary, all segments together.
MAX_SUMMARY_CHARS = 1600
#: One appended segment, and a compacted summary (room for two segments after it).
MAX_SEGMENT_CHARS = 400
MAX_COMPACTED_CHARS = 800
#: Fact notes kept on a conversation (facts change a few times a thread; each note is a full list).
MAX_FACT_NOTES = 30
#: Separates the segments in the stored summary; never part of model output (stripped from it).
SEGMENT_BREAK = "\n\x1e\n"


def summary_segments(stored: str) -> list[str]:
    """The stored summary's segments, oldest first (a summary stored before segments is one)."""
    return [s for s in stored.split(SEGMENT_BREAK) if s.strip()]


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
    ) -> tuple[list[str], list[Turn]]:
        """The summary's segments and the verbatim turns (images on the newest) for one prompt."""
        segments = summary_segments(conversation.summary)
        keep = policy.memory.keep_recent_turns
        if len(turns) >= policy.memory.summarize_after_turns:
            fold, turns = turns[:-keep], turns[-keep:]
            continuing = bool(segments) and sum(map(len, segments)) + MAX_SEGMENT_CHARS <= MAX_SUMMARY_CHARS
            model = policy.models.summarizing or self.settings.kimi_model
            completion = await self.kimi.chat(
                model=model,
                messages=summary_messages(segments, [Turn(r.role, r.text) for r in fold], continuing=continuing),
                thinking=False if model.startswith("kimi-k2.") else None,
                max_tokens=400,
            )
            spent.append(("summarizing", completion.model or model, completion.usage))
            written = completion.content.replace("\x1e", " ").strip()
            if written:
                if continuing:
                    segments.append(fit(written, MAX_SEGMENT_CHARS))
                else:
                    segments = [fit(written, MAX_COMPACTED_CHARS)]
            async with self.db.write() as conn:
                await conversation_rows.save_summary(
                    conn, conversation.id, SEGMENT_BREAK.join(segments), fold[-1].id, utcnow()
                )
            self.counters["summaries"] += 1
        newest = turns[-1].id if turns else None
        return segments, [
            Turn(
                role=r.role,
                text=r.text,
                images=tuple(images) if r.id == newest else (),
                id=r.id,
                sent=r.created_at.date() if r.created_at is not None and r.role == "customer" else None,
            )
            for r in turns
        ]


def noted(
    notes: Sequence[tuple[int, dict[str, Any]]], message_id: int, facts: dict[str, Any], summary_through: int
) -> list[tuple[int, dict[str, Any]]]:
    """``notes`` with the facts a draft of ``message_id`` left: the notes of the verbatim turns
    and the newest one before them (what the prompt shows), at most ``MAX_FACT_NOTES``."""
    kept = [(at, f) for at, f in notes if at != message_id] + [(message_id, facts)]
    kept.sort(key=lambda note: note[0])
    before = [note for note in kept if note[0] <= summary_through][-1:]
    return (before + [note for note in kept if note[0] > summary_through])[-MAX_FACT_NOTES:]
