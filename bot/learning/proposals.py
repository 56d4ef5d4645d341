"""Kimi's proposals as a typed shape (the tool's JSON schema and its validation), applied to the
policy text with its comments kept (tomlkit), and shown as a unified diff.

Nothing here writes a file: :func:`plan` turns validated proposals into the new texts, and a
model answer that breaks the shape raises :class:`ProposalShapeError` before anything is planned."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from tomlkit.items import Table

from bot.errors import SupportbotError

POLICY_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
KNOWLEDGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")
KNOWLEDGE_FOLDER = "knowledge"

ShortId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}$")]
Value = str | int | float | bool | list[str]


class ProposalShapeError(SupportbotError):
    """Kimi's answer is not the proposals' shape; nothing was changed."""


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyChange(_Shape):
    """Set one policy key (``refunds.window_days``) to a value, because of some conversations."""

    key: str = Field(description="dotted policy key, e.g. refunds.window_days")
    value: Value = Field(description="the new value, in the type policy.toml uses")
    why: str = Field(min_length=1, max_length=600, description="what the corrections show, in one or two sentences")
    conversations: list[ShortId] = Field(min_length=1, description="the short ids of the conversations behind it")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not POLICY_KEY.fullmatch(value):
            raise ValueError(f"not a dotted policy key such as refunds.window_days: {value!r}")
        if value.split(".", maxsplit=1)[0] == "knowledge":
            raise ValueError("knowledge files are proposed as knowledge entries, not as a policy key")
        return value


class KnowledgeEntry(_Shape):
    """A new knowledge file (Markdown) the drafts should have known."""

    name: str = Field(description="file name without extension: lowercase letters, digits and hyphens")
    text: str = Field(min_length=1, max_length=4000, description="the Markdown text of the entry")
    why: str = Field(min_length=1, max_length=600)
    conversations: list[ShortId] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not KNOWLEDGE_NAME.fullmatch(value):
            raise ValueError(f"not a file name of lowercase letters, digits and hyphens: {value!r}")
        return value

    @property
    def path(self) -> str:
        return f"{KNOWLEDGE_FOLDER}/{self.name}.md"


class Proposals(_Shape):
    """What Kimi proposes: policy changes and knowledge entries (either may be empty)."""

    policy_changes: list[PolicyChange] = Field(default_factory=list, max_length=10)
    knowledge_entries: list[KnowledgeEntry] = Field(default_factory=list, max_length=10)


TOOL_NAME = "propose_changes"


def proposals_tool() -> dict[str, Any]:
    """The one tool Kimi answers through: its parameters are the :class:`Proposals` schema."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Propose policy changes and knowledge entries that would have avoided the corrections.",
            "parameters": inline_schema(Proposals.model_json_schema()),
        },
    }


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``$ref`` to ``$defs`` written in place and the titles left out: the
    plain subset of JSON Schema Kimi's tool parameters take (MFJS), whatever it resolves."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[str(node["$ref"]).rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs" and not (k == "title" and isinstance(v, str))}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def parse_proposals(arguments: str, known: set[str]) -> Proposals:
    """Kimi's tool arguments as :class:`Proposals`, every cited conversation one it was shown."""
    try:
        proposals = Proposals.model_validate(json.loads(arguments))
    except ValueError as exc:  # json's and pydantic's errors both
        raise ProposalShapeError(f"Kimi's proposals do not have the expected shape: {_first(exc)}") from None
    cited = {c for p in proposals.policy_changes for c in p.conversations}
    cited |= {c for e in proposals.knowledge_entries for c in e.conversations}
    unknown = sorted(cited - known)
    if unknown:
        raise ProposalShapeError(f"Kimi's proposals cite conversations it was not shown: {', '.join(unknown)}")
    names = [e.name for e in proposals.knowledge_entries]
    if len(set(names)) != len(names):
        raise ProposalShapeError("Kimi's proposals name the same knowledge file twice")
    return proposals


def _first(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "answer"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {err['msg']}{more}"
    return f"not JSON: {exc}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The texts the proposals would write: the policy's new text and the new knowledge files."""

    policy_before: str
    policy_after: str
    knowledge: dict[str, str]

    def diff(self, policy_name: str = "policy.toml") -> str:
        """A unified diff of the policy and of each new knowledge file (from /dev/null)."""
        parts = list(
            difflib.unified_diff(
                self.policy_before.splitlines(keepends=True),
                self.policy_after.splitlines(keepends=True),
                f"a/{policy_name}",
                f"b/{policy_name}",
            )
        )
        for path, text in self.knowledge.items():
            parts += difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", f"b/{path}")
        return "".join(line if line.endswith("\n") else line + "\n" for line in parts)


def plan(policy_text: str, proposals: Proposals) -> Plan:
    """The policy text with each change set (comments and order kept) and each knowledge entry
    added to ``[knowledge] files``. A key that would replace a table is a shape error."""
    document = tomlkit.parse(policy_text)
    for change in proposals.policy_changes:
        *tables, leaf = change.key.split(".")
        table: Any = document
        for name in tables:
            if name not in table:
                table[name] = tomlkit.table()
            table = table[name]
            if not isinstance(table, Table | dict):
                raise ProposalShapeError(f"{change.key}: {name} is a value, not a table")
        if isinstance(table.get(leaf), Table | dict):
            raise ProposalShapeError(f"{change.key} is a table, not a value")
        table[leaf] = change.value
    knowledge = {entry.path: entry.text.rstrip() + "\n" for entry in proposals.knowledge_entries}
    if knowledge:
        if "knowledge" not in document:
            document["knowledge"] = tomlkit.table()
        section: Any = document["knowledge"]
        files = section.get("files")
        if files is None:
            files = tomlkit.array()
            section["files"] = files
        for path in knowledge:
            if path not in files:
                files.append(path)
    return Plan(policy_text, tomlkit.dumps(document), knowledge)
