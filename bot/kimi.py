"""An async client for Kimi (Moonshot's OpenAI-compatible API): chat completions (streamed),
models, token estimates.

It follows the K2.5 rules: no sampling parameters are sent (K2.5 fixes temperature, top_p, n
and the penalties and rejects other values); assistant tool-call turns carry their
``reasoning_content`` back; tool-call ids are opaque and echoed as returned.

Every request waits its turn in the account's :class:`~bot.llm.limiter.AccountLimiter`
(concurrency, RPM, TPM counted as prompt estimate + ``max_tokens``, a FIFO queue), so a burst
queues instead of drawing 429s. Failures are classified into :mod:`bot.errors` by Moonshot's
``error.type`` first: a rate limit pauses the whole limiter for the wait Kimi names ("please try
again after N seconds") plus jitter and never spends the call's retry budget; overload, 5xx and
timeouts back off exponentially and count against the model's circuit breaker; quota, content
filter, context length, key and request errors are not retried. When the model's breaker is
open, the call goes to ``fallback_model`` and :attr:`Completion.model` says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from bot import metrics
from bot.domain.text import storable
from bot.errors import (
    KimiAuthError,
    KimiBadRequest,
    KimiCircuitOpen,
    KimiContentFiltered,
    KimiContextTooLong,
    KimiError,
    KimiFatalError,
    KimiModelNotFound,
    KimiQuotaExhausted,
    KimiRateLimited,
    KimiRetryableError,
    KimiServerError,
    KimiTimeout,
)
from bot.llm.breaker import Breakers
from bot.llm.catalog import ModelCatalog
from bot.llm.files import KimiFiles
from bot.llm.limiter import AccountLimiter
from bot.llm.models import ModelInfo
from bot.llm.pricing import PriceTable

log = logging.getLogger(__name__)

_RETRY_HINT = re.compile(r"after (\d+(?:\.\d+)?) seconds?")
_RATE_LIMITED_TYPES = {"rate_limit_reached_error", "engine_overloaded_error"}
_SERVER_TYPES = {"server_error", "unexpected_output"}
_AUTH_TYPES = {"invalid_authentication_error", "incorrect_api_key_error", "permission_denied_error"}
_CONTEXT_TEXTS = ("exceeded model token limit", "input token length too long")
_DEFAULT_PRICES = PriceTable()

#: Tier-1 limits are 50 concurrent, 200 RPM, 2,000,000 TPM (README); the defaults keep 10 % spare.
DEFAULT_MAX_CONCURRENCY = 45
DEFAULT_RPM = 180
DEFAULT_TPM = 1_800_000
DEFAULT_MAX_TOKENS = 16384

DeltaSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call (``cached_tokens`` are the prompt tokens served from cache).
    ``cost`` is the price in micro-USD when the client priced it from its configured table."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: int | None = None

    def _priced(self) -> int | None:
        if self.cost is not None:
            return self.cost
        return 0 if not (self.prompt_tokens or self.completion_tokens) else None

    def __add__(self, other: Usage) -> Usage:
        a, b = self._priced(), other._priced()
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            None if a is None or b is None else a + b,
        )

    def cost_microusd(self, model: str) -> int:
        """The configured price when the client priced the call; otherwise the default table's
        price of ``model`` (which never charges nothing)."""
        if self.cost is not None:
            return self.cost
        return _DEFAULT_PRICES.microusd(
            model,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            completion_tokens=self.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A function call the model asked for. ``id`` is echoed back exactly as returned."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion: the assistant message as returned, parsed for convenience.
    ``model`` is the model that wrote it; ``fallback`` is true when the primary was skipped."""

    message: dict[str, Any]
    finish_reason: str
    model: str
    usage: Usage
    tool_calls: tuple[ToolCallRequest, ...] = field(default_factory=tuple)
    fallback: bool = False

    @property
    def content(self) -> str:
        """The answer's text, :func:`~bot.domain.text.storable` (the message itself is kept as
        returned: it is echoed back to Kimi)."""
        return storable(str(self.message.get("content") or ""))


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    cached = raw.get("cached_tokens")
    if cached is None:
        details = raw.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), int(cached or 0))


#: What one image part charges TPM in the local estimate, never its bytes: the core sends no image
#: larger than 1568 px a side (:mod:`bot.core.images`), which K2.5 reads as at most
#: (1568 / 28)² = 3,136 tokens (14-px patches merged 2×2); moonshot-v1 vision charges a fixed 1,024.
IMAGE_PART_TOKENS = 4096


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """A local, deliberately high estimate: one token per three UTF-8 bytes of the JSON (English
    runs about four bytes a token, Chinese about three), used to charge TPM before the call; each
    image part counts :data:`IMAGE_PART_TOKENS` (its base64 would count a megabyte photo as
    hundreds of thousands of tokens, above any minute's limit, and stall every other customer)."""
    images = 0
    texts: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            kept = [part for part in content if not (isinstance(part, dict) and part.get("type") == "image_url")]
            images += len(content) - len(kept)
            texts.append({**message, "content": kept})
        else:
            texts.append(message)
    raw = json.dumps([tools or [], texts], ensure_ascii=False).encode()
    return len(raw) // 3 + 1 + images * IMAGE_PART_TOKENS


def classify(status: int, body_text: str, retry_after_header: str = "") -> KimiError:
    """Turn an error response into the right :mod:`bot.errors` class, by ``error.type`` first
    (Moonshot sends quota exhaustion as 429 and as 403)."""
    kind, message = _error_of(body_text)
    text = f"Kimi API error {status} {kind}: {message}".strip()
    lowered = message.lower()
    if kind == "exceeded_current_quota_error":
        return KimiQuotaExhausted(text, status=status, kind=kind)
    if kind == "content_filter":
        return KimiContentFiltered(text, status=status, kind=kind)
    if kind in _RATE_LIMITED_TYPES or (status == 429 and not kind):
        retry_after = _retry_after(message, retry_after_header)
        return KimiRateLimited(text, status=status, kind=kind or "rate_limit_reached_error", retry_after=retry_after)
    if status >= 500 or kind in _SERVER_TYPES:
        return KimiServerError(text, status=status, kind=kind)
    if status in (401, 403) or kind in _AUTH_TYPES:
        return KimiAuthError(text, status=status, kind=kind)
    if status == 404 or kind == "resource_not_found_error":
        return KimiModelNotFound(text, status=status, kind=kind)
    if any(t in lowered for t in _CONTEXT_TEXTS):
        return KimiContextTooLong(text, status=status, kind=kind)
    if status == 429:
        return KimiRateLimited(text, status=status, kind=kind)
    return KimiBadRequest(text, status=status, kind=kind)


def _error_of(body_text: str) -> tuple[str, str]:
    """The error body's ``(type, message)`` (the message defaults to the body's start)."""
    kind, message = "", body_text[:300]
    try:
        body = json.loads(body_text)
    except ValueError:
        return kind, message
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = str(error.get("type") or "")
        message = str(error.get("message") or message)
    return kind, message


def _retry_after(message: str, header: str) -> float | None:
    """How long Kimi asks to wait: a hint in the message first, else the Retry-After header."""
    hint = _RETRY_HINT.search(message)
    if hint:
        return float(hint.group(1))
    return float(header) if header.replace(".", "", 1).isdigit() else None


def _classify(response: httpx.Response) -> KimiError:
    return classify(response.status_code, response.text, response.headers.get("retry-after", ""))


@dataclass(slots=True)
class _Tries:
    """One call's failed attempts so far: retryable failures, overloads, seconds waited."""

    failures: int = 0
    overloads: int = 0
    waited: float = 0.0


class KimiTransport:
    """The HTTP side of the Kimi API: the key in every request, network failures and non-200
    answers turned into :mod:`bot.errors`."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, headers=self._headers, **kwargs)
        except httpx.TimeoutException:
            raise KimiTimeout("Kimi API timed out", kind="timeout") from None
        except httpx.TransportError as exc:
            raise KimiTimeout(f"Kimi API unreachable: {type(exc).__name__}", kind="network") from None
        if response.status_code != 200:
            raise _classify(response)
        return response

    async def stream_chat(self, body: dict[str, Any], on_delta: DeltaSink | None) -> Completion:
        """One streamed request. Streaming keeps long generations alive through gateways that
        cut idle connections, and the timeout applies between chunks, not to the whole answer."""
        request = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self._http.stream("POST", "chat/completions", json=request, headers=self._headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _classify(response)
                return await _read_stream(response, str(body["model"]), on_delta)
        except httpx.TimeoutException:
            raise KimiTimeout("Kimi API timed out", kind="timeout") from None
        except httpx.TransportError as exc:
            raise KimiTimeout(f"Kimi API unreachable: {type(exc).__name__}", kind="network") from None


class KimiClient:
    """Chat completions with tools against ``base_url`` (``KIMI_BASE_URL``), one limiter for the
    account, a circuit breaker per model, prices from a table."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 120.0,
        max_retries: int = 4,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rpm: int = DEFAULT_RPM,
        tpm: int = DEFAULT_TPM,
        limiter: AccountLimiter | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        rate_limit_jitter: float = 0.5,
        rate_limit_max_wait: float = 600.0,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        fallback_model: str | None = None,
        breakers: Breakers | None = None,
        prices: PriceTable | None = None,
        models_ttl: float = 86400.0,
        exact_token_counts: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = KimiTransport(base_url, api_key, timeout=timeout, transport=transport)
        self.limiter = limiter or AccountLimiter(max_concurrency=max_concurrency, rpm=rpm, tpm=tpm)
        self.breakers = breakers or Breakers()
        self.prices = prices or PriceTable()
        self.fallback_model = fallback_model or None
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._jitter = rate_limit_jitter
        self._rate_limit_max_wait = rate_limit_max_wait
        self._default_max_tokens = default_max_tokens
        self._exact = exact_token_counts
        self.models = ModelCatalog(self._http.request, self._http.base_url, self.prices, models_ttl)
        self.files = KimiFiles(self._http.request)
        self.rate_limited = 0  # 429 rate-limit answers seen (each one a limit we did not know)
        self.quota_exhausted_at: float | None = None  # time.time() of the last quota error; None once a call succeeds

    async def aclose(self) -> None:
        await self._http.aclose()

    def metrics(self) -> dict[str, float]:
        """Figures for ``/metrics``: the account queue, 429s seen, breakers open (1 per model)."""
        figures: dict[str, float] = {
            "kimi_queue_waiting": self.limiter.queued,
            "kimi_in_flight": self.limiter.in_flight,
            "kimi_rate_limited_total": self.rate_limited,
            "kimi_rate_limit_pauses_total": self.limiter.stats.pauses,
            "kimi_queue_wait_p99_seconds": self.limiter.stats.percentile(99),
        }
        for model, state in self.breakers.states().items():
            figures[f'kimi_breaker_open{{model="{model}"}}'] = 0.0 if state == "closed" else 1.0
        return figures

    # The catalog's and the files API's calls, under the names callers know.

    async def list_models(self, *, refresh: bool = False) -> dict[str, ModelInfo]:
        return await self.models.fetch(refresh=refresh)

    async def check_startup(self, configured: dict[str, str]) -> dict[str, ModelInfo]:
        return await self.models.check_startup(configured)

    async def supports_images(self, model: str) -> bool:
        return await self.models.supports_images(model)

    async def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        return await self.models.count_tokens(model, messages)

    async def upload_file(self, filename: str, data: bytes, *, purpose: str = "file-extract") -> dict[str, Any]:
        return await self.files.upload(filename, data, purpose=purpose)

    async def file_text(self, file_id: str) -> str:
        return await self.files.text(file_id)

    async def delete_file(self, file_id: str) -> None:
        await self.files.delete(file_id)

    async def list_files(self) -> list[dict[str, Any]]:
        return await self.files.uploaded()

    # ------------------------------------------------------------------ chat

    def _backoff(self, attempt: int) -> float:
        exponential = self._backoff_base * 2 ** (attempt - 1)
        return float(min(self._backoff_max, exponential) * random.uniform(0.5, 1.0))

    def _pick(self, model: str) -> str:
        if self.breakers[model].allow():
            return model
        fallback = self.fallback_model
        if fallback and fallback != model and self.breakers[fallback].allow():
            return fallback
        raise KimiCircuitOpen(
            f"Kimi model {model} is failing and skipped for a cool-down"
            + (f"; the fallback {fallback} is failing too" if fallback and fallback != model else ""),
            kind="circuit_open",
            retry_after=self.breakers[model].retry_after(),
        )

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        thinking: bool | None = None,
        max_tokens: int | None = None,
        on_delta: DeltaSink | None = None,
        tenant: str = "",
    ) -> Completion:
        """One chat completion. ``on_delta(text_so_far)`` hears the answer's content as it streams
        (after a retry it starts again from the beginning, so show the latest text). ``tenant``
        (the customer it is for) is its place in the limiter's round-robin."""
        max_tokens = max_tokens or self._default_max_tokens
        charge = await self._prompt_charge(model, messages, tools) + max_tokens
        tries = _Tries()
        while True:
            use = self._pick(model)
            body: dict[str, Any] = {"model": use, "messages": messages, "max_tokens": max_tokens}
            if tools:
                body["tools"] = tools
                if tool_choice:
                    body["tool_choice"] = tool_choice
            if thinking is not None and use.startswith("kimi-k2."):
                body["thinking"] = {"type": "enabled" if thinking else "disabled"}
            started = time.perf_counter()
            try:
                async with self.limiter.slot(charge, tenant=tenant):
                    started = time.perf_counter()  # the latency is Kimi's, not the queue's
                    completion = await self._http.stream_chat(body, on_delta)
            except KimiError as exc:
                metrics.kimi_error(use, exc.kind or type(exc).__name__)
                await self._after(exc, use, tries)
            else:
                return self._answered(completion, use, model, started)
            finally:
                self.breakers[use].no_verdict()  # a trial that ended without a verdict frees the next

    async def _after(self, exc: KimiError, use: str, tries: _Tries) -> None:
        """Wait before the next try of a failed call, or raise ``exc`` when there is none."""
        if isinstance(exc, KimiFatalError):
            self.breakers[use].success()  # the model answered: the request or the account is at fault
            if isinstance(exc, KimiQuotaExhausted):
                self.quota_exhausted_at = time.time()
            raise exc
        if isinstance(exc, KimiRateLimited):
            await self._rate_limited(exc, use, tries)
            return
        if not isinstance(exc, KimiRetryableError):
            raise exc
        self.breakers[use].failure()
        tries.failures += 1
        if tries.failures > self._max_retries:
            raise exc
        log.warning("Kimi call failed (attempt %d), retrying: %s", tries.failures, exc)
        await asyncio.sleep(self._backoff(tries.failures))

    async def _rate_limited(self, exc: KimiRateLimited, use: str, tries: _Tries) -> None:
        """Kimi said wait: an overloaded model backs off (and counts against its breaker), a rate
        limit pauses the account's queue; past ``rate_limit_max_wait`` in all, ``exc`` is raised."""
        if exc.overloaded:
            tries.overloads += 1
            self.breakers[use].failure()
            wait = exc.retry_after if exc.retry_after is not None else self._backoff(tries.overloads)
        else:
            self.rate_limited += 1
            wait = exc.retry_after if exc.retry_after is not None else 2.0
        wait += random.uniform(0, self._jitter)
        if tries.waited + wait > self._rate_limit_max_wait:
            raise exc
        tries.waited += wait
        log.warning("Kimi said wait (%s); the account's queue pauses %.1f s", exc.kind, wait)
        if exc.overloaded:
            await asyncio.sleep(wait)
        else:
            self.limiter.pause(wait)

    def _answered(self, completion: Completion, use: str, model: str, started: float) -> Completion:
        self.quota_exhausted_at = None
        self.breakers[use].success()
        usage = completion.usage
        metrics.kimi_call(
            completion.model or use,
            time.perf_counter() - started,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        )
        return self._priced(completion, fallback=use != model)

    async def _prompt_charge(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> int:
        """The prompt tokens a request charges against TPM: Kimi's own count when
        ``exact_token_counts`` is on (the tools, which the endpoint may not count, estimated
        locally on top), else the local estimate. A failed count falls back to the estimate."""
        if not self._exact:
            return estimate_prompt_tokens(messages, tools)
        try:
            exact = await self.count_tokens(model, messages)
        except (KimiError, KeyError, TypeError, ValueError) as exc:
            log.warning("Kimi's token count failed (%s); using the local estimate", exc)
            return estimate_prompt_tokens(messages, tools)
        return exact + (estimate_prompt_tokens([], tools) if tools else 0)

    def _priced(self, completion: Completion, *, fallback: bool) -> Completion:
        usage = completion.usage
        cost = self.prices.microusd(
            completion.model,
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens,
        )
        searches = sum(1 for call in completion.tool_calls if call.name == "$web_search")
        cost += searches * self.prices.web_search_fee_microusd
        return Completion(
            message=completion.message,
            finish_reason=completion.finish_reason,
            model=completion.model,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, cost),
            tool_calls=completion.tool_calls,
            fallback=fallback,
        )


async def _read_stream(response: httpx.Response, model: str, on_delta: DeltaSink | None = None) -> Completion:
    """Assemble a completion from server-sent events. Usage may sit on the finish chunk's
    choice or in a last ``choices: []`` chunk; only ``data: [DONE]`` marks a complete answer."""
    stream = _Stream(model, on_delta)
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return stream.completion()
        stream.add(_chunk(payload))
    raise KimiServerError("Kimi API stream ended before [DONE]", kind="incomplete")


def _chunk(payload: str) -> dict[str, Any]:
    """One event's JSON; an in-stream error raised as the error it is (unknown ones as a 5xx)."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise KimiServerError("Kimi API sent a malformed stream", kind="malformed") from None
    if not isinstance(chunk, dict):
        raise KimiServerError("Kimi API sent a malformed stream", kind="malformed")
    if isinstance(chunk.get("error"), dict):
        raise classify(500, json.dumps({"error": chunk["error"]}))
    return chunk


class _Stream:
    """A streamed answer as it arrives: content, reasoning, tool calls (by index), usage."""

    def __init__(self, model: str, on_delta: DeltaSink | None) -> None:
        self.model = model
        self.on_delta = on_delta
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason = ""
        self.usage = Usage()

    def add(self, chunk: dict[str, Any]) -> None:
        self.model = str(chunk.get("model") or self.model)
        if chunk.get("usage"):
            self.usage = _parse_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        if choice.get("usage"):
            self.usage = _parse_usage(choice["usage"])
        self.finish_reason = str(choice.get("finish_reason") or self.finish_reason)
        delta = choice.get("delta") or {}
        piece = str(delta.get("content") or "")
        self.content.append(piece)
        if piece and self.on_delta is not None:
            self.on_delta("".join(self.content))
        self.reasoning.append(str(delta.get("reasoning_content") or ""))
        for fragment in delta.get("tool_calls") or []:
            self._tool_call(fragment)

    def _tool_call(self, fragment: dict[str, Any]) -> None:
        call = self.calls.setdefault(
            int(fragment.get("index", 0)), {"id": "", "type": "function", "name": "", "arguments": ""}
        )
        call["id"] = fragment.get("id") or call["id"]
        call["type"] = fragment.get("type") or call["type"]
        function = fragment.get("function") or {}
        call["name"] = function.get("name") or call["name"]
        call["arguments"] += function.get("arguments") or ""

    def completion(self) -> Completion:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if any(self.reasoning):
            message["reasoning_content"] = "".join(self.reasoning)
        ordered = [self.calls[index] for index in sorted(self.calls)]
        if ordered:
            message["tool_calls"] = [
                {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in ordered
            ]
        return Completion(
            message=message,
            finish_reason=self.finish_reason,
            model=self.model,
            usage=self.usage,
            tool_calls=tuple(ToolCallRequest(c["id"], c["name"], c["arguments"]) for c in ordered),
        )
