"""An async client for Kimi (Moonshot's OpenAI-compatible chat completions API), streamed.

It follows the K2.5 rules: no sampling parameters are sent (K2.5 fixes temperature, top_p, n
and the penalties and rejects other values); assistant tool-call turns carry their
``reasoning_content`` back; tool-call ids are opaque and echoed as returned. 429s and 5xx are
told apart by Moonshot's ``error.type``: rate limits and overload are retried after the wait
the message names ("please try again after N seconds"), or Retry-After, or exponential backoff
with jitter; quota exhaustion, bad keys, content filtering and bad requests are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bot.errors import KimiError, KimiFatalError, KimiRetryableError

log = logging.getLogger(__name__)

_RETRY_HINT = re.compile(r"after (\d+(?:\.\d+)?) seconds?")
_RETRYABLE_TYPES = {
    "rate_limit_reached_error",
    "engine_overloaded_error",
    "server_error",
    "unexpected_output",
}

# USD per million tokens: (input cache hit, input cache miss, output). Unknown models cost 0.
PRICES_PER_MTOK: dict[str, tuple[float, float, float]] = {
    "kimi-k2.5": (0.10, 0.60, 3.00),
    "kimi-k2.6": (0.16, 0.95, 4.00),
    "kimi-k2-0905-preview": (0.15, 0.60, 2.50),
    "kimi-k2-turbo-preview": (0.15, 1.15, 8.00),
    "kimi-k2-thinking": (0.15, 0.60, 2.50),
    "kimi-k3": (0.30, 3.00, 15.00),
    "moonshot-v1-8k": (0.20, 0.20, 2.00),
    "moonshot-v1-32k": (1.00, 1.00, 3.00),
    "moonshot-v1-128k": (2.00, 2.00, 5.00),
}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call (``cached_tokens`` are the prompt tokens served from cache)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )

    def cost_microusd(self, model: str) -> int:
        hit, miss, out = PRICES_PER_MTOK.get(model, (0.0, 0.0, 0.0))
        uncached = max(self.prompt_tokens - self.cached_tokens, 0)
        return round(self.cached_tokens * hit + uncached * miss + self.completion_tokens * out)


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A function call the model asked for. ``id`` is echoed back exactly as returned."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion: the assistant message as returned, parsed for convenience."""

    message: dict[str, Any]
    finish_reason: str
    model: str
    usage: Usage
    tool_calls: tuple[ToolCallRequest, ...] = field(default_factory=tuple)

    @property
    def content(self) -> str:
        return str(self.message.get("content") or "")


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    cached = raw.get("cached_tokens")
    if cached is None:
        details = raw.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), int(cached or 0))


def _classify(response: httpx.Response) -> KimiError:
    """Turn an error response into the right exception, by Moonshot's error type first."""
    kind, message = "", response.text[:300]
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            kind = str(error.get("type") or "")
            message = str(error.get("message") or message)
    except ValueError:
        pass
    status = response.status_code
    text = f"Kimi API error {status} {kind}: {message}".strip()
    if kind == "exceeded_current_quota_error":
        return KimiFatalError(text, status=status, kind=kind)
    if status == 429 or status >= 500 or kind in _RETRYABLE_TYPES:
        retry_after: float | None = None
        hint = _RETRY_HINT.search(message)
        if hint:
            retry_after = float(hint.group(1))
        elif response.headers.get("retry-after", "").replace(".", "", 1).isdigit():
            retry_after = float(response.headers["retry-after"])
        return KimiRetryableError(text, status=status, kind=kind, retry_after=retry_after)
    return KimiFatalError(text, status=status, kind=kind)


class KimiClient:
    """Chat completions with tools against ``base_url`` (``KIMI_BASE_URL``)."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 120.0,
        max_retries: int = 4,
        max_concurrency: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._api_key = api_key
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self._max_retries = max_retries
        self._slots = asyncio.Semaphore(max_concurrency)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max

    async def aclose(self) -> None:
        await self._http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, KimiRetryableError) and error.retry_after is not None:
            return min(error.retry_after, self._backoff_max) + random.uniform(0, 0.25)
        exponential = self._backoff_base * 2 ** (state.attempt_number - 1)
        return float(min(self._backoff_max, exponential) * random.uniform(0.5, 1.0))

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        thinking: bool | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One chat completion, retried on transient failures."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if tools:
            body["tools"] = tools
            if tool_choice:
                body["tool_choice"] = tool_choice
        if thinking is not None and model.startswith("kimi-k2."):
            body["thinking"] = {"type": "enabled" if thinking else "disabled"}
        if max_tokens:
            body["max_tokens"] = max_tokens
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(KimiRetryableError),
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda s: log.warning(
                "Kimi call failed (attempt %d), retrying: %s",
                s.attempt_number,
                s.outcome.exception() if s.outcome else "",
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._post(body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, body: dict[str, Any]) -> Completion:
        """One streamed request. Streaming keeps long generations alive through gateways that
        cut idle connections, and the timeout applies between chunks, not to the whole answer."""
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        request = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with self._slots:
            try:
                async with self._http.stream("POST", "chat/completions", json=request, headers=headers) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _classify(response)
                    return await _read_stream(response, str(body["model"]))
            except httpx.TimeoutException:
                raise KimiRetryableError("Kimi API timed out", kind="timeout") from None
            except httpx.TransportError as exc:
                raise KimiRetryableError(f"Kimi API unreachable: {type(exc).__name__}", kind="network") from None


async def _read_stream(response: httpx.Response, model: str) -> Completion:
    """Assemble a completion from server-sent events. Usage may sit on the finish chunk's
    choice or in a last ``choices: []`` chunk; only ``data: [DONE]`` marks a complete answer."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason, usage, done = "", Usage(), False
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise KimiRetryableError("Kimi API sent a malformed stream", kind="malformed") from None
        if not isinstance(chunk, dict):
            raise KimiRetryableError("Kimi API sent a malformed stream", kind="malformed")
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            raise KimiRetryableError(
                f"Kimi API error in stream: {error.get('message', '')}", kind=str(error.get("type", ""))
            )
        model = str(chunk.get("model") or model)
        if chunk.get("usage"):
            usage = _parse_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if choice.get("usage"):
                usage = _parse_usage(choice["usage"])
            finish_reason = str(choice.get("finish_reason") or finish_reason)
            delta = choice.get("delta") or {}
            content.append(str(delta.get("content") or ""))
            reasoning.append(str(delta.get("reasoning_content") or ""))
            for fragment in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    int(fragment.get("index", 0)), {"id": "", "type": "function", "name": "", "arguments": ""}
                )
                call["id"] = fragment.get("id") or call["id"]
                call["type"] = fragment.get("type") or call["type"]
                function = fragment.get("function") or {}
                call["name"] = function.get("name") or call["name"]
                call["arguments"] += function.get("arguments") or ""
    if not done:
        raise KimiRetryableError("Kimi API stream ended before [DONE]", kind="incomplete")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    ordered = [calls[index] for index in sorted(calls)]
    if ordered:
        message["tool_calls"] = [
            {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in ordered
        ]
    return Completion(
        message=message,
        finish_reason=finish_reason,
        model=model,
        usage=usage,
        tool_calls=tuple(ToolCallRequest(c["id"], c["name"], c["arguments"]) for c in ordered),
    )
