"""Kimi's wire rules, as ``/work/shared/reference/kimi-api.md`` describes them: the model
catalog, the token estimate, the automatic prefix cache, and the validation of a chat request
(with the exact 400 texts where they are known).

Error texts marked *invented* are not documented anywhere; they are only guaranteed to be a 400
``invalid_request_error`` whose message contains the offending value.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, TypeAlias

from PIL import Image

__all__ = [
    "AK_ID",
    "CACHE_BLOCK_TOKENS",
    "KIMI_MODELS",
    "ORG_ID",
    "ApiError",
    "ModelSpec",
    "PrefixCache",
    "canonical_json",
    "estimate_tokens",
    "prompt_bytes",
    "text_of",
    "validate",
]

JSON: TypeAlias = dict[str, Any]

#: Organisation and access-key ids in the 429 messages (formats from the reference §3).
ORG_ID = "org-e664b178c0f74d818f6b62f87efa49f7"
AK_ID = "ak-f3t8pfk16fki11gzh6i1"

TOGGLE = "toggle"  # kimi-k2.5 / kimi-k2.6: fixed sampling, thinking on by default, switchable
THINKING = "thinking"  # kimi-k2-thinking*: always thinks
K2 = "k2"
V1 = "v1"

CACHE_BLOCK_TOKENS = 256
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the catalog. ``scripted`` models answer with the eval's scripted models
    (:mod:`bot.evaluation.simulator.scripted`) instead of the default echoing brain."""

    id: str
    context_length: int
    family: str
    default_max_tokens: int
    supports_image_in: bool = False
    supports_video_in: bool = False
    auto_cache: bool = True
    scripted: bool = False

    @property
    def supports_reasoning(self) -> bool:
        return self.family in (TOGGLE, THINKING)

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "model",
            "created": 1700000000,
            "owned_by": "supportbot-eval" if self.scripted else "moonshot",
            "context_length": self.context_length,
            "supports_image_in": self.supports_image_in,
            "supports_video_in": self.supports_video_in,
            "supports_reasoning": self.supports_reasoning,
        }


KIMI_MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec("kimi-k2.5", 262144, TOGGLE, 32768, True, True),
        ModelSpec("kimi-k2.6", 262144, TOGGLE, 32768, True, True),
        ModelSpec("kimi-k2-0905-preview", 262144, K2, 1024),
        ModelSpec("kimi-k2-0711-preview", 131072, K2, 1024),
        ModelSpec("kimi-k2-turbo-preview", 262144, K2, 1024),
        ModelSpec("kimi-k2-thinking", 262144, THINKING, 64000),
        ModelSpec("kimi-k2-thinking-turbo", 262144, THINKING, 64000),
        ModelSpec("kimi-latest", 131072, K2, 1024, True),
        ModelSpec("moonshot-v1-8k", 8192, V1, 1024, auto_cache=False),
        ModelSpec("moonshot-v1-32k", 32768, V1, 1024, auto_cache=False),
        ModelSpec("moonshot-v1-128k", 131072, V1, 1024, auto_cache=False),
    ]
}


class ApiError(Exception):
    """An error answer: ``{"error": {"message": ..., "type": ...}}`` with this status."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def canonical_json(value: Any) -> bytes:
    """Deterministic serialisation used for token estimates and prefix caching."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def estimate_tokens(data: bytes | str) -> int:
    """The simulator's tokenizer: one token per four UTF-8 bytes, at least one."""
    raw = data.encode() if isinstance(data, str) else data
    return max(1, len(raw) // 4)


def prompt_bytes(messages: Any, tools: Any) -> bytes:
    """The prompt as priced and cached. Tools first, then messages: Kimi's chat template renders
    the tool declarations before the conversation, so a stable tool list is part of the
    cacheable prefix and reordering it busts it."""
    return canonical_json(tools or []) + b"\n" + canonical_json(_images_by_resolution(messages))


def _images_by_resolution(messages: Any) -> Any:
    """``messages`` with each base64 image replaced by a stand-in of as many tokens as K2.5 reads
    it (reference §9: by resolution, not bytes; one token per 28×28 px, 14-px patches merged 2×2)."""
    if not isinstance(messages, list):
        return messages
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = [_image_stand_in(part) for part in content] if isinstance(content, list) else None
        out.append(message if parts is None else {**message, "content": parts})
    return out


def _image_stand_in(part: Any) -> Any:
    image_url = part.get("image_url") if isinstance(part, dict) and part.get("type") == "image_url" else None
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str) or ";base64," not in url:
        return part
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1]))) as image:
            width, height = image.size
    except (OSError, ValueError):
        return part  # not an image Kimi could read: counted as its bytes
    tokens = math.ceil(width / 28) * math.ceil(height / 28)
    digest = hashlib.sha256(url.encode()).hexdigest()
    return {"type": "image_url", "image_url": {"url": f"image:{digest}:".ljust(4 * tokens, ".")}}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class PrefixCache:
    """Kimi's automatic prefix cache: the longest byte prefix shared with an earlier prompt of the
    same model (one longer than a block), counted in whole blocks of :data:`CACHE_BLOCK_TOKENS`.
    Each prompt is remembered as the chained digests of its whole blocks (the oldest forgotten
    past ``size``), so a request costs one pass over its own bytes however many came before."""

    def __init__(self, size: int = 1 << 18) -> None:
        self._seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._size = size

    def cached_tokens(self, model: str, prompt: bytes) -> int:
        """The cached tokens of ``prompt``, which is remembered from now on."""
        block = CACHE_BLOCK_TOKENS * 4
        digest = hashlib.sha256()
        keys, cached, hit = [], 0, True
        for start in range(0, len(prompt) - block + 1, block):
            digest.update(prompt[start : start + block])
            key = (model, digest.digest())
            hit = hit and key in self._seen
            cached += CACHE_BLOCK_TOKENS if hit else 0
            keys.append(key)
        if estimate_tokens(prompt) > CACHE_BLOCK_TOKENS:
            for key in keys:
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return cached


# --------------------------------------------------------------------------------------------------
# Validation of a chat completion request


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(spec: ModelSpec, body: JSON) -> bool:
    """Validate like the real API (raises :class:`ApiError`); returns whether thinking is on."""
    thinking = _thinking(spec, body)
    _validate_sampling(spec, body, thinking)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("Invalid request: messages must not be empty")  # invented
    _validate_messages(messages, thinking)
    names = _validate_tools(body.get("tools"))
    _validate_tool_choice(body.get("tool_choice"), names, thinking)
    return thinking


def _thinking(spec: ModelSpec, body: JSON) -> bool:
    if spec.family == THINKING:
        return True
    if spec.family != TOGGLE:
        return False
    param = body.get("thinking")
    if param is None:
        return True
    if not isinstance(param, dict) or param.get("type") not in ("enabled", "disabled"):
        raise bad(f"Invalid request: invalid thinking: {json.dumps(param)}")  # invented
    return bool(param["type"] == "enabled")


def _validate_sampling(spec: ModelSpec, body: JSON, thinking: bool) -> None:
    if spec.family == TOGGLE:
        fixed = {"temperature": 1.0 if thinking else 0.6, "top_p": 0.95, "n": 1, "presence_penalty": 0,
                 "frequency_penalty": 0}  # fmt: skip
        for name, allowed in fixed.items():
            value = body.get(name)
            if value is not None and (not _is_number(value) or float(value) != allowed):
                raise bad(f"invalid {name}: only {allowed:g} is allowed for this model")
    else:
        ranges = {"temperature": (0, 1), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}
        for name, (low, high) in ranges.items():
            value = body.get(name)
            if value is not None and (not _is_number(value) or not low <= value <= high):
                raise bad(f"Invalid request: {name} {value} is out of range [{low}, {high}]")  # invented
        n, temperature = body.get("n"), body.get("temperature")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 5):
            raise bad(f"Invalid request: n {n} is out of range [1, 5]")  # invented
        if n is not None and n > 1 and temperature is not None and temperature < 0.001:
            raise bad("Invalid request: n must be 1 when temperature is 0")  # invented
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise bad(f"Invalid request: invalid max_tokens: {max_tokens}")  # invented
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stop is not None and (
        not isinstance(stops, list)
        or len(stops) > 5
        or any(not isinstance(s, str) or len(s.encode()) > 32 for s in stops)
    ):
        raise bad("Invalid request: stop must be at most 5 strings of at most 32 bytes")  # invented


def _validate_messages(messages: list[Any], thinking: bool) -> None:
    call_ids: set[str] = set()
    responses: Counter[str] = Counter()
    for index, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad(f"Invalid request: the message at position {index} must be an object")  # invented
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool", "cache"):
            raise bad(f"Invalid request: the message at position {index} has invalid role {role!r}")
        content = msg.get("content")
        if isinstance(content, list):
            only_text = all(isinstance(p, dict) and p.get("type") == "text" for p in content)
            if content and only_text and not any(p.get("text") for p in content):
                raise bad("Invalid request: text content is empty")
        elif content is not None and not isinstance(content, str):
            raise bad(f"Invalid request: the message at position {index} has invalid content")  # invented
        empty = f"Invalid request: the message at position {index} with role '{role}' must not be empty"
        if role in ("system", "user") and not content:
            raise bad(empty)
        if role == "tool":
            tool_call_id = msg.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                raise bad(f"Invalid request: tool_call_id is required for the tool message at position {index}")
            responses[tool_call_id] += 1
        if role != "assistant":
            continue
        tool_calls = msg.get("tool_calls")
        if not tool_calls:
            if not content:
                raise bad(empty)
            continue
        if not isinstance(tool_calls, list):
            raise bad(f"Invalid request: invalid tool_calls in message at position {index}")  # invented
        if thinking and not msg.get("reasoning_content"):
            raise bad(
                f"thinking is enabled but reasoning_content is missing in assistant tool call message at index {index}"
            )
        for call in tool_calls:
            call_id = call.get("id") if isinstance(call, dict) else None
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call_id, str)
                or not call_id
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments", ""), str)
            ):
                raise bad(f"Invalid request: invalid tool call in message at position {index}")
            if call_id in call_ids:
                raise bad(f"Invalid request: tool call id {call_id} is duplicated")
            call_ids.add(call_id)
    for tool_call_id, count in responses.items():
        if tool_call_id not in call_ids:
            raise bad(f"Invalid request: tool_call_id {tool_call_id} not found")  # invented
        if count > 1:
            raise bad(f"Invalid request: tool_call_id {tool_call_id} has {count} tool messages")  # invented
    missing = sorted(call_ids - set(responses))
    if missing:
        raise bad(f"Invalid request: tool_call_id {missing[0]} has no tool message")  # invented


def _validate_tools(tools: Any) -> list[str]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad("Invalid request: tools must be a list")  # invented
    if len(tools) > 128:
        raise bad(f"Invalid request: too many tools: {len(tools)}, at most 128 are allowed")  # invented
    names: list[str] = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        function = tool.get("function") if isinstance(tool, dict) else None
        if kind != "function" or not isinstance(function, dict):
            raise bad(f"Invalid request: invalid tool: {json.dumps(tool)[:200]}")  # invented
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME_RE.match(name):
            raise bad(f"Invalid request: function name {name} is invalid")  # invented
        if name in names:
            raise bad(f"Invalid request: function name {name} is duplicated")
        parameters = function.get("parameters")
        if parameters is not None and (not isinstance(parameters, dict) or parameters.get("type") != "object"):
            raise bad(f"Invalid request: parameters of function {name} must be an object schema")  # invented
        names.append(str(name))
    return names


def _validate_tool_choice(tool_choice: Any, names: list[str], thinking: bool) -> None:
    if tool_choice is None or tool_choice in ("auto", "none"):
        return
    if tool_choice == "required":
        if thinking:
            raise bad("tool_choice 'required' is incompatible with thinking enabled")
        if not names:
            raise bad("Invalid request: tool_choice 'required' needs at least one tool")  # invented
        return
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        if thinking:
            raise bad("tool_choice 'specified' is incompatible with thinking enabled")
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise bad(f"Invalid request: tool_choice function {name} is not in tools")  # invented
        return
    raise bad(f"Invalid request: invalid tool_choice: {json.dumps(tool_choice)}")  # invented
