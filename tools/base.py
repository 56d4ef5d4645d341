"""The tool interface and registry.

A tool has a name, a description, a pydantic model for its arguments (the JSON schema sent to
the model is generated from it), and an async ``run``. Arguments are validated by the caller
*before* ``run`` is called. A tool that fails raises :class:`ToolError` with a short code and a
message the model can explain to the customer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from tools.refunds import RefundLimits, RefundProposal


class ToolError(Exception):
    """A tool could not do its job. ``code`` is short and machine-readable
    (``not_found``, ``invalid``, ``unavailable``); ``message`` is safe to show the model."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


RefundRules = RefundLimits
"""The policy's refund rules as tools see them (the same numbers the core checks)."""


@dataclass(frozen=True, slots=True)
class Attempts:
    """Failed identity checks counted across conversations: the asker's failures in the window,
    and until when verification is locked (None: it is not), for the asker or the target."""

    failures: int = 0
    locked_until: datetime | None = None


class AttemptLedger(Protocol):
    """Where failed identity checks are counted across conversations and platforms: per asker
    (the chat account) and per target (the shop customer, or the order id when no such order
    exists). The core implements it (the rule of how many, how long, lives there)."""

    async def check(self, asker: str, target: str) -> Attempts:
        """What counts against ``asker`` guessing ``target`` now."""
        ...

    async def failed(self, asker: str, target: str) -> Attempts:
        """Record one failed check of ``asker`` on ``target``; what counts now."""
        ...


@dataclass(slots=True)
class ToolContext:
    """What a tool run may see: the conversation, who is asking, who is verified, and the policy
    facts it needs.

    Identity: ``asker`` is the platform account writing (``slack:U0123``); ``verified_customer_id``
    is the shop's customer the conversation is verified as (``None``: nobody yet). Order tools
    show an order's personal data only to its verified owner. ``asker_email`` is the platform
    profile e-mail, set only when the policy lets a matching order e-mail count as verification.
    Tools update ``verified_customer_id``/``verified_via``/``verify_attempts`` when a check in
    code succeeds or fails, and note in ``foreign_orders`` and ``withheld`` what they kept from
    the model; the core stores and shows these. ``identity_checks`` False is for operator tools
    that may see everything (never for a customer conversation). ``attempts`` counts failed
    checks across conversations (None: only this context's ``verify_attempts`` count);
    ``locked_until`` is set when it locked verification.

    Public places: ``public_place`` says the conversation is where others read it and the
    policy keeps the verified customer's order details out of it; the order tools then show even
    the order's owner only its status and expected delivery. Either way they note in
    ``order_details`` the owner's details they showed the model, or kept from it, each with what
    it is (``"name"``, ``"e-mail"``, ``"postal code"``, ``"tracking number"``, ``"item"``,
    ``"amount"``), so the core can check the draft and say what it found without repeating it.
    """

    conversation_id: str
    refund_rules: RefundRules = field(default_factory=RefundLimits)
    currency: str = "USD"
    asker: str = ""
    asker_email: str = ""
    verified_customer_id: str | None = None
    verified_via: str = ""
    unverified_may_see_status: bool = False
    verify_attempts: int = 0
    max_verify_attempts: int = 3
    verification_in_conversation: bool = True
    identity_checks: bool = True
    attempts: AttemptLedger | None = None
    locked_until: datetime | None = None
    foreign_orders: set[str] = field(default_factory=set)
    withheld: set[str] = field(default_factory=set)
    public_place: bool = False
    order_details: dict[str, str] = field(default_factory=dict)

    @property
    def verification_locked(self) -> bool:
        """True once the customer failed verification ``max_verify_attempts`` times here, or the
        attempts counted across conversations locked it."""
        return self.locked_until is not None or self.verify_attempts >= self.max_verify_attempts


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns. ``data`` goes back to the model as JSON; ``summary`` is one line
    for the review card; ``proposal`` is set by action tools (a refund proposal)."""

    data: dict[str, Any]
    summary: str
    proposal: RefundProposal | None = None


class Tool(ABC):
    """One function the model may call."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]
    kind: ClassVar[Literal["read", "action"]] = "read"

    @abstractmethod
    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult: ...

    def definition(self) -> dict[str, Any]:
        """The OpenAI-compatible function definition (Kimi accepts the same shape)."""
        schema = self.Args.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }


class ToolRegistry:
    """The tools offered to the model, in a stable order (stable bytes keep Kimi's prefix
    cache hitting)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._definitions: list[dict[str, Any]] | None = None
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool
        self._definitions = None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def definitions(self) -> list[dict[str, Any]]:
        """The function definitions, built once (the same bytes on every request)."""
        if self._definitions is None:
            self._definitions = [tool.definition() for tool in self._tools.values()]
        return self._definitions
