"""The drafting agent: Kimi in a tool loop, with guardrails.

Arguments are validated with the tool's pydantic model before the tool runs; a read tool runs
with a timeout; a failing tool returns a short structured error the model can explain; an
identical repeated call or the policy's step limit forces a final answer
(``tool_choice="none"``). The result is a draft with its tool-call log, proposals and usage.
Nothing here moves money or posts anything.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from bot.domain.outcome import ToolCallRecord
from bot.domain.text import TOOL_NAME_LENGTH, cut_label, storable_values
from bot.errors import DraftingError, KimiContextTooLong, KimiModelNotFound, KimiRetryableError
from bot.kimi import Completion, DeltaSink, KimiClient, ToolCallRequest, Usage
from tools import ToolContext, ToolError, ToolRegistry
from tools.json_input import loads
from tools.no_reply import NoReplyNeeded
from tools.refunds import RefundProposal

log = logging.getLogger(__name__)

MAX_TOOL_RESULT_CHARS = 6000

UsageSink = Callable[[str, Usage], None]
#: Hears each tool call as it starts: ``(tool name, its JSON arguments)`` (progress on a forming card).
StepSink = Callable[[str, str], None]


class CallGate(Protocol):
    """What a draft's model calls pass before and after each call: a budget reservation, and
    the tenant (the customer) whose place in Kimi's round-robin the call takes."""

    tenant: str

    async def reserve(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, max_tokens: int
    ) -> int:
        """Hold the call's worst case (returned, micro-USD) or raise to stop the draft."""
        ...

    def settle(self, worst_case: int, cost: int) -> None:
        """The call cost ``cost``; the rest of ``worst_case`` is free again."""
        ...


@dataclass(slots=True)
class DraftResult:
    """What one drafting run produced."""

    text: str
    model: str
    usage: Usage
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    proposals: list[RefundProposal] = field(default_factory=list)
    forced_final: str = ""
    calls: int = 0


@dataclass(slots=True)
class AgentLimits:
    """The policy's limits for one run."""

    max_tool_steps: int
    tool_timeout_seconds: float
    thinking: bool
    max_output_tokens: int


def _said_no_reply(result: DraftResult) -> bool:
    """The model called ``no_reply_needed``: an empty final answer is what it was told to give
    (the core decides whether a draft is needed anyway)."""
    return any(c.name == NoReplyNeeded.name and not c.error for c in result.tool_calls)


def _error_payload(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def _assistant_turn(completion: Completion, thinking: bool) -> dict[str, Any]:
    """The assistant message as returned, made acceptable to send back (K2.5 rules)."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.message.get("content") or ""}
    if completion.message.get("tool_calls"):
        message["tool_calls"] = completion.message["tool_calls"]
    reasoning = completion.message.get("reasoning_content")
    if reasoning:
        message["reasoning_content"] = reasoning
    elif thinking and message.get("tool_calls"):
        # An empty string counts as missing on Kimi; one space is accepted.
        message["reasoning_content"] = " "
    return message


class DraftingAgent:
    """Runs the tool loop for one draft."""

    def __init__(self, kimi: KimiClient) -> None:
        self._kimi = kimi

    async def draft(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        fallback_model: str | None,
        limits: AgentLimits,
        context: ToolContext,
        tools: ToolRegistry,
        on_usage: UsageSink,
        on_delta: DeltaSink | None = None,
        on_step: StepSink | None = None,
        gate: CallGate | None = None,
    ) -> DraftResult:
        """Draft a reply. ``on_usage(model, usage)`` hears about every model call as it returns,
        so spent tokens are recorded even when the draft fails later.

        A prompt over the context window is cut to the summary and the last turns and tried once
        more. The client already moves to ``fallback_model`` while the primary's breaker is open;
        here the fallback also gets one try when the primary gave up on a transient failure or
        was retired while the bot runs.
        Quota, content filter and key errors are raised as they are (a fallback on the same
        account cannot fix them). ``on_delta(text_so_far)`` sees each model call's answer as it
        streams (a tool-calling step streams little or nothing; the final answer streams in full);
        ``on_step(name, arguments)`` each tool call as it starts."""
        run = functools.partial(
            self._run,
            limits=limits,
            context=context,
            tools=tools,
            on_usage=on_usage,
            on_delta=on_delta,
            on_step=on_step,
            gate=gate,
        )
        try:
            try:
                return await run(messages, model=model)
            except KimiContextTooLong as exc:
                shorter = shrink_to_recent(messages)
                if len(shorter) >= len(messages):
                    raise
                log.warning("the prompt was over the context window (%s); retrying with the last turns", exc)
                messages = shorter
                return await run(messages, model=model)
        except (KimiRetryableError, KimiModelNotFound) as exc:
            if not fallback_model or fallback_model == model:
                raise
            log.warning("drafting with %s failed (%s); trying the fallback model %s", model, exc, fallback_model)
            return await run(messages, model=fallback_model)

    async def _run(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        limits: AgentLimits,
        context: ToolContext,
        tools: ToolRegistry,
        on_usage: UsageSink,
        on_delta: DeltaSink | None = None,
        on_step: StepSink | None = None,
        gate: CallGate | None = None,
    ) -> DraftResult:
        conversation = list(messages)
        result = DraftResult(text="", model=model, usage=Usage())
        definitions = tools.definitions() or None
        seen_calls: dict[str, str] = {}
        force_final = ""
        for step in range(limits.max_tool_steps + 1):
            if step == limits.max_tool_steps and not force_final:
                force_final = f"step limit ({limits.max_tool_steps}) reached"
            worst_case = await gate.reserve(model, conversation, definitions, limits.max_output_tokens) if gate else 0
            completion = await self._kimi.chat(
                model=model,
                messages=conversation,
                tools=definitions,
                tool_choice="none" if force_final and definitions else None,
                thinking=limits.thinking,
                max_tokens=limits.max_output_tokens,
                on_delta=on_delta,
                tenant=gate.tenant if gate else "",
            )
            if gate:
                gate.settle(worst_case, completion.usage.cost or 0)
            result.calls += 1
            result.usage = result.usage + completion.usage
            result.model = completion.model or model
            on_usage(result.model, completion.usage)
            if not completion.tool_calls:
                text = completion.content.strip()
                if not text and not _said_no_reply(result):
                    raise DraftingError("the model returned an empty reply")
                result.text = text
                result.forced_final = force_final
                return result
            if force_final:
                raise DraftingError(f"the model kept calling tools after being told to answer ({force_final})")
            conversation.append(_assistant_turn(completion, limits.thinking))
            for call in completion.tool_calls:
                # A call made again once the customer is verified is not a repeat: it sees more.
                signature = f"{call.name}:{context.verified_customer_id}:{_canonical(call.arguments)}"
                if signature in seen_calls:
                    force_final = f"repeated call to {call.name}"
                    content = _error_payload(
                        "repeated_call",
                        "This exact call was already made; use its earlier result and answer.",
                    )
                else:
                    if on_step is not None:
                        on_step(call.name, call.arguments or "")
                    record = await self._run_tool(call, tools, limits, context, result)
                    content = record.result
                    seen_calls[signature] = content
                conversation.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
        raise DraftingError("the drafting loop ended without an answer")  # pragma: no cover

    async def _run_tool(
        self, call: ToolCallRequest, tools: ToolRegistry, limits: AgentLimits, context: ToolContext, result: DraftResult
    ) -> ToolCallRecord:
        started = time.perf_counter()
        summary, error = "", ""
        tool = tools.get(call.name)
        if tool is None:
            error = "unknown_tool"
            content = _error_payload(error, f"There is no tool named {call.name!r}.")
        else:
            try:
                raw_args = storable_values(loads(call.arguments or "{}"))
                args = tool.Args.model_validate(raw_args)
            except (ValueError, ValidationError) as exc:
                error = "invalid_arguments"
                content = _error_payload(error, _short_validation(exc))
            else:
                try:
                    async with asyncio.timeout(limits.tool_timeout_seconds):
                        outcome = await tool.run(args, context)
                except TimeoutError:
                    error = "timeout"
                    content = _error_payload(error, f"{call.name} did not answer in time; try again later.")
                except ToolError as exc:
                    error = exc.code
                    content = _error_payload(exc.code, exc.message)
                except Exception:
                    log.exception("tool %s failed", call.name)
                    error = "internal"
                    content = _error_payload(error, f"{call.name} failed unexpectedly.")
                else:
                    content = json.dumps(outcome.data, default=str)[:MAX_TOOL_RESULT_CHARS]
                    summary = outcome.summary
                    if outcome.proposal is not None:
                        result.proposals.append(outcome.proposal)
        name = cut_label(call.name, TOOL_NAME_LENGTH)  # as stored: the fresh card and a redrawn one agree
        if error and not summary:
            summary = f"{name} failed: {error}"
        record = ToolCallRecord(
            name=name,
            arguments=call.arguments[:2000],
            result=content,
            summary=summary,
            error=error,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
        result.tool_calls.append(record)
        return record


def shrink_to_recent(messages: list[dict[str, Any]], keep_turns: int = 4) -> list[dict[str, Any]]:
    """The prompt cut down after "context too long": the leading system messages (instructions,
    knowledge, the summary, the facts), the last ``keep_turns`` turns and the closing system message."""
    head: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") != "system":
            break
        head.append(message)
    rest = messages[len(head) :]
    tail = [rest.pop()] if rest and rest[-1].get("role") == "system" else []
    recent = rest[-keep_turns:]
    while recent and recent[0].get("role") != "user":
        recent = recent[1:]  # start on a customer turn, never on an orphan tool result
    dropped = rest[: len(rest) - len(recent)]
    # A system message among the turns is a fact note; the newest one dropped still holds.
    noted = [m for m in dropped if m.get("role") == "system"][-1:]
    return head + noted + recent + tail


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return arguments


def _short_validation(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()[:3]]
        return "Invalid arguments: " + "; ".join(parts)
    return "Arguments are not valid JSON."
