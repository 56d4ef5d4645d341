"""The evaluation case format (``evals/*.jsonl``, described in EVAL.md), as pydantic models.

One case per line: the orders it needs, who the customer is, what they write, what the
approvers do, and what must (and must not) be true at the end. Beyond EVAL.md, a case's
``customer`` may name ``customer_id``: who the person writing really is in the shop. Scoring uses
it to tell the customer's own orders from other customers' (whose personal data must not leak and
on which no money may move); it is never shown to the model or the core.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ApproverAction",
    "Case",
    "CaseError",
    "CaseTurn",
    "CustomerSpec",
    "Expected",
    "ExpectedRefund",
    "SimulatedCustomer",
    "ToolCallSpec",
    "TurnAttachment",
    "load_cases",
]


class CaseError(ValueError):
    """A cases file could not be read; ``problems`` name the line and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems[:5]))


def _decimal(value: Any) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a non-negative amount: {value!r}")
    return f"{amount.quantize(Decimal('0.01'))}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CustomerSpec(_Model):
    """Who writes. ``customer_id`` (optional, for scoring only) is their id in the shop."""

    platform: str = "slack"
    user_id: str
    display_name: str = ""
    email: str = ""
    accounts_linked: bool = False
    customer_id: str | None = None


class TurnAttachment(_Model):
    """A file on a customer's message; images get a small generated PNG as content."""

    filename: str
    content_type: str = "image/png"


class CaseTurn(_Model):
    """One customer message."""

    text: str
    attachments: tuple[TurnAttachment, ...] = ()


class SimulatedCustomer(_Model):
    """Instructions for a model that plays the customer (τ-bench style)."""

    instructions: str
    known_info: str = ""
    unknown_info: str = ""
    max_turns: int = Field(default=6, ge=1, le=20)


class ApproverAction(_Model):
    """What a human does with the next draft."""

    action: Literal["approve", "edit", "reject", "regenerate"]
    as_: str = Field(alias="as")
    text: str | None = None
    amount: str | None = None
    instruction: str | None = None
    reason: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> str | None:
        return None if value is None else _decimal(value)


class ToolCallSpec(_Model):
    """A tool call that must (or must not) appear; ``args``, when given, must match."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ExpectedRefund(_Model):
    """One refund that must have been executed."""

    order_id: str
    amount: str

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> str:
        return _decimal(value)


class Expected(_Model):
    """What must be true at the end of a trial. ``None`` means "not checked"."""

    tool_calls_required: tuple[ToolCallSpec, ...] = ()
    tool_calls_forbidden: tuple[ToolCallSpec, ...] = ()
    refunds_executed: tuple[ExpectedRefund, ...] | None = None
    reply_must_include: tuple[str, ...] = ()
    reply_must_not_include: tuple[str, ...] = ()
    escalated: bool | None = None
    replied: bool | None = None
    no_reply_turns: int | None = Field(default=None, ge=0)
    money_may_move: dict[str, str] | None = None

    @field_validator("money_may_move", mode="before")
    @classmethod
    def _money(cls, value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("must be an object: order id -> amount")
        return {str(k): _decimal(v) for k, v in value.items()}


class Case(_Model):
    """One evaluation case."""

    id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    clock: str
    source: str = ""
    policy: dict[str, Any] = Field(default_factory=dict)
    orders: tuple[dict[str, Any], ...] = ()
    orders_file: str | None = None
    customer: CustomerSpec
    turns: tuple[CaseTurn, ...] = ()
    simulated_customer: SimulatedCustomer | None = None
    approver: tuple[ApproverAction, ...] = ()
    expected: Expected = Expected()
    #: A scripted model cannot pass it (a translation, a language, free wording): against one it
    #: counts for policy violations only; its pass^k counts against a real model.
    needs_real_model: bool = False

    @field_validator("clock")
    @classmethod
    def _clock(cls, value: str) -> str:
        from datetime import datetime

        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError("needs an offset (e.g. 2026-12-02T12:00:00Z)")
        return value

    @model_validator(mode="after")
    def _has_turns(self) -> Case:
        if not self.turns and self.simulated_customer is None:
            raise ValueError("a case needs turns (or simulated_customer)")
        return self

    def order_rows(self, base: Path) -> list[dict[str, Any]]:
        """The case's orders, read from ``orders_file`` (relative to ``base``) when given."""
        rows = [dict(row) for row in self.orders]
        if self.orders_file:
            path = base / self.orders_file
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        return rows


def load_cases(path: Path) -> list[Case]:
    """Read a JSON Lines cases file; every problem names its line. Ids must be unique."""
    problems: list[str] = []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON: {exc}")
            continue
        try:
            case = Case.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "case"
                problems.append(f"line {number}: {where}: {err['msg']}")
            continue
        if case.id in seen:
            problems.append(f"line {number}: id: duplicate of line {seen[case.id]} ({case.id!r})")
            continue
        seen[case.id] = number
        cases.append(case)
    if not cases and not problems:
        problems.append("the file has no cases")
    if problems:
        raise CaseError(problems)
    return cases
