"""What the desk corrected, as Kimi reads it: each edit, rejection and negative feedback is a
:class:`Lesson`; :func:`group_lessons` puts them in groups by kind and category, newest first,
within a bound on the text sent (the prompt never grows with the traffic)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from difflib import SequenceMatcher
from enum import StrEnum

SHORT_ID = 8  # the short id a card shows; the model cites conversations by it
QUOTE_CHARS = 80


class LessonKind(StrEnum):
    """How the desk or the customer said a draft was wrong."""

    EDIT = "edit"
    REJECT = "reject"
    FEEDBACK = "feedback"


@dataclass(frozen=True, slots=True)
class Lesson:
    """One correction: the customer's message, the draft, and what the human sent instead
    (``sent``, an edit), why it was refused (``reason``, a rejection) or the customer's score."""

    kind: LessonKind
    conversation_id: str
    draft_id: str
    category: str
    at: datetime
    asked: str
    draft: str
    sent: str = ""
    reason: str = ""
    score: int | None = None

    @property
    def short_id(self) -> str:
        return self.conversation_id[:SHORT_ID]

    def quote(self) -> str:
        """A short quote of what was wrong, for the conversations behind a proposal."""
        if self.kind is LessonKind.EDIT:
            before, after = changed_part(" ".join(self.draft.split()), " ".join(self.sent.split()))
            return f'edited "{clip(before, QUOTE_CHARS // 2)}" to "{clip(after, QUOTE_CHARS // 2)}"'
        if self.kind is LessonKind.REJECT:
            return f'rejected "{clip(self.draft, QUOTE_CHARS // 2)}": {clip(self.reason, QUOTE_CHARS // 2)}'
        return f'customer scored {self.score} on "{clip(self.sent or self.draft, QUOTE_CHARS)}"'


@dataclass(frozen=True, slots=True)
class LessonGroup:
    """The lessons of one kind in one category (``total`` counts those left out by the bound)."""

    kind: LessonKind
    category: str
    lessons: tuple[Lesson, ...]
    total: int = 0
    chars: int = field(default=0, compare=False)


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)].rstrip() + "…"


def changed_part(before: str, after: str, context: int = 16) -> tuple[str, str]:
    """The part of ``before`` an edit changed and what replaced it, with ``context`` characters
    around (an ellipsis where text was left out): what a manager needs to see of an edit."""
    opcodes = [op for op in SequenceMatcher(None, before, after, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not opcodes:
        return before, after

    def around(text: str, start: int, end: int) -> str:
        left = text.rfind(" ", 0, start - context) + 1 if start > context else 0  # whole words
        right = text.find(" ", end + context)
        right = len(text) if right < 0 else right
        return ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")

    first, last = opcodes[0], opcodes[-1]
    return around(before, first[1], last[2]), around(after, first[3], last[4])


def lesson_chars(lesson: Lesson, text_limit: int) -> int:
    """What a lesson costs in the prompt: its texts, each clipped to ``text_limit``."""
    return sum(min(len(t), text_limit) for t in (lesson.asked, lesson.draft, lesson.sent, lesson.reason))


def group_lessons(
    lessons: Iterable[Lesson], *, per_group: int = 8, text_limit: int = 400, max_chars: int = 16_000
) -> list[LessonGroup]:
    """Lessons grouped by (kind, category), the largest groups first, each group's newest
    ``per_group`` lessons kept while their clipped texts fit in ``max_chars`` altogether."""
    groups: dict[tuple[LessonKind, str], list[Lesson]] = {}
    for lesson in lessons:
        groups.setdefault((lesson.kind, lesson.category or "other"), []).append(lesson)
    order = sorted(groups.items(), key=lambda item: (-len(item[1]), list(LessonKind).index(item[0][0]), item[0][1]))
    budget = max_chars
    kept: list[LessonGroup] = []
    for (kind, category), members in order:
        newest = sorted(members, key=lambda lesson: lesson.at, reverse=True)[:per_group]
        chosen: list[Lesson] = []
        used = 0
        for lesson in newest:
            cost = lesson_chars(lesson, text_limit)
            if cost > budget:
                break
            chosen.append(lesson)
            budget -= cost
            used += cost
        if chosen:
            kept.append(LessonGroup(kind, category, tuple(chosen), len(members), used))
    return kept


def lessons_by_short_id(groups: Sequence[LessonGroup]) -> dict[str, list[Lesson]]:
    """The lessons Kimi saw, by the short conversation id it cites them with."""
    seen: dict[str, list[Lesson]] = {}
    for group in groups:
        for lesson in group.lessons:
            seen.setdefault(lesson.short_id, []).append(lesson)
    return seen
