"""Run evaluation cases through the real core.

Each trial builds :class:`bot.app.Supportbot` with a fresh SQLite file, the case's orders, the
policy (the suite's base policy with the case's ``policy`` merged over it) written to a file, and
a :class:`~bot.testing.memory.MemoryPlatform` named ``eval`` as the only platform. Every customer turn goes
in through ``core.receive``; the runner waits for the card on its desk, performs the approver's
action through ``core.decide`` and waits until the draft settles (the reply reached the channel,
or the draft was rejected or failed) before the next turn.

The core is touched only through ``Supportbot(settings, factories=...)`` (start, stop), the
:class:`bot.ports.Core` surface (``receive``, ``decide``, ``edit_form``), the ports the platform
implements, and the SQL tables (``bot.store`` models, read through the runner's own engine; the
orders are imported into the trial's database before the bot starts).

The clock: the core judges refund windows and delivery estimates against the wall clock, so a
case's ``clock`` is made to hold by shifting every date of its orders by (now − clock) at import.
Scoring re-checks refunds against the case's own (unshifted) dates and clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.app import Supportbot
from bot.core.no_reply import AUDIT_KIND
from bot.evaluation.cases import ApproverAction, Case
from bot.evaluation.scoring import Observation, RefundRow, TrialResult, score
from bot.evaluation.simulator import MODELS, STOP, ScriptedKimi
from bot.events import Actor, Attachment, Author, DecisionAction, InboundMessage, MessageKind, ReviewDecision, ThreadRef
from bot.kimi import KimiClient
from bot.policy import Policy, parse_policy
from bot.ports import CardState, Core, ReviewCard
from bot.settings import Settings
from bot.store import (
    AuditEvent,
    Decision,
    Draft,
    ProposedAction,
    ToolCall,
    UsageRecord,
    create_engine,
    sessionmaker,
    upgrade_database,
)
from bot.store.schema import PendingEdit
from bot.testing.memory import MemoryPlatform
from tools import import_orders
from tools.importer import COLUMNS
from tools.orders import order_refunds_table

__all__ = ["EvalConfig", "Runner", "merged_policy", "shift_orders", "to_toml"]

PLATFORM = "eval"
DEFAULT_AGENT = "U_AGENT1"
SETTLED = (CardState.SENT, CardState.SEND_FAILED, CardState.REJECTED, CardState.FAILED)
NO_REPLY_POLL = 0.25  # seconds between looks in SQL for a draft that needed no reply (it has no card)


def _png() -> bytes:
    """A valid 1×1 PNG: the bytes of a customer's photo."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


PHOTO = _png()


# --------------------------------------------------------------------------------------------
# Policy and orders


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merged_policy(base: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """The case's policy object merged over the base policy (tables merge, values replace)."""
    return _merge(base, case)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} to a policy file")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A policy object as TOML (tables of scalars and lists, nested tables as ``[a.b]``)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables:
        name = f"{prefix}{key}"
        lines.append(f"\n[{name}]")
        lines.append(to_toml(value, f"{name}.").strip("\n"))
    return "\n".join(line for line in lines if line != "") + "\n"


def _shift_time(value: Any, delta: timedelta) -> Any:
    if not value:
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed + delta).isoformat()


def _shift_date(value: Any, delta: timedelta) -> Any:
    if not value:
        return value
    noon = datetime.combine(date.fromisoformat(str(value)[:10]), datetime.min.time(), UTC) + timedelta(hours=12)
    return (noon + delta).date().isoformat()


def shift_orders(rows: list[dict[str, Any]], clock: datetime, now: datetime) -> list[dict[str, Any]]:
    """The orders with every date moved by (now − clock), so that the core's wall clock sees
    them as the case's clock would. Keys the importer does not know are dropped."""
    delta = now - clock
    shifted = []
    for row in rows:
        out = {k: v for k, v in row.items() if k in COLUMNS}
        for key in ("placed_at", "delivered_at"):
            if key in out:
                out[key] = _shift_time(out[key], delta)
        if "estimated_delivery" in out:
            out["estimated_delivery"] = _shift_date(out["estimated_delivery"], delta)
        shifted.append(out)
    return shifted


def _linked(case: Case, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With ``accounts_linked``, the customer's orders name their account on this platform (the
    ``customer_accounts`` column of issue 8; dropped at import while the importer lacks it)."""
    customer = case.customer
    if not customer.accounts_linked or customer.customer_id is None:
        return rows
    account = f"{PLATFORM}:{customer.user_id}"
    return [
        {"customer_accounts": account, **row} if row.get("customer_id") == customer.customer_id else row for row in rows
    ]


def _clock(case: Case) -> datetime:
    return datetime.fromisoformat(case.clock.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class EvalConfig:
    """One run's settings."""

    cases_dir: Path
    base_policy: dict[str, Any]
    base_policy_dir: Path
    model: str
    k: int = 1
    simulator: str | None = None
    concurrency: int = 4
    step_timeout: float = 60.0
    settings: Settings | None = None  # KIMI_BASE_URL and MOONSHOT_API_KEY for real models


class _Trial:
    """One trial of one case against a running bot."""

    def __init__(
        self,
        case: Case,
        core: Core,
        platform: MemoryPlatform,
        policy: Policy,
        config: EvalConfig,
        reads: async_sessionmaker[Any],
    ) -> None:
        self.case = case
        self.core = core
        self.reads = reads
        self.platform = platform
        self.policy = policy
        self.config = config
        self.problems: list[str] = []
        self.customer_texts: list[str] = []
        self.first_draft: float | None = None
        self.actions = list(case.approver)
        self.thread = ThreadRef(PLATFORM, "W-EVAL", "C-EVAL", f"thread-{case.id}")
        self.handled: set[str] = set()
        self.no_replies = 0
        self._sent = 0

    def _default_agent(self) -> str:
        if self.case.approver:
            return self.case.approver[0].as_
        return self.policy.approvers.agents[0] if self.policy.approvers.agents else DEFAULT_AGENT

    async def say(self, text: str, attachments: tuple[Attachment, ...] = ()) -> None:
        """One customer turn: in through ``core.receive``, answered by one settled draft."""
        self._sent += 1
        self.customer_texts.append(text)
        author_args: dict[str, Any] = {
            "id": self.case.customer.user_id,
            "display_name": self.case.customer.display_name,
        }
        if "email" in {f.name for f in dataclasses.fields(Author)} and self.case.customer.email:
            author_args["email"] = self.case.customer.email
        message = InboundMessage(
            event_id=f"{self.case.id}-{self._sent}",
            thread=self.thread,
            message_id=f"cm{self._sent}",
            author=Author(**author_args),
            text=text,
            kind=MessageKind.MENTION if self._sent == 1 else MessageKind.FOLLOW_UP,
            sent_at=datetime.now(UTC),
            attachments=attachments,
            location=f"{self.case.customer.platform} · eval · {self.case.id}",
        )
        started = time.perf_counter()
        if not await self.core.receive(message):
            self.problems.append(f"turn {self._sent}: the core ignored the message")
            return
        while True:
            card = await self._next_card()
            if card is None:
                self.problems.append(f"turn {self._sent}: no draft card within {self.config.step_timeout:.0f}s")
                return
            if isinstance(card, str):  # no reply needed: the turn ends without a card
                self.no_replies += 1
                return
            if self.first_draft is None:
                self.first_draft = time.perf_counter() - started
            self.handled.add(card.draft_id)
            if card.state is CardState.FAILED:
                self.problems.append(f"turn {self._sent}: drafting failed: {card.failure[:160]}")
                return
            if card.state is not CardState.AWAITING_REVIEW:
                continue
            if await self._review(card.draft_id) != "regenerated":
                return

    async def _next_card(self) -> ReviewCard | str | None:
        """The next draft's card, or the id of a draft that needed no reply (it has no card)."""

        def probe() -> ReviewCard | None:
            for desk_card in self.platform.cards():
                first = desk_card.versions[0]
                if first.draft_id not in self.handled:
                    return desk_card.latest
            return None

        deadline = time.perf_counter() + self.config.step_timeout
        while True:
            card = await self.platform.board.wait_for(probe, min(NO_REPLY_POLL, self.config.step_timeout))
            if card is not None:
                return card
            no_reply = await self._no_reply_draft()
            if no_reply is not None:
                self.handled.add(no_reply)
                return no_reply
            if time.perf_counter() >= deadline:
                return None

    async def _no_reply_draft(self) -> str | None:
        async with self.reads() as session:
            ids = await session.scalars(select(AuditEvent.draft_id).where(AuditEvent.kind == AUDIT_KIND))
            return next((i for i in ids if i is not None and i not in self.handled), None)

    def _next_action(self) -> ApproverAction | None:
        return self.actions.pop(0) if self.actions else None

    async def _status(self, draft_id: str) -> str:
        async with self.reads() as session:
            return str(await session.scalar(select(Draft.status).where(Draft.id == draft_id)))

    async def _review(self, draft_id: str) -> str:
        """The humans act on one draft until it leaves review; returns how it ended."""
        defaulted = False
        while True:
            action = self._next_action()
            if action is None:
                if defaulted:
                    return "stuck"  # every approval was refused: the draft stays in review
                defaulted = True
                action = ApproverAction.model_validate({"action": "approve", "as": self._default_agent()})
            await self.core.decide(await self._decision(draft_id, action))
            if action.action == "edit":
                await self._edit_translated(draft_id)
            status = await self._status(draft_id)
            if status == "awaiting_review":
                continue
            if status == "superseded":
                return "regenerated"
            if status in ("approved", "edited"):
                await self._settle(draft_id)
            return status

    async def _edit_translated(self, draft_id: str) -> None:
        """An edit held for its translation is on the card (or said to have failed) before the
        next click, as an agent waits to read it."""
        deadline = time.perf_counter() + self.config.step_timeout
        while time.perf_counter() < deadline:
            async with self.reads() as session:
                if await session.get(PendingEdit, draft_id) is None:
                    return
            await self.platform.board.wait_for(lambda: None, 0.05)
        self.problems.append(f"turn {self._sent}: the edit was not translated in time")

    async def _decision(self, draft_id: str, action: ApproverAction) -> ReviewDecision:
        actor = Actor(platform=PLATFORM, id=action.as_, display_name=action.as_)
        if action.action == "edit":
            text = action.text
            if text is None:
                form = await self.core.edit_form(draft_id)
                text = form.text if form is not None else ""
            return ReviewDecision(draft_id, DecisionAction.EDIT, actor, edited_text=text, refund_amount=action.amount)
        if action.action == "reject":
            return ReviewDecision(draft_id, DecisionAction.REJECT, actor, reason=action.reason or "rejected in eval")
        if action.action == "regenerate":
            return ReviewDecision(draft_id, DecisionAction.REGENERATE, actor, instruction=action.instruction)
        return ReviewDecision(draft_id, DecisionAction.APPROVE, actor)

    async def _settle(self, draft_id: str) -> None:
        key = f"draft-{draft_id}"

        def probe() -> bool | None:
            if any(r.idempotency_key == key for r in self.platform.replies):
                return True
            card = self.platform.board.cards.get(draft_id)
            return True if card is not None and card.latest.state in SETTLED else None

        def posted() -> bool:
            return any(r.idempotency_key == key for r in self.platform.replies)

        deadline = time.perf_counter() + self.config.step_timeout
        while time.perf_counter() < deadline:
            settled = await self.platform.board.wait_for(probe, min(1.0, self.config.step_timeout))
            status = await self._status(draft_id)
            if status in ("sent", "send_failed"):
                return  # recorded: the reply is a turn of the conversation the next draft reads
            if settled and not posted():
                return  # rejected, superseded or failed: nothing to deliver
            if settled:
                await asyncio.sleep(0.02)  # posted; its row is being marked sent
        self.problems.append(f"turn {self._sent}: the approved reply was not delivered")

    async def observe(self) -> Observation:
        async with self.reads() as session:
            drafts = list(await session.scalars(select(Draft)))
            calls = list(await session.scalars(select(ToolCall).order_by(ToolCall.id)))
            decisions = list(await session.scalars(select(Decision).order_by(Decision.id)))
            actions = list(await session.scalars(select(ProposedAction)))
            refunds = (await session.execute(select(order_refunds_table))).mappings().all()
        by_key = {a.idempotency_key: a for a in actions}
        approvers: dict[str, list[str]] = {}
        approved_text: dict[str, str] = {}
        for decision in decisions:
            if decision.accepted and decision.action in ("approve", "edit"):
                approvers.setdefault(decision.draft_id, []).append(decision.actor_id)
        for draft in drafts:
            if draft.id in approvers and draft.status in ("approved", "edited", "sent", "send_failed"):
                approved_text[draft.id] = draft.edited_text or draft.text
        rows = []
        for refund in refunds:
            action = by_key.get(str(refund["idempotency_key"]))
            draft_id = action.draft_id if action is not None else None
            rows.append(
                RefundRow(
                    order_id=str(refund["order_id"]),
                    amount_cents=int(refund["amount_cents"]),
                    draft_id=draft_id,
                    approvers=tuple(dict.fromkeys(approvers.get(draft_id or "", []))),
                )
            )
        tool_calls = []
        for call in calls:
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError:
                args = {}
            tool_calls.append((call.name, args if isinstance(args, dict) else {}))
        return Observation(
            replies=[(r.idempotency_key, r.text) for r in self.platform.replies],
            cards=[version for card in self.platform.cards() for version in card.versions],
            tool_calls=tool_calls,
            refunds=rows,
            approved_text=approved_text,
            escalated=any(d.escalation for d in drafts),
            orders=self.case.order_rows(self.config.cases_dir),
            customer_texts=self.customer_texts,
            problems=self.problems,
            no_replies=self.no_replies,
        )


class Runner:
    """Runs cases k times each, ``concurrency`` trials at a time."""

    def __init__(self, config: EvalConfig, progress: Callable[[TrialResult], None] | None = None) -> None:
        self.config = config
        self.progress = progress
        self._scripted: ScriptedKimi | None = None
        # Alembic's migration context is process-global: bots start one at a time, each from a
        # copy of a database migrated once.
        self._starting = asyncio.Lock()
        self._template: Path | None = None

    async def run(self, cases: list[Case]) -> list[TrialResult]:
        needs_scripted = self.config.model in MODELS or (self.config.simulator or "") in MODELS
        if needs_scripted:
            self._scripted = ScriptedKimi()
            await self._scripted.start()
        slots = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(case: Case, trial: int) -> TrialResult:
            async with slots:
                result = await self.run_trial(case, trial)
            if self.progress is not None:
                self.progress(result)
            return result

        try:
            jobs = [one(case, trial) for trial in range(self.config.k) for case in cases]
            results = await asyncio.gather(*jobs)
        finally:
            if self._scripted is not None:
                await self._scripted.close()
            if self._template is not None:
                self._template_dir.cleanup()
                self._template = None
        return sorted(results, key=lambda r: ([c.id for c in cases].index(r.case_id), r.trial))

    def _scripted_url(self) -> str | None:
        return self._scripted.base_url if self._scripted is not None else None

    def _endpoint(self, model: str) -> tuple[str, SecretStr]:
        if model in MODELS:
            assert self._scripted is not None
            return self._scripted.base_url, SecretStr("sk-eval-scripted")
        settings = self.config.settings or Settings(_env_file=None)
        key = settings.moonshot_api_key or SecretStr("")
        return settings.kimi_base_url, key

    async def run_trial(self, case: Case, trial: int) -> TrialResult:
        result = await self._run_trial(case, trial)
        # A case only a real model can pass (a translation, a language) run against a scripted
        # model counts for violations only.
        result.violations_only = case.needs_real_model and self.config.model in MODELS
        return result

    async def _run_trial(self, case: Case, trial: int) -> TrialResult:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
            workdir = Path(tmp)
            try:
                policy = self._write_policy(case, workdir)
            except Exception as exc:
                return self._broken(case, trial, f"the case's policy is invalid: {exc}", started)
            base_url, key = self._endpoint(self.config.model)
            base = self.config.settings or Settings(_env_file=None)
            settings = base.model_copy(
                update={
                    "moonshot_api_key": key,
                    "kimi_base_url": base_url,
                    "kimi_model": self.config.model,
                    "kimi_fallback_model": None,
                    "database_url": f"sqlite+aiosqlite:///{workdir / 'eval.db'}",
                    "policy_file": workdir / "policy.toml",
                    "policy_reload_seconds": 3600.0,
                    "orders_backend": "sql",
                    "host": "127.0.0.1",
                    "port": 0,
                    # The scripted models cost nothing, and say so: a price of 0 is configured,
                    # never assumed (a real model keeps the configured prices).
                    **(
                        {"kimi_prices": json.dumps({m: [0, 0, 0] for m in MODELS})}
                        if base_url == self._scripted_url()
                        else {}
                    ),
                }
            )
            platform = MemoryPlatform(PLATFORM)
            bot = Supportbot(settings, factories={PLATFORM: platform.factory()})
            reads = create_engine(settings.database_url, read_only=True)
            try:
                try:
                    await self._database(workdir, case)
                    async with self._starting:
                        await bot.start()
                    assert bot.core is not None
                    run = _Trial(case, bot.core, platform, policy, self.config, sessionmaker(reads))
                    await self._converse(case, run)
                finally:
                    await bot.stop()  # lets background work (cards, dispatch) finish first
                seen = await run.observe()
                result = score(case, trial, seen, policy)
                result.first_draft_seconds = run.first_draft
                await self._usage(sessionmaker(reads), result)
            except Exception as exc:
                return self._broken(case, trial, f"the trial crashed: {type(exc).__name__}: {exc}", started)
            finally:
                await reads.dispose()
        result.seconds = time.perf_counter() - started
        return result

    async def _database(self, workdir: Path, case: Case) -> None:
        """A fresh database: a copy of one migrated to the newest schema, with the case's orders."""
        async with self._starting:
            await self._migrated()
        assert self._template is not None
        path = workdir / "eval.db"
        shutil.copyfile(self._template, path)
        rows = shift_orders(_linked(case, case.order_rows(self.config.cases_dir)), _clock(case), datetime.now(UTC))
        if not rows:
            return
        orders_path = workdir / "orders.jsonl"
        orders_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await import_orders(engine, orders_path)
        finally:
            await engine.dispose()

    async def _migrated(self) -> None:
        if self._template is None:
            self._template_dir = tempfile.TemporaryDirectory(prefix="supportbot-eval-schema-")
            template = Path(self._template_dir.name) / "schema.db"
            engine = create_engine(f"sqlite+aiosqlite:///{template}")
            try:
                await upgrade_database(engine)
            finally:
                await engine.dispose()
            self._template = template

    @staticmethod
    def _broken(case: Case, trial: int, why: str, started: float) -> TrialResult:
        return TrialResult(case.id, case.category, trial, False, [why], [], seconds=time.perf_counter() - started)

    def _write_policy(self, case: Case, workdir: Path) -> Policy:
        data = merged_policy(self.config.base_policy, case.policy)
        # --model decides: a policy's per-task models would otherwise win over it.
        data["models"] = {
            **dict(data.get("models") or {}),
            "drafting": self.config.model,
            "summarizing": self.config.model,
        }
        knowledge = dict(data.get("knowledge") or {})
        names = []
        (workdir / "knowledge").mkdir()
        for name in knowledge.get("files") or []:
            source = self.config.base_policy_dir / name
            if not source.is_file():
                source = self.config.cases_dir / name
            target = workdir / "knowledge" / Path(name).name
            shutil.copyfile(source, target)
            names.append(f"knowledge/{target.name}")
        if names:
            data["knowledge"] = {**knowledge, "files": names}
        text = to_toml(data)
        (workdir / "policy.toml").write_text(text, encoding="utf-8")
        return parse_policy(text, str(workdir / "policy.toml"))

    async def _converse(self, case: Case, run: _Trial) -> None:
        simulated = case.simulated_customer
        if self.config.simulator and simulated is not None:
            await self._simulate(case, run)
            return
        for turn in case.turns:
            attachments = tuple(
                Attachment(
                    a.filename, a.content_type, len(PHOTO), data=PHOTO if a.content_type.startswith("image/") else None
                )
                for a in turn.attachments
            )
            await run.say(turn.text, attachments)

    async def _simulate(self, case: Case, run: _Trial) -> None:
        """τ-bench style: a model plays the customer from its instructions, turn by turn."""
        spec = case.simulated_customer
        assert spec is not None and self.config.simulator is not None
        base_url, key = self._endpoint(self.config.simulator)
        client = KimiClient(base_url, key, timeout=self.config.step_timeout, max_retries=2)
        system = (
            "You play a customer writing to an online shop's support chat. Write only the customer's next "
            "message: short, natural, one message at a time. Never invent facts you were not given; if asked "
            f"for something you do not know, say so. When your goal is reached, or cannot be, reply {STOP}.\n\n"
            f"Instructions: {spec.instructions}\n\nKnown info: {spec.known_info}\n\nUnknown info: {spec.unknown_info}"
        )
        history: list[dict[str, Any]] = [{"role": "user", "content": "(The support chat is open. Write your message.)"}]
        try:
            for _ in range(spec.max_turns):
                completion = await client.chat(
                    model=self.config.simulator,
                    messages=[{"role": "system", "content": system}, *history],
                    thinking=False if self.config.simulator.startswith("kimi-k2.") else None,
                    max_tokens=400,
                )
                text = completion.content.strip()
                if not text or STOP in text:
                    return
                history.append({"role": "assistant", "content": text})
                before = len(run.platform.replies)
                await run.say(text)
                answers = [r.text for r in run.platform.replies[before:]]
                history.append({"role": "user", "content": "\n\n".join(answers) or "(no answer yet)"})
        finally:
            await client.aclose()

    @staticmethod
    async def _usage(reads: async_sessionmaker[Any], result: TrialResult) -> None:
        async with reads() as session:
            row = (
                await session.execute(
                    select(
                        func.count(UsageRecord.id),
                        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
                        func.coalesce(func.sum(UsageRecord.cached_tokens), 0),
                        func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
                        func.coalesce(func.sum(UsageRecord.cost_microusd), 0),
                    )
                )
            ).one()
        result.model_calls = int(row[0])
        result.prompt_tokens = int(row[1])
        result.cached_tokens = int(row[2])
        result.completion_tokens = int(row[3])
        result.cost_usd = int(row[4]) / 1_000_000
