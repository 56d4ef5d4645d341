"""The managers' policy file (TOML): tone, models, limits, refunds, approvers, escalation.

Validated at load; every problem names the line and the field. The bot runs on built-in
defaults when the file is absent. :class:`PolicyStore` reloads the file while the bot runs and
keeps the last good policy when an edit is invalid.

Knowledge files are sent to Kimi and quoted in drafts, so a policy may name only files inside its
own folder, never a hidden one (a path part starting with ".": ``.env``, ``.git/config``) and
never one holding a configured secret (:mod:`bot.secret_values`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from string import Formatter
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.domain.business_time import WEEKDAYS, BusinessHours
from bot.errors import PolicyError
from bot.secret_values import Secrets, secret_in
from tools.money import Money

log = logging.getLogger(__name__)

#: A policy is a page of settings; anything bigger is a mistake (or an attack on the parser).
MAX_POLICY_BYTES = 256 * 1024


def _cents(value: Any) -> int:
    """A policy amount ("50", "49.90", 50, or a TOML float such as 49.9) in cents."""
    if isinstance(value, float):
        value = Decimal(str(value))
    try:
        if not isinstance(value, str | int | Decimal):
            raise ValueError("not a string or number")
        return Money.parse(value).cents
    except ValueError:
        raise ValueError(f"must be a non-negative amount with at most 2 decimals: {value!r}") from None


Cents = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssistantSection(_Section):
    """Who the assistant is and how it writes."""

    name: str = "Support Copilot"
    company: str = "our shop"
    tone: str = "friendly, concise and precise"
    language: str = "reply in the customer's language"
    instructions: str = (
        "Help customers with their orders. Look orders up with the tools before answering; "
        "never guess a status, a date or an amount. Refunds are only proposed: say a team "
        "member will confirm. Never promise what the tools did not confirm."
    )


class ModelsSection(_Section):
    """Models per task (defaults come from KIMI_MODEL)."""

    drafting: str = ""
    summarizing: str = ""
    thinking: bool = False
    vision: bool = True
    max_output_tokens: Annotated[int, Field(ge=256, le=65536)] = 4096


class LimitsSection(_Section):
    """Guardrails of the drafting loop."""

    max_tool_steps: Annotated[int, Field(ge=1, le=20)] = 6
    tool_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_reply_chars: Annotated[int, Field(ge=100, le=3000)] = 3000
    daily_budget_usd: Annotated[float, Field(ge=0)] = 0.0
    customer_daily_budget_usd: Annotated[float, Field(ge=0)] = 0.0  # per customer, beside the daily one
    max_images_per_message: Annotated[int, Field(ge=1, le=20)] = 4


class FairnessSection(_Section):
    """Token buckets at intake (per instance): past them a draft starts later, never lost; 0 = off."""

    sender_messages_per_minute: Annotated[int, Field(ge=0, le=10_000)] = 12
    sender_burst: Annotated[int, Field(ge=1, le=10_000)] = 20
    workspace_messages_per_minute: Annotated[int, Field(ge=0, le=100_000)] = 600
    workspace_burst: Annotated[int, Field(ge=1, le=100_000)] = 200


class MemorySection(_Section):
    """When older turns are folded into the rolling summary."""

    summarize_after_turns: Annotated[int, Field(ge=2, le=200)] = 24
    keep_recent_turns: Annotated[int, Field(ge=1, le=100)] = 6

    @model_validator(mode="after")
    def _keep_less(self) -> MemorySection:
        if self.keep_recent_turns >= self.summarize_after_turns:
            raise ValueError("keep_recent_turns must be smaller than summarize_after_turns")
        return self


class RefundsSection(_Section):
    """Refund rules. Amounts are in the shop's currency ("49.90")."""

    window_days: Annotated[int, Field(ge=0, le=3650)] = 30
    max_amount: Cents = 50_000
    manager_threshold: Cents = 10_000
    two_approvers_threshold: Cents = 25_000
    max_per_customer_per_day: Cents = 0
    refundable_statuses: tuple[str, ...] = ("delivered",)

    @field_validator(
        "max_amount", "manager_threshold", "two_approvers_threshold", "max_per_customer_per_day", mode="before"
    )
    @classmethod
    def _money(cls, value: Any) -> int:
        return _cents(value)


class IdentitySection(_Section):
    """Which ways of knowing who the customer is count, and what an unverified asker may see.

    ``linked_accounts``: a chat account linked to the shop's customer (orders import
    ``customer_accounts``, or ``supportbot customers link``). ``profile_email``: the Slack profile
    e-mail equals the order's e-mail (the Slack app then needs the ``users:read.email`` scope).
    ``in_conversation``: the customer states the order's e-mail, or name and postal code, and the
    ``verify_customer`` tool checks it, at most ``max_attempts`` times before a human takes over.
    ``unverified_may_see``: ``"nothing"`` (only "verification needed") or ``"status"`` (bare
    status and expected delivery date).

    Failed checks also count across conversations and platforms: ``max_attempts`` per chat
    account, and ``max_attempts_per_target`` per shop customer guessed (whoever guesses), each
    failure for ``attempt_window_hours``; once either limit is reached verification is locked
    for ``lockout_minutes`` after the last failure (then one more try, which locks again if it
    fails). ``profile_email_outside_workspace``: in a Slack Connect channel, whether a customer
    from another organisation (not of the workspace that installed the bot) is verified by the
    profile e-mail their own organisation sets (default no: only the installing workspace's
    members are).

    ``public_places``: what happens to a verified customer's order details (address, items,
    amounts, e-mail, tracking) in a place others can read (:class:`bot.events.Place`):
    ``"flag"`` (the default) lets the tools show them to the model and flags the card when the
    draft repeats them ("verified order details in a public channel"), so the agent decides before
    Approve; ``"withhold"`` keeps them from the model there (an order's status and expected
    delivery only) and removes any that still appear in the draft, whatever the model wrote;
    ``"dm"`` lets the model use them and sends the approved reply to the customer by direct
    message, with the fixed line ``dm_notice`` in the public thread (the card says so before
    Approve; when the customer accepts no direct message, nothing is posted and the card says so)."""

    linked_accounts: bool = True
    profile_email: bool = False
    profile_email_outside_workspace: bool = False
    in_conversation: bool = True
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    max_attempts_per_target: Annotated[int, Field(ge=1, le=50)] = 5
    attempt_window_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0
    lockout_minutes: Annotated[float, Field(gt=0, le=24 * 60 * 30)] = 60.0
    unverified_may_see: Literal["nothing", "status"] = "nothing"
    public_places: Literal["flag", "withhold", "dm"] = "flag"
    dm_notice: Annotated[str, Field(min_length=1, max_length=500)] = "I've sent you the details in a direct message."


class ApproversSection(_Section):
    """Who may approve. Empty ``agents`` means anyone in the review channel. Entries are Slack
    user ids (U…) or user-group ids (S…), Discord user or role ids."""

    agents: tuple[str, ...] = ()
    managers: tuple[str, ...] = ()


class DeskEscalation(_Section):
    """What an escalated card tags on one platform's review desk (``[escalation.slack]``,
    ``[escalation.discord]``): ``on_call`` is that platform's id of the on-call group (a Slack
    user-group id S… or user id, a Discord role id)."""

    on_call: str = ""


#: The keys ``on_call_<platform>`` under ``[escalation]`` that ``[escalation.<platform>] on_call``
#: replaced; still read, with a deprecation line (:func:`deprecations`).
_OLD_ON_CALL = re.compile(r"on_call_([a-z0-9_]+)")


class EscalationSection(_Section):
    """When a card tags the on-call group, and which group on each platform (by the platform's
    name: ``[escalation.slack] on_call = "S0ONCALL"``)."""

    keywords: tuple[str, ...] = ("chargeback", "lawyer", "legal action", "fraud")
    human_request_phrases: tuple[str, ...] = (
        "talk to a human",
        "speak to a human",
        "real person",
        "talk to someone",
        "human agent",
    )
    max_failed_drafts: Annotated[int, Field(ge=1, le=20)] = 2
    desks: dict[str, DeskEscalation] = {}

    @model_validator(mode="before")
    @classmethod
    def _per_platform(cls, data: Any) -> Any:
        """Each table under ``[escalation]`` is a platform's section; an old ``on_call_<platform>``
        key fills that platform's ``on_call`` unless its section sets one."""
        if not isinstance(data, dict):
            return data
        fields: dict[str, Any] = {}
        desks: dict[str, Any] = {}
        old: dict[str, Any] = {}
        for key, value in data.items():
            old_key = _OLD_ON_CALL.fullmatch(key)
            if key in cls.model_fields:
                fields[key] = value
            elif isinstance(value, dict):
                desks[key] = value
            elif old_key is not None:
                old[old_key.group(1)] = value
            else:
                fields[key] = value  # refused as an unknown field
        for platform, on_call in old.items():
            section = desks.setdefault(platform, {})
            if isinstance(section, dict):
                desks[platform] = {"on_call": on_call, **section}
        if desks:
            fields["desks"] = {**desks, **fields.get("desks", {})}
        return fields

    def on_call(self, platform: str) -> str:
        """The on-call group to tag on ``platform``'s desk ("" when that platform names none)."""
        desk = self.desks.get(platform)
        return desk.on_call if desk is not None else ""


# -- [desk]: the review desk's service level (issue 19 point 7, SLA nudges) -----------------
# Kept as its own block so other [desk] settings merge beside it.


class DeskHoursSection(_Section):
    """When the desk is staffed: the SLA clock runs only inside these hours (local to
    ``timezone``). ``end = "00:00"`` means midnight at the end of the day."""

    timezone: str = "UTC"
    #: Sent (as written) to a customer who opens a conversation while the desk is closed.
    out_of_hours: Annotated[str, Field(max_length=2000)] = ""
    #: ``out_of_hours`` per language code, chosen as the acknowledgement's is.
    out_of_hours_texts: dict[str, Annotated[str, Field(max_length=2000)]] = Field(default_factory=dict)
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = ("mon", "tue", "wed", "thu", "fri")
    start: dt_time = dt_time(9, 0)
    end: dt_time = dt_time(17, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("out_of_hours_texts")
    @classmethod
    def _out_of_hours_languages(cls, value: dict[str, str]) -> dict[str, str]:
        return _language_codes(value)

    @model_validator(mode="after")
    def _opens_before_closing(self) -> DeskHoursSection:
        if self.end != dt_time(0) and self.end <= self.start:
            raise ValueError("end must be after start (00:00 means midnight)")
        return self

    def business_hours(self) -> BusinessHours:
        return BusinessHours(
            ZoneInfo(self.timezone), frozenset(WEEKDAYS.index(d) for d in self.days), self.start, self.end
        )


def _only_expected_minutes(value: str) -> str:
    """An acknowledgement fills in ``{expected_minutes}`` only."""
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in Formatter().parse(value) if name is not None
        ]
    except ValueError:
        fields = [("?", "", None)]
    if any(field != ("expected_minutes", "", None) for field in fields):
        raise ValueError("only {expected_minutes} may be filled in (write {{ and }} for braces)")
    return value


def _language_codes(value: dict[str, str]) -> dict[str, str]:
    for code in value:
        if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", code):
            raise ValueError(f"{code!r} is not a lower-case language code such as de or pt-br")
    return value


class DeskSlaFields(_Section):
    """The desk's service level. ``first_response_minutes``: a card not decided within this many
    minutes (of business time, when ``[desk.hours]`` is set) gets one reminder in its thread
    mentioning the on-call group, and at twice that it is marked overdue; 0 turns the nudges off.
    ``acknowledgement`` and ``[desk.hours] out_of_hours``: what a customer opening a conversation
    is told at once, inside and outside the hours (empty: nothing)."""

    first_response_minutes: Annotated[float, Field(ge=0, le=7 * 24 * 60)] = 0
    hours: DeskHoursSection | None = None
    #: Sent to a customer who opens (or reopens) a conversation while the desk is open;
    #: ``{expected_minutes}``: the median wait for an answer over the last 7 days, or the
    #: first-response time with fewer than 5 answers, in business time (bot/core/expected_wait.py).
    acknowledgement: Annotated[str, Field(max_length=2000)] = ""
    #: ``acknowledgement`` per language code (the conversation's ``language`` fact, or the
    #: language detected in the customer's message: bot/core/language.py).
    acknowledgement_texts: dict[str, Annotated[str, Field(max_length=2000)]] = Field(default_factory=dict)
    #: Sent once when an escalation hands the conversation to a human (bot/core/handoff.py);
    #: ``handoff_texts`` maps a language code (the conversation's ``language`` fact, or the
    #: language detected in the customer's messages) to its text.
    handoff: Annotated[str, Field(max_length=2000)] = ""
    handoff_texts: dict[str, Annotated[str, Field(max_length=2000)]] = Field(default_factory=dict)

    @field_validator("acknowledgement")
    @classmethod
    def _fills_in_expected_minutes(cls, value: str) -> str:
        return _only_expected_minutes(value)

    @field_validator("acknowledgement_texts")
    @classmethod
    def _languages_fill_in_expected_minutes(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            _only_expected_minutes(text)
        return _language_codes(value)

    @field_validator("handoff_texts")
    @classmethod
    def _handoff_languages(cls, value: dict[str, str]) -> dict[str, str]:
        return _language_codes(value)

    @model_validator(mode="after")
    def _expected_needs_a_time(self) -> DeskSlaFields:
        texts = (self.acknowledgement, *self.acknowledgement_texts.values())
        if any("{expected_minutes}" in t.replace("{{", "") for t in texts) and not self.first_response_minutes:
            raise ValueError("acknowledgement names {expected_minutes}: set first_response_minutes")
        return self


class DeskSection(DeskSlaFields):
    """Who is who in a customer's thread, and how long a conversation may wait on its customer.

    Everyone on ``[approvers] agents`` / ``managers`` is an agent. ``agents`` names who else is:
    ``"review_channel"`` (members of the Slack review channel), ``"workspace"`` (in a Slack Connect
    channel, members of the workspace that installed the bot) and ``"role:<id>"`` (holders of that
    Discord staff role). An agent writing in a customer's thread takes it over. Anyone else is an
    outsider: with ``outsiders = "context"`` their messages are kept as context and draft nothing;
    with ``"customers"`` (public Discord channels where anyone may ask) each asker is a customer.
    ``auto_resolve_hours``: a conversation waiting on its customer longer than that is resolved
    (0: never)."""

    agents: tuple[str, ...] = ("review_channel",)
    outsiders: Literal["context", "customers"] = "context"
    auto_resolve_hours: Annotated[float, Field(ge=0, le=24 * 365)] = 0.0
    #: The language the agents read (a code such as ``en``): a customer writing in another one
    #: gets a card with their message and the draft translated, and an edit written in this
    #: language is translated back for approval (bot/core/translation.py). ``""`` or ``"off"``:
    #: no translation.
    language: str = ""

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("", "off"):
            return ""
        _language_codes({value: ""})
        return value

    @field_validator("agents")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if entry not in ("review_channel", "workspace") and not re.fullmatch(r"role:\S+", entry):
                raise ValueError(f'{entry!r} is not "review_channel", "workspace" or "role:<id>"')
        return value


class ChannelsSection(_Section):
    """Channels the bot answers in; empty means wherever it is mentioned or DMed."""

    watch: tuple[str, ...] = ()


class KnowledgeSection(_Section):
    """Text or Markdown files the knowledge-search tool reads (relative to the policy file)."""

    files: tuple[str, ...] = ()


class LogsSection(_Section):
    """What the bot's own logs may hold (see bot/logs.py)."""

    redact_personal_data: bool = False


class RetentionSection(_Section):
    """How long conversations' text is kept. ``days`` = 0 (the default) keeps it forever; N > 0
    lets the retention job (every ``RETENTION_SWEEP_SECONDS``) erase the text of messages, images,
    drafts, tool calls, sent replies and conversations' summaries older than N days, and replace
    the audit trail's summaries with their sha256: ids, kinds, actors and times stay. Work still in
    flight (a draft awaiting review or being sent) keeps its conversation whole."""

    days: Annotated[int, Field(ge=0, le=36500)] = 0


class FeedbackSection(_Section):
    """What the customer is asked about the answers (issue 21 point 4). ``after_reply``: a
    delivered reply carries 👍 / 👎 buttons (only the conversation's customer may click them; a
    second click changes the vote). ``csat_question``: a fixed text sent once when an agent's
    Resolve closes the conversation (never when the bot resolved it itself); empty: none."""

    after_reply: bool = False
    csat_question: Annotated[str, Field(max_length=2000)] = ""

    @field_validator("csat_question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if value and not value.strip():
            raise ValueError("must be empty (no question) or a question, not only spaces")
        return value.strip()


class Policy(_Section):
    """The whole policy file."""

    assistant: AssistantSection = AssistantSection()
    models: ModelsSection = ModelsSection()
    limits: LimitsSection = LimitsSection()
    fairness: FairnessSection = FairnessSection()
    memory: MemorySection = MemorySection()
    refunds: RefundsSection = RefundsSection()
    identity: IdentitySection = IdentitySection()
    approvers: ApproversSection = ApproversSection()
    escalation: EscalationSection = EscalationSection()
    desk: DeskSection = DeskSection()
    channels: ChannelsSection = ChannelsSection()
    knowledge: KnowledgeSection = KnowledgeSection()
    logs: LogsSection = LogsSection()
    retention: RetentionSection = RetentionSection()
    feedback: FeedbackSection = FeedbackSection()

    @property
    def version(self) -> str:
        """A short hash of the effective policy (recorded with drafts)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def _line_of(source: str, loc: tuple[str | int, ...]) -> int | None:
    """Find the line that sets ``loc`` (``("refunds", "max_amount")``) in a TOML text."""
    lines = source.splitlines()
    section: str | None = None
    wanted_table = str(loc[0]) if loc else ""
    key = str(loc[1]) if len(loc) > 1 else None
    table_line = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.\-]+)\s*\]", line)
        if header:
            section = header.group(1)
            if section == wanted_table:
                table_line = number
            continue
        match = re.match(r"^([A-Za-z0-9_\-]+)\s*=", line)
        if not match:
            continue
        name = match.group(1)
        if key is None and section is None and name == wanted_table:
            return number
        if section == wanted_table and name == key:
            return number
    return table_line


def _too_large(size: int) -> str:
    return f"file: too large for a policy ({size:,} bytes; at most {MAX_POLICY_BYTES:,})"


def parse_policy(source: str, path: str = "policy.toml") -> Policy:
    """Validate a policy text. Raises :class:`PolicyError` listing every problem."""
    size = len(source.encode("utf-8", errors="replace"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(path, [_too_large(size)])
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(path, [f"not valid TOML: {exc}"]) from None
    except RecursionError:  # tomllib recurses per nesting level: a = [[[[… exhausts the stack
        raise PolicyError(path, ["not valid TOML: arrays or tables nested too deeply"]) from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            found = err["loc"]
            if found[:2] == ("escalation", "desks") and len(found) > 2:  # as written: [escalation.slack]
                found = (f"escalation.{found[2]}", *found[3:])
            loc = tuple(part for part in found if not isinstance(part, int) or len(found) > 2)
            field = ".".join(str(p) for p in found)
            line = _line_of(source, loc)
            where = f"line {line}" if line else "file"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(f"{where}: {field}: {message}")
        raise PolicyError(path, problems) from None
    problems = contradictions(policy, source)
    if problems:
        raise PolicyError(path, problems)
    return policy


def _at(source: str, section: str, key: str) -> str:
    line = _line_of(source, (section, key))
    return f"line {line}" if line else "file"


def deprecations(source: str) -> list[str]:
    """Keys of a policy text that still work but have a new form, each naming line and field and
    saying what to write instead."""
    try:
        escalation = tomllib.loads(source).get("escalation")
    except (tomllib.TOMLDecodeError, RecursionError):
        return []
    lines = []
    for key, value in escalation.items() if isinstance(escalation, dict) else ():
        old = _OLD_ON_CALL.fullmatch(key)
        if old is not None and not isinstance(value, dict):
            lines.append(
                f"{_at(source, 'escalation', key)}: escalation.{key} is deprecated; "
                f"write [escalation.{old.group(1)}] on_call = {json.dumps(value)} instead"
            )
    return lines


def read_deprecations(path: Path) -> list[str]:
    """:func:`deprecations` of the policy file at ``path`` (none when it cannot be read)."""
    try:
        return deprecations(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []


def contradictions(policy: Policy, source: str = "") -> list[str]:
    """Settings that are valid one by one but contradict each other, each naming line and field."""
    r = policy.refunds
    problems = []
    for name in ("manager_threshold", "two_approvers_threshold"):
        threshold = int(getattr(r, name))
        if threshold > r.max_amount:
            problems.append(
                f"{_at(source, 'refunds', name)}: refunds.{name}: {Money.of_cents(threshold)} is above "
                f"refunds.max_amount {Money.of_cents(r.max_amount)}, so it could never apply"
            )
    return problems


def hidden_part(name: str, folder: Path) -> str | None:
    """The hidden part (".env", ".git") of a knowledge file's path as named or as it resolves
    inside ``folder`` (a symlink ``faq.md -> .env``), or None."""
    parts = [part for part in Path(name).parts if part not in (".", "..")]
    target = (folder / name).resolve()
    root = folder.resolve()
    if target.is_relative_to(root):
        parts += target.relative_to(root).parts
    return next((part for part in parts if part.startswith(".")), None)


def knowledge_refusal(name: str, data: bytes, secrets: Secrets) -> str | None:
    """Why a knowledge file's content may not go to Kimi (it holds a secret), or None."""
    held = secret_in(data, secrets)
    if held is not None:
        return f"{name} holds the value of {held} (a secret must never reach Kimi or a draft)"
    return None


def knowledge_problems(policy: Policy, folder: Path, secrets: Secrets, source: str = "") -> list[str]:
    """Each knowledge file that may not be used, and why: outside the policy's folder
    (``../../etc/passwd``), hidden (``.env``), missing, unreadable, or holding a secret."""
    root = folder.resolve()
    where = f"{_at(source, 'knowledge', 'files')}: knowledge.files"
    problems = []
    for name in policy.knowledge.files:
        target = folder / name
        if not target.resolve().is_relative_to(root):
            problems.append(f"{where}: {name} is outside the policy's folder")
            continue
        hidden = hidden_part(name, folder)
        if hidden is not None:
            detail = "" if hidden == name else f" ({hidden})"
            problems.append(f"{where}: {name} is a hidden file{detail}; hidden files are never knowledge")
            continue
        if not target.is_file():
            problems.append(f"{where}: no such file: {name}")
            continue
        try:
            data = target.read_bytes()
        except OSError as exc:
            problems.append(f"{where}: {name} cannot be read: {exc.strerror}")
            continue
        refusal = knowledge_refusal(name, data, secrets)
        if refusal is not None:
            problems.append(f"{where}: {refusal}")
    return problems


def check_policy(source: str, path: Path, secrets: Secrets) -> Policy:
    """Everything :func:`load_policy` checks, for a text not saved yet (the playground's editor):
    the fields, and the knowledge files relative to ``path``'s folder."""
    policy = parse_policy(source, str(path))
    problems = knowledge_problems(policy, path.parent, secrets, source)
    if problems:
        raise PolicyError(str(path), problems)
    return policy


def load_policy(path: Path, secrets: Secrets | None = None) -> Policy:
    """Load the policy file, or the built-in defaults when it does not exist. ``secrets``: the
    configured secrets no knowledge file may hold (:func:`bot.secret_values.configured_secrets`)."""
    if not path.exists():
        return Policy()
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(str(path), [_too_large(size)])
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc}"]) from None
    return policy_of(path, data, secrets or {})


def policy_of(path: Path, data: bytes, secrets: Secrets) -> Policy:
    """The policy in ``data``, the bytes read from ``path``."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(str(path), [_too_large(len(data))])
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc}"]) from None
    return check_policy(source, path, secrets)


class PolicyStore:
    """The live policy. ``current`` is always a valid policy; :meth:`watch` reloads the file
    when it changes and reports a bad edit once through ``on_error``."""

    def __init__(self, path: Path, policy: Policy | None = None, secrets: Secrets | None = None) -> None:
        self.path = path
        self.secrets = secrets or {}
        self.current = policy if policy is not None else load_policy(path, self.secrets)
        self.refused: PolicyError | None = None  # why the file as it is now is not in force
        data = self._read()
        self._fingerprint = None if data is None else hashlib.sha256(data).digest()
        self._candidate: tuple[bytes | None] | None = None  # a new content seen once, not yet taken
        if policy is None:
            self._warn_deprecated()

    def _warn_deprecated(self) -> None:
        for line in read_deprecations(self.path):
            log.warning("%s: %s", self.path, line)

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _policy_of(self, data: bytes | None) -> Policy:
        return load_policy(self.path, self.secrets) if data is None else policy_of(self.path, data, self.secrets)

    async def reload_if_changed(
        self, on_error: Callable[[PolicyError], Awaitable[None]], *, settled: bool = False
    ) -> bool:
        """Reload when the file's content changed (the content read is the content loaded).
        ``settled``: only once the same new content is seen on two looks in a row, so a file caught
        half written (an editor saving in place, a copy on its way) is never put in force; a bad
        edit is reported once it has settled too. Returns True when a new policy is in force."""
        data = await asyncio.to_thread(self._read)
        fingerprint = None if data is None else hashlib.sha256(data).digest()
        if fingerprint == self._fingerprint:
            self._candidate = None
            return False
        if settled and self._candidate != (fingerprint,):
            self._candidate = (fingerprint,)
            return False
        self._fingerprint, self._candidate = fingerprint, None
        try:
            policy = await asyncio.to_thread(self._policy_of, data)
        except PolicyError as exc:
            log.warning("policy reload failed, keeping the previous policy: %s", exc)
            self.refused = exc
            await on_error(exc)
            return False
        self.current = policy
        self.refused = None
        log.info("policy reloaded from %s (version %s)", self.path, policy.version)
        await asyncio.to_thread(self._warn_deprecated)
        return True

    async def watch(self, interval: float, on_error: Callable[[PolicyError], Awaitable[None]]) -> None:
        """Poll the file (works on bind mounts and ConfigMap symlink swaps alike); a change is
        taken once it has stayed the same for one ``interval``."""
        while True:
            await asyncio.sleep(interval)
            await self.reload_if_changed(on_error, settled=True)
