"""The team's help texts as a searchable knowledge base, and the ``search_knowledge`` tool.

Markdown or plain-text files (or the text Kimi's files API extracted from them) are split into
passages at blank lines; each passage remembers its file and the heading above it. The passages
are indexed in an in-memory SQLite FTS5 table (built into Python's sqlite3) over deterministic
terms: lower-cased words, stop words dropped, light suffix folding (``refunds``, ``refunded`` →
``refund``). FTS5 finds the passages sharing any term with a query; they rank by how many
distinct query terms they contain (heading included), then how often, then their place in the
files. The index is small and in memory: a query is CPU only and never waits on I/O.

:meth:`KnowledgeBase.replace` swaps the passages in place, so a tool holding the knowledge base
sees a re-synced file without being rebuilt.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tools._args import ARGS_CONFIG
from tools.base import Tool, ToolContext, ToolResult

__all__ = ["KnowledgeBase", "Passage", "SearchKnowledge", "SearchKnowledgeArgs", "passages_of"]

MAX_PASSAGE_CHARS = 800
"""Longer passages are cut (at a word boundary) to this many characters in search results."""

_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves hi hello please thanks
    thank get got can't cannot don't i'm
"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_ATX_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<title>.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def _stem(word: str) -> str:
    """A light, deterministic suffix folding: returns/returned/returning → return."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # shipped → ship
            break
    else:
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]  # damage, damaged → damag
    return word


def _terms(text: str) -> list[str]:
    """The searchable words of ``text``: lower-cased, stop words dropped, suffixes folded."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


@dataclass(frozen=True, slots=True)
class Passage:
    """One paragraph of a help file, with the file name and the heading it sits under."""

    source: str
    heading: str
    text: str


def _split(source: str, text: str) -> list[Passage]:
    passages: list[Passage] = []
    heading = ""
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        lines.clear()
        if body:
            passages.append(Passage(source=source, heading=heading, text=body))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            lines.append(line)
        elif in_fence:
            lines.append(line)
        elif match := _ATX_HEADING.match(line):
            flush()
            heading = match.group("title")
        elif _SETEXT_UNDERLINE.match(line) and len(lines) == 1:
            heading = lines[0].strip()
            lines.clear()
        elif _SETEXT_UNDERLINE.match(line) and not lines:
            continue  # a horizontal rule
        elif not line.strip():
            flush()
        else:
            lines.append(line)
    flush()
    return passages


def _shorten(text: str, limit: int = MAX_PASSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


class KnowledgeBase:
    """Passages of help text, searchable by keyword (FTS5, BM25 ranking)."""

    def __init__(self, passages: Iterable[Passage]) -> None:
        self._passages: list[Passage] = []
        self._terms: list[Counter[str]] = []
        self._index = sqlite3.connect(":memory:", check_same_thread=False)
        self._index.execute("CREATE VIRTUAL TABLE passages USING fts5(heading, body, tokenize='unicode61')")
        self.replace(passages)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> KnowledgeBase:
        """Load markdown or text files (UTF-8). Raises ``ValueError`` naming a file that cannot
        be read or is not UTF-8 text."""
        texts: list[tuple[str, str]] = []
        for raw_path in paths:
            path = Path(raw_path)
            try:
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise ValueError(f"knowledge file {path} is not UTF-8 text") from None
            except OSError as exc:
                raise ValueError(f"knowledge file {path} cannot be read: {exc.strerror}") from None
            texts.append((path.name, text))
        return cls.from_texts(texts)

    @classmethod
    def from_texts(cls, texts: Iterable[tuple[str, str]]) -> KnowledgeBase:
        """Passages of ``(source name, text)`` pairs, e.g. text extracted by Kimi's files API."""
        return cls(passages_of(texts))

    def replace(self, passages: Iterable[Passage]) -> None:
        """Swap every passage for ``passages`` and re-index them."""
        self._passages = list(passages)
        self._terms = [Counter(_terms(f"{p.heading}\n{p.text}")) for p in self._passages]
        with self._index:
            self._index.execute("DELETE FROM passages")
            self._index.executemany(
                "INSERT INTO passages (rowid, heading, body) VALUES (?, ?, ?)",
                [(i, " ".join(_terms(p.heading)), " ".join(_terms(p.text))) for i, p in enumerate(self._passages)],
            )

    def __len__(self) -> int:
        return len(self._passages)

    def search(self, query: str, limit: int = 3) -> list[Passage]:
        """The best ``limit`` passages sharing at least one term with ``query``, best first."""
        wanted = sorted(set(_terms(query)))
        if not wanted:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in wanted)
        rows = self._index.execute("SELECT rowid FROM passages WHERE passages MATCH ?", (match,)).fetchall()
        scored = []
        for (rowid,) in rows:
            counts = self._terms[int(rowid)]
            matched = [term for term in wanted if term in counts]
            scored.append((-len(matched), -sum(counts[t] for t in matched), int(rowid)))
        scored.sort()
        return [self._passages[index] for *_, index in scored[:limit]]


def passages_of(texts: Iterable[tuple[str, str]]) -> list[Passage]:
    """The passages of ``(source name, text)`` pairs, in order."""
    passages: list[Passage] = []
    for source, text in texts:
        passages.extend(_split(source, text))
    return passages


class SearchKnowledgeArgs(BaseModel):
    """Arguments of ``search_knowledge``."""

    model_config = ARGS_CONFIG

    query: str = Field(
        min_length=1, max_length=300, description="Keywords to look for, e.g. 'return policy damaged item'"
    )


class SearchKnowledge(Tool):
    """``search_knowledge``: the three help passages that best match a query."""

    name = "search_knowledge"
    description = (
        "Search the team's help articles and policies (returns, shipping, warranty, accounts). "
        "Returns up to 3 passages with their source file. Base answers on these passages."
    )
    Args = SearchKnowledgeArgs
    kind = "read"

    def __init__(self, knowledge: KnowledgeBase) -> None:
        self._knowledge = knowledge

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        if not isinstance(args, SearchKnowledgeArgs):
            raise TypeError(f"expected SearchKnowledgeArgs, got {type(args).__name__}")
        found = self._knowledge.search(args.query)
        results: list[dict[str, Any]] = [
            {"source": p.source, "heading": p.heading, "text": _shorten(p.text)} for p in found
        ]
        if found:
            where = ", ".join(f"{p.source} › {p.heading}" if p.heading else p.source for p in found)
            summary = f"{len(found)} passage(s) for {args.query!r}: {where}"
        else:
            summary = f"nothing found for {args.query!r}"
        return ToolResult(data={"query": args.query, "results": results}, summary=summary)
