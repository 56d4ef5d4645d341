"""What the simulator answers: the steps a test scripts (:class:`Reply`, :class:`CallTools`,
:class:`Fail`, :class:`Hang`, :class:`Malformed`), and, when none is queued, a model's brain: the
echoing brain of the Kimi models (looks an order up when the customer names one, then sums the
tool results up) or the eval's scripted models (:mod:`bot.evaluation.simulator.scripted`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from bot.evaluation.simulator.scripted import plan_reply
from bot.evaluation.simulator.wire import AK_ID, JSON, ORG_ID, ModelSpec, text_of

__all__ = [
    "ORDER_ID_RE",
    "CallTools",
    "Fail",
    "Hang",
    "Malformed",
    "Output",
    "Reply",
    "Step",
    "answer",
    "find_order_id",
]

#: Opaque order ids the echoing brain recognises, e.g. ``#W2611340``, ``40021``, ``ORD-77``.
ORDER_ID_RE = re.compile(r"(?<![\w#-])(#?[A-Z]{1,5}-?\d{2,}|#?\d{4,})(?![\w-])")
_SLACK_MARKUP_RE = re.compile(r"<[@#!][^>]*>|<https?://[^>]*>")


@dataclass
class Reply:
    """Answer the next valid chat completion with this text (``reasoning_content`` is added when
    thinking is on; pass ``reasoning_content`` to choose it)."""

    content: str
    reasoning_content: str | None = None
    finish_reason: str = "stop"


@dataclass
class CallTools:
    """Answer the next valid chat completion with tool calls.

    ``calls`` is a list of ``(function_name, arguments)``; a dict is JSON-encoded, a str is sent
    verbatim (use it to test malformed JSON arguments).  Ids are ``functions.<name>:<idx>``.
    """

    calls: list[tuple[str, dict[str, Any] | str]]
    content: str = ""
    reasoning_content: str | None = None


@dataclass
class Fail:
    """Answer the next chat completion (before validation) with an API error."""

    status: int
    type: str
    message: str
    headers: dict[str, str] | None = None

    @classmethod
    def rate_limited(cls, after: int = 1, rpm: int = 3) -> Fail:
        """429 ``rate_limit_reached_error`` with the wait time in the message, as Kimi sends it."""
        return cls(
            429,
            "rate_limit_reached_error",
            f"Your account {ORG_ID}<{AK_ID}> request reached organization max RPM: {rpm}, "
            f"please try again after {after} seconds",
        )

    @classmethod
    def overloaded(cls) -> Fail:
        """429 ``engine_overloaded_error`` (transient)."""
        return cls(429, "engine_overloaded_error", "The engine is currently overloaded, please try again later")

    @classmethod
    def quota_exceeded(cls) -> Fail:
        """429 ``exceeded_current_quota_error`` (must not be retried)."""
        return cls(
            429,
            "exceeded_current_quota_error",
            "Your account is suspended due to insufficient balance, please recharge your account or "
            "check your plan and billing details",
        )

    @classmethod
    def content_filter(cls) -> Fail:
        """400 ``content_filter``."""
        return cls(400, "content_filter", "The request was rejected because it was considered high risk")

    @classmethod
    def server_error(cls) -> Fail:
        """500 ``server_error`` (the message text is invented)."""
        return cls(500, "server_error", "Internal server error, please try again later")


@dataclass
class Hang:
    """Sleep before answering the next chat completion (to provoke client timeouts), then answer
    with the brain.  For a streamed request with ``after_chunks`` set, the stream stalls after that
    many SSE events instead (a mid-stream stall)."""

    seconds: float
    after_chunks: int | None = None


@dataclass
class Malformed:
    """Answer the next chat completion with HTTP 200 and a body that is not JSON."""

    body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    content_type: str = "text/html"


Step: TypeAlias = Reply | CallTools | Fail | Hang | Malformed


@dataclass
class Output:
    """One answer, before it is put on the wire."""

    content: str
    reasoning: str | None
    tool_calls: list[JSON] | None
    finish_reason: str


def find_order_id(text: str) -> str | None:
    """The first order-id-looking token of ``text`` (Slack markup such as ``<@U123>`` is ignored)."""
    match = ORDER_ID_RE.search(_SLACK_MARKUP_RE.sub(" ", text))
    return match.group(1) if match else None


def _arguments_text(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which UTF-8 cannot carry: on the wire, a \u escape
        return json.dumps(arguments)
    return text


def tool_call(name: str, arguments: dict[str, Any] | str, index: int) -> JSON:
    args = arguments if isinstance(arguments, str) else _arguments_text(arguments)
    return {"id": f"functions.{name}:{index}", "type": "function", "function": {"name": name, "arguments": args}}


def answer(spec: ModelSpec, body: JSON, thinking: bool, step: Reply | CallTools | None) -> Output:
    """The answer to a validated request: the scripted ``step`` if any, else the model's brain."""
    messages: list[JSON] = body["messages"]
    next_index = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
    if isinstance(step, Reply):
        out = Output(step.content, step.reasoning_content, None, step.finish_reason)
        if thinking and not out.reasoning:
            out.reasoning = "The answer for this turn was scripted by the test."
        return out
    if isinstance(step, CallTools):
        calls = [tool_call(name, args, next_index + i) for i, (name, args) in enumerate(step.calls)]
        reasoning = step.reasoning_content or (
            "I need to call " + ", ".join(name for name, _ in step.calls) + "." if thinking else None
        )
        return Output(step.content, reasoning, calls, "tool_calls")
    out = _scripted(body, next_index) if spec.scripted else _echo(body, next_index)
    if not thinking:
        out.reasoning = None
    return out if out.tool_calls else _shape_text(body, out)


def _scripted(body: JSON, next_index: int) -> Output:
    plan = plan_reply(body)
    if plan.calls:
        calls = [tool_call(name, args, next_index + i) for i, (name, args) in enumerate(plan.calls)]
        return Output("", None, calls, "tool_calls")
    return Output(plan.text, None, None, "stop")


def _echo(body: JSON, next_index: int) -> Output:
    messages: list[JSON] = body["messages"]
    tool_choice = body.get("tool_choice")
    names = [t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    user_text = text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    tool_since_user = any(m.get("role") == "tool" for m in messages[last_user + 1 :])
    trailing: list[str] = []
    for msg in reversed(messages):
        if msg.get("role") != "tool":
            break
        trailing.insert(0, text_of(msg.get("content")))

    if names and tool_choice != "none":
        order_id = find_order_id(user_text)
        target: str | None = None
        if isinstance(tool_choice, dict):
            target = tool_choice["function"]["name"]
        elif not tool_since_user and order_id and "get_order_status" in names:
            target = "get_order_status"
        elif tool_choice == "required":
            target = "get_order_status" if "get_order_status" in names else names[0]
        if target is not None:
            args: JSON = {"order_id": order_id} if target == "get_order_status" and order_id else {}
            reasoning = (
                f"The customer is asking about order {order_id}. I should look it up with {target}."
                if order_id
                else f"I should call {target} before answering."
            )
            return Output("", reasoning, [tool_call(target, args, next_index)], "tool_calls")

    if trailing:
        text = "Thanks for waiting! Here is what I found: " + "\n".join(trailing)
        reasoning = "I have the tool results, so I will summarise them for the customer."
    elif user_text:
        text = (
            f'Thanks for reaching out! You wrote: "{user_text}". A member of our support team will follow up shortly.'
        )
        reasoning = "The customer sent a message; I will acknowledge it politely."
    else:
        text = "Hello! How can I help you today?"
        reasoning = "There is no user message yet, so I will greet the customer."
    return Output(text, reasoning, None, "stop")


def _shape_text(body: JSON, out: Output) -> Output:
    """Apply ``stop`` and ``max_tokens`` to a brain's text answer."""
    content = out.content
    stop = body.get("stop")
    for s in [stop] if isinstance(stop, str) else stop or []:
        if s and s in content:
            content = content[: content.index(s)]
    finish = out.finish_reason
    max_tokens = body.get("max_tokens")
    if max_tokens:
        budget = max_tokens * 4 - len((out.reasoning or "").encode())
        raw = content.encode()
        if len(raw) > budget:
            content = raw[: max(budget, 0)].decode(errors="ignore")
            finish = "length"
    return Output(content, out.reasoning, None, finish)
