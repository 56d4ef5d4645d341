"""A protocol-faithful fake of Moonshot's Kimi Open Platform API, served over loopback HTTP.

The fake speaks the wire format described in ``/work/shared/reference/kimi-api.md``: the
OpenAI-compatible ``/v1/chat/completions`` endpoint (JSON and SSE), ``/v1/models``,
``/v1/tokenizers/estimate-token-count``, ``/v1/users/me/balance`` and the files API (upload with
``purpose=file-extract``, list, get, content, delete).  It validates requests the way
the real API does (exact 400 texts for K2.5 fixed sampling, missing ``reasoning_content`` and so on)
and answers with a deterministic "brain" unless a test scripts the next answers.

Usage::

    async with FakeKimi(api_key="sk-test") as kimi:
        kimi.script(Reply("Hello!"), Fail.rate_limited(after=1))
        ...  # point the bot at kimi.base_url
        assert kimi.completions[0]["model"] == "kimi-k2.5"

Error texts marked *invented* below are not documented anywhere; they are only guaranteed to be a
400 ``invalid_request_error`` whose message contains the offending value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import math
import re
import secrets
import string
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiohttp import typedefs as web_typedefs
from aiohttp import web
from PIL import Image

__all__ = [
    "AK_ID",
    "MODELS",
    "ORDER_ID_RE",
    "ORG_ID",
    "CallTools",
    "Fail",
    "FakeKimi",
    "Hang",
    "Malformed",
    "ModelSpec",
    "RecordedRequest",
    "Reply",
    "Step",
    "canonical_json",
    "estimate_tokens",
    "find_order_id",
]

JSON: TypeAlias = dict[str, Any]

#: Organisation and access-key ids used in the fake's 429 messages (formats from the reference §3).
ORG_ID = "org-e664b178c0f74d818f6b62f87efa49f7"
AK_ID = "ak-f3t8pfk16fki11gzh6i1"

#: Opaque order ids the default brain recognises, e.g. ``#W2611340``, ``40021``, ``ORD-77``.
ORDER_ID_RE = re.compile(r"(?<![\w#-])(#?[A-Z]{1,5}-?\d{2,}|#?\d{4,})(?![\w-])")
_SLACK_MARKUP_RE = re.compile(r"<[@#!][^>]*>|<https?://[^>]*>")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")
_ALNUM = string.ascii_letters + string.digits

_FAMILY_TOGGLE = "toggle"  # kimi-k2.5 / kimi-k2.6: fixed sampling, thinking on by default, switchable
_FAMILY_THINKING = "thinking"  # kimi-k2-thinking*: always thinks
_FAMILY_K2 = "k2"
_FAMILY_V1 = "v1"

CACHE_BLOCK_TOKENS = 256


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the fake's model catalog."""

    id: str
    context_length: int
    family: str
    default_max_tokens: int
    supports_image_in: bool = False
    supports_video_in: bool = False
    auto_cache: bool = True

    @property
    def supports_reasoning(self) -> bool:
        return self.family in (_FAMILY_TOGGLE, _FAMILY_THINKING)

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "model",
            "created": 1700000000,
            "owned_by": "moonshot",
            "context_length": self.context_length,
            "supports_image_in": self.supports_image_in,
            "supports_video_in": self.supports_video_in,
            "supports_reasoning": self.supports_reasoning,
        }


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec("kimi-k2.5", 262144, _FAMILY_TOGGLE, 32768, True, True),
        ModelSpec("kimi-k2.6", 262144, _FAMILY_TOGGLE, 32768, True, True),
        ModelSpec("kimi-k2-0905-preview", 262144, _FAMILY_K2, 1024),
        ModelSpec("kimi-k2-0711-preview", 131072, _FAMILY_K2, 1024),
        ModelSpec("kimi-k2-turbo-preview", 262144, _FAMILY_K2, 1024),
        ModelSpec("kimi-k2-thinking", 262144, _FAMILY_THINKING, 64000),
        ModelSpec("kimi-k2-thinking-turbo", 262144, _FAMILY_THINKING, 64000),
        ModelSpec("kimi-latest", 131072, _FAMILY_K2, 1024, True),
        ModelSpec("moonshot-v1-8k", 8192, _FAMILY_V1, 1024, auto_cache=False),
        ModelSpec("moonshot-v1-32k", 32768, _FAMILY_V1, 1024, auto_cache=False),
        ModelSpec("moonshot-v1-128k", 131072, _FAMILY_V1, 1024, auto_cache=False),
    ]
}


# --------------------------------------------------------------------------------------------------
# Script steps
# --------------------------------------------------------------------------------------------------


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
class RecordedRequest:
    """One HTTP request received by :class:`FakeKimi`."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    status: int | None = None
    response: Any = None


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

_REQUEST_ID = web.RequestKey("request_id", str)
_RECORD = web.RequestKey("record", RecordedRequest)


class _ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}


def _bad(message: str) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message)


def canonical_json(value: Any) -> bytes:
    """Deterministic serialisation used for token estimates and prefix caching."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def estimate_tokens(data: bytes | str) -> int:
    """The fake's tokenizer: one token per four UTF-8 bytes, at least one."""
    raw = data.encode() if isinstance(data, str) else data
    return max(1, len(raw) // 4)


def _prompt_bytes(messages: Any, tools: Any) -> bytes:
    # Tools first, then messages: Kimi's chat template renders the tool declarations before the
    # conversation, so a stable tool list is part of the cacheable prefix and reordering it busts it.
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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _random_id(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _pieces(text: str, words: int = 3) -> list[str]:
    """Split text into small streaming fragments that concatenate back to ``text``."""
    tokens = re.findall(r"\s*\S+\s*|\s+", text)
    out = ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return out or ([text] if text else [])


def find_order_id(text: str) -> str | None:
    """The first order-id-looking token of ``text`` (Slack markup such as ``<@U123>`` is ignored)."""
    match = ORDER_ID_RE.search(_SLACK_MARKUP_RE.sub(" ", text))
    return match.group(1) if match else None


@dataclass
class _Output:
    content: str
    reasoning: str | None
    tool_calls: list[JSON] | None
    finish_reason: str


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class FakeKimi:
    """Fake Kimi (Moonshot) API on ``http://127.0.0.1:<port>/v1``; an async context manager.

    Attributes tests can read or set:

    * ``base_url`` – ``"http://127.0.0.1:PORT/v1"`` (set on enter).
    * ``requests`` – every :class:`RecordedRequest`, any path, in arrival order.
    * ``completions`` – bodies of the chat-completion requests answered with 200.
    * ``latency`` – seconds slept before every chat completion answer.
    * ``chunk_delay`` – seconds slept between SSE events when streaming.
    * ``max_concurrency`` – when set, a completion arriving while this many are in flight gets the
      real 429 concurrency error.
    * ``rpm`` / ``tpm`` – when set, the account's requests and tokens per ``limit_window`` seconds
      (a sliding window, 60 s by default): a completion past either gets the real 429
      ``rate_limit_reached_error`` (RPM with "please try again after N seconds", TPM with
      ``current:..., limit:...``). TPM is pre-charged with prompt tokens + ``max_tokens`` (or the
      model's default), as Moonshot does.
    * ``rate_limited`` – how many 429 ``rate_limit_reached_error`` the account limits caused.
    * ``in_flight`` / ``max_in_flight`` – current and peak number of concurrent completions.
    * ``balance`` – the ``data`` of ``GET /v1/users/me/balance``.
    """

    def __init__(self, api_key: str = "sk-test", *, models: list[str] | None = None) -> None:
        self.api_key = api_key
        self.models: dict[str, ModelSpec] = {
            mid: MODELS[mid] for mid in (models if models is not None else list(MODELS))
        }
        self.requests: list[RecordedRequest] = []
        self.completions: list[JSON] = []
        self.latency: float = 0.0
        self.chunk_delay: float = 0.0
        self.max_concurrency: int | None = None
        self.rpm: int | None = None
        self.tpm: int | None = None
        self.limit_window: float = 60.0
        self.rate_limited = 0
        self._starts: list[float] = []
        self._charges: list[tuple[float, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.balance: JSON = {
            "available_balance": 49.58894,
            "voucher_balance": 46.58893,
            "cash_balance": 3.00001,
        }
        self.system_fingerprint = "fpv0_" + secrets.token_hex(4)
        self._script: list[Step] = []
        self._always: Fail | None = None
        self._failing_models: dict[str, Fail] = {}
        self.files: dict[str, JSON] = {}  # file id -> FileObject
        self.file_bytes: dict[str, bytes] = {}
        self.max_files = 1000
        self._prompt_cache: dict[str, list[bytes]] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeKimi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start serving."""
        app = web.Application(middlewares=[self._middleware], client_max_size=100 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/tokenizers/estimate-token-count", self._estimate)
        app.router.add_get("/v1/users/me/balance", self._balance)
        app.router.add_post("/v1/files", self._file_upload)
        app.router.add_get("/v1/files", self._file_list)
        app.router.add_get("/v1/files/{file_id}", self._file_get)
        app.router.add_delete("/v1/files/{file_id}", self._file_delete)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        """Wake any hanging handlers and stop the server."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ scripting API

    def script(self, *steps: Step) -> None:
        """Queue answers for the next chat completions (FIFO; takes priority over the brain)."""
        self._script.extend(steps)

    @property
    def pending(self) -> list[Step]:
        """Script steps not consumed yet."""
        return list(self._script)

    def fail_always(self, status: int, type: str, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer every chat completion with this error until :meth:`recover` ("Kimi is down")."""
        self._always = Fail(status, type, message, headers)

    def recover(self) -> None:
        """Undo :meth:`fail_always` and :meth:`fail_model`."""
        self._always = None
        self._failing_models.clear()

    def fail_model(self, model_id: str, failure: Fail) -> None:
        """Answer every chat completion for ``model_id`` with ``failure`` until :meth:`recover`
        (one model unwell while the others answer)."""
        self._failing_models[model_id] = failure

    def retire(self, model_id: str) -> None:
        """Remove a model from the catalog, so requests for it get the real 404."""
        self.models.pop(model_id, None)

    def prompt_tokens_for(self, messages: list[JSON], tools: list[JSON] | None = None) -> int:
        """The ``prompt_tokens`` the fake would report for this prompt."""
        return estimate_tokens(_prompt_bytes(messages, tools))

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: web_typedefs.Handler) -> web.StreamResponse:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        request[_REQUEST_ID] = request_id
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(request.method, request.path, dict(request.headers), raw, body)
        request[_RECORD] = record
        self.requests.append(record)
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = self._json(
                404,
                {
                    "code": 5,
                    "error": "url.not_found",
                    "message": "没找到对象",
                    "method": request.method,
                    "scode": "0x5",
                    "status": False,
                    "ua": request.headers.get("User-Agent", ""),
                    "url": request.path,
                },
            )
        except web.HTTPMethodNotAllowed:
            response = self._error(_ApiError(405, "invalid_request_error", "Method Not Allowed"))
        except _ApiError as exc:
            response = self._error(exc)
        if not response.prepared:
            response.headers["Msh-Request-Id"] = request_id
            response.headers["Server-Timing"] = f"inner; dur={int((time.monotonic() - started) * 1000)}"
        record.status = response.status
        if isinstance(response, web.Response) and response.body is not None:
            try:
                record.response = json.loads(response.body)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                record.response = response.text
        return response

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(payload, ensure_ascii=False).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    def _error(self, exc: _ApiError) -> web.Response:
        payload = {"error": {"message": exc.message, "type": exc.type}}
        return self._json(exc.status, payload, exc.headers or None)

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            raise _ApiError(401, "invalid_authentication_error", "Invalid Authentication")

    def _spec(self, model: Any) -> ModelSpec:
        if not isinstance(model, str) or not model:
            raise _bad("Invalid request: model is required")  # invented
        spec = self.models.get(model)
        if spec is None:
            raise _ApiError(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
        return spec

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    # ------------------------------------------------------------------ simple endpoints

    async def _models(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(200, {"object": "list", "data": [m.as_json() for m in self.models.values()]})

    async def _model(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(200, self._spec(request.match_info["model_id"]).as_json())

    async def _balance(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(200, {"code": 0, "data": dict(self.balance), "scode": "0x0", "status": True})

    async def _estimate(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        body = request[_RECORD].body
        if not isinstance(body, dict):
            raise _bad("Invalid request: request body must be a JSON object")  # invented
        self._spec(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("Invalid request: messages must not be empty")  # invented
        total = estimate_tokens(_prompt_bytes(messages, body.get("tools")))
        return self._json(200, {"data": {"total_tokens": total}})

    # ------------------------------------------------------------------ files (purpose=file-extract)

    def _file(self, request: web.Request) -> JSON:
        self._check_auth(request)
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            raise _ApiError(404, "resource_not_found_error", f"file {request.match_info['file_id']} not found")
        return found

    async def _file_upload(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        raw = request[_RECORD].raw
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise _bad("Invalid request: multipart/form-data expected")  # invented
        fields: dict[str, tuple[str, bytes]] = {}
        boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
        for part in raw.split(b"--" + boundary):
            head, sep, body = part.partition(b"\r\n\r\n")
            if not sep:
                continue
            disposition = re.search(rb'name="([^"]+)"(?:; filename="([^"]*)")?', head)
            if disposition:
                filename = (disposition.group(2) or b"").decode()
                fields[disposition.group(1).decode()] = (filename, body.removesuffix(b"\r\n"))
        purpose = fields.get("purpose", ("", b""))[1].decode()
        if purpose != "file-extract":
            raise _bad("Invalid purpose: only 'file-extract' accepted")
        if "file" not in fields:
            raise _bad("Invalid request: file is required")  # invented
        filename, data = fields["file"]
        if not data:
            raise _bad("File size is zero, please confirm and re-upload the file")
        if len(data) > 100 * 1024 * 1024:
            raise _bad("File size is too large, max file size is 100MB, please confirm and re-upload the file")
        if len(self.files) >= self.max_files:
            raise _bad(
                f"The number of files you have uploaded exceeded the max file count {self.max_files}, "
                "please delete previous uploaded files"
            )
        file_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(20))
        obj: JSON = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "ok",
            "status_details": "",
        }
        self.files[file_id] = obj
        self.file_bytes[file_id] = data
        return self._json(200, obj)

    async def _file_list(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(200, {"object": "list", "data": list(self.files.values())})

    async def _file_get(self, request: web.Request) -> web.Response:
        return self._json(200, self._file(request))

    async def _file_delete(self, request: web.Request) -> web.Response:
        obj = self._file(request)
        del self.files[obj["id"]]
        self.file_bytes.pop(obj["id"], None)
        return self._json(200, {"id": obj["id"], "object": "file", "deleted": True})

    async def _file_content(self, request: web.Request) -> web.Response:
        obj = self._file(request)
        text = self.file_bytes[obj["id"]].decode("utf-8", errors="replace")
        payload = {"content": text, "file_type": "text/plain", "filename": obj["filename"], "title": "", "type": "file"}
        # The "internally agreed format": a JSON string, served as text.
        return web.Response(status=200, text=json.dumps(payload, ensure_ascii=False), content_type="text/plain")

    # ------------------------------------------------------------------ chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._check_auth(request)
        if self._always is not None:
            raise _ApiError(self._always.status, self._always.type, self._always.message, self._always.headers)
        body = request[_RECORD].body
        failing = self._failing_models.get(str(body.get("model"))) if isinstance(body, dict) else None
        if failing is not None:
            raise _ApiError(failing.status, failing.type, failing.message, failing.headers)
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            self.rate_limited += 1
            raise _ApiError(
                429,
                "rate_limit_reached_error",
                f"Your account {ORG_ID}<{AK_ID}> request reached max organization concurrency: "
                f"{self.max_concurrency}, please try again after 1 seconds",
            )
        self._check_minute_limits(request[_RECORD].body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat_inner(request)
        finally:
            self.in_flight -= 1

    def _check_minute_limits(self, body: Any) -> None:
        """RPM and TPM over a sliding window, checked when a request arrives; an accepted request
        is charged at once (429s are not)."""
        if self.rpm is None and self.tpm is None:
            return
        now = time.monotonic()
        horizon = now - self.limit_window
        self._starts = [t for t in self._starts if t > horizon]
        self._charges = [(t, n) for t, n in self._charges if t > horizon]
        if self.rpm is not None and len(self._starts) >= self.rpm:
            self.rate_limited += 1
            after = max(1, math.ceil(self._starts[0] + self.limit_window - now))
            raise _ApiError(
                429,
                "rate_limit_reached_error",
                f"Your account {ORG_ID}<{AK_ID}> request reached organization max RPM: {self.rpm}, "
                f"please try again after {after} seconds",
            )
        charge = 0
        if isinstance(body, dict):
            spec = self.models.get(str(body.get("model")))
            default_max = spec.default_max_tokens if spec else 1024
            max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else default_max
            charge = estimate_tokens(_prompt_bytes(body.get("messages"), body.get("tools"))) + int(max_tokens or 0)
        current = sum(n for _, n in self._charges)
        if self.tpm is not None and current + charge > self.tpm:
            self.rate_limited += 1
            raise _ApiError(
                429,
                "rate_limit_reached_error",
                f"Your account {ORG_ID}<{AK_ID}> request reached organization TPM rate limit, "
                f"current:{current + charge}, limit:{self.tpm}",
            )
        self._starts.append(now)
        self._charges.append((now, charge))

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        hang: Hang | None = None
        if self._script:
            head = self._script[0]
            if isinstance(head, Fail):
                self._script.pop(0)
                raise _ApiError(head.status, head.type, head.message, head.headers)
            if isinstance(head, Malformed):
                self._script.pop(0)
                return web.Response(status=200, text=head.body, content_type=head.content_type)
            if isinstance(head, Hang):
                self._script.pop(0)
                hang = head
                if hang.after_chunks is None:
                    await self._sleep(hang.seconds)

        body = request[_RECORD].body
        if not isinstance(body, dict):
            raise _bad("Invalid request: request body must be a JSON object")  # invented
        spec = self._spec(body.get("model"))
        thinking = self._validate(spec, body)
        prompt = _prompt_bytes(body["messages"], body.get("tools"))
        prompt_tokens = estimate_tokens(prompt)
        max_tokens = body.get("max_tokens") or spec.default_max_tokens
        if prompt_tokens + max_tokens > spec.context_length:
            raise _bad(
                f"Invalid request: Your request exceeded model token limit: {spec.context_length} "
                f"(requested: {prompt_tokens + max_tokens})"
            )

        stream = bool(body.get("stream"))
        if hang is not None and hang.after_chunks is not None and not stream:
            await self._sleep(hang.seconds)
        step: Step | None = None
        if self._script and isinstance(self._script[0], Reply | CallTools):
            step = self._script.pop(0)
        await self._sleep(self.latency)

        output = self._answer(body, thinking, step)
        cached = self._cached_tokens(spec, prompt)
        completion_tokens = estimate_tokens(
            (output.reasoning or "").encode()
            + output.content.encode()
            + (canonical_json(output.tool_calls) if output.tool_calls else b"")
        )
        n = body.get("n") or 1
        usage: JSON = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
        }
        if spec.auto_cache:
            usage["cached_tokens"] = cached
        message: JSON = {"role": "assistant", "content": output.content}
        if thinking:
            message["reasoning_content"] = output.reasoning or ""
        if output.tool_calls:
            message["tool_calls"] = output.tool_calls
        completion: JSON = {
            "id": "chatcmpl-" + _random_id(24),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.id,
            "choices": [
                {"index": i, "message": dict(message), "finish_reason": output.finish_reason} for i in range(n)
            ],
            "usage": usage,
            "system_fingerprint": self.system_fingerprint,
        }
        self._prompt_cache.setdefault(spec.id, []).append(prompt)
        self.completions.append(body)
        if not stream:
            return self._json(200, completion)
        request[_RECORD].response = completion
        return await self._stream(request, body, completion, output, thinking, hang)

    def _cached_tokens(self, spec: ModelSpec, prompt: bytes) -> int:
        if not spec.auto_cache:
            return 0
        best = 0
        for earlier in self._prompt_cache.get(spec.id, []):
            if estimate_tokens(earlier) > CACHE_BLOCK_TOKENS:
                best = max(best, _common_prefix(earlier, prompt))
        cached = (best // 4) // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS
        return min(cached, estimate_tokens(prompt))

    # ------------------------------------------------------------------ validation

    def _validate(self, spec: ModelSpec, body: JSON) -> bool:
        """Validate like the real API; returns whether thinking is on."""
        thinking = self._thinking(spec, body)
        self._validate_sampling(spec, body, thinking)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("Invalid request: messages must not be empty")  # invented
        self._validate_messages(messages, thinking)
        names = self._validate_tools(body.get("tools"))
        self._validate_tool_choice(body.get("tool_choice"), names, thinking)
        return thinking

    @staticmethod
    def _thinking(spec: ModelSpec, body: JSON) -> bool:
        if spec.family == _FAMILY_THINKING:
            return True
        if spec.family != _FAMILY_TOGGLE:
            return False
        param = body.get("thinking")
        if param is None:
            return True
        if not isinstance(param, dict) or param.get("type") not in ("enabled", "disabled"):
            raise _bad(f"Invalid request: invalid thinking: {json.dumps(param)}")  # invented
        return bool(param["type"] == "enabled")

    @staticmethod
    def _validate_sampling(spec: ModelSpec, body: JSON, thinking: bool) -> None:
        def fixed(name: str, allowed: float, shown: str) -> None:
            value = body.get(name)
            if value is None:
                return
            if not _is_number(value) or float(value) != allowed:
                raise _bad(f"invalid {name}: only {shown} is allowed for this model")

        if spec.family == _FAMILY_TOGGLE:
            fixed("temperature", 1.0 if thinking else 0.6, "1" if thinking else "0.6")
            fixed("top_p", 0.95, "0.95")
            fixed("n", 1, "1")
            fixed("presence_penalty", 0, "0")
            fixed("frequency_penalty", 0, "0")
        else:
            temperature = body.get("temperature")
            if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 1):
                raise _bad(f"Invalid request: temperature {temperature} is out of range [0, 1]")  # invented
            top_p = body.get("top_p")
            if top_p is not None and (not _is_number(top_p) or not 0 <= top_p <= 1):
                raise _bad(f"Invalid request: top_p {top_p} is out of range [0, 1]")  # invented
            n = body.get("n")
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 5):
                raise _bad(f"Invalid request: n {n} is out of range [1, 5]")  # invented
            if n is not None and n > 1 and temperature is not None and temperature < 0.001:
                raise _bad("Invalid request: n must be 1 when temperature is 0")  # invented
            for name in ("presence_penalty", "frequency_penalty"):
                value = body.get(name)
                if value is not None and (not _is_number(value) or not -2 <= value <= 2):
                    raise _bad(f"Invalid request: {name} {value} is out of range [-2, 2]")  # invented
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise _bad(f"Invalid request: invalid max_tokens: {max_tokens}")  # invented
        stop = body.get("stop")
        if stop is not None:
            stops = [stop] if isinstance(stop, str) else stop
            if (
                not isinstance(stops, list)
                or len(stops) > 5
                or any(not isinstance(s, str) or len(s.encode()) > 32 for s in stops)
            ):
                raise _bad("Invalid request: stop must be at most 5 strings of at most 32 bytes")  # invented

    @staticmethod
    def _validate_messages(messages: list[Any], thinking: bool) -> None:
        call_ids: set[str] = set()
        responses: Counter[str] = Counter()
        for index, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise _bad(f"Invalid request: the message at position {index} must be an object")  # invented
            role = msg.get("role")
            if role not in ("system", "user", "assistant", "tool", "cache"):
                raise _bad(f"Invalid request: the message at position {index} has invalid role {role!r}")
            content = msg.get("content")
            tool_calls = msg.get("tool_calls") if role == "assistant" else None
            only_text = isinstance(content, list) and all(
                isinstance(p, dict) and p.get("type") == "text" for p in content
            )
            if isinstance(content, list):
                if content and only_text and not any(p.get("text") for p in content):
                    raise _bad("Invalid request: text content is empty")
            elif content is not None and not isinstance(content, str):
                raise _bad(f"Invalid request: the message at position {index} has invalid content")  # invented
            empty = not content  # None, "" or []
            if role in ("system", "user") and empty:
                raise _bad(f"Invalid request: the message at position {index} with role '{role}' must not be empty")
            if role == "assistant":
                if not tool_calls:
                    if empty:
                        raise _bad(
                            f"Invalid request: the message at position {index} with role 'assistant' must not be empty"
                        )
                    continue
                if not isinstance(tool_calls, list):
                    raise _bad(f"Invalid request: invalid tool_calls in message at position {index}")  # invented
                if thinking and not msg.get("reasoning_content"):
                    raise _bad(
                        "thinking is enabled but reasoning_content is missing in assistant tool call "
                        f"message at index {index}"
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
                        raise _bad(f"Invalid request: invalid tool call in message at position {index}")
                    if call_id in call_ids:
                        raise _bad(f"Invalid request: tool call id {call_id} is duplicated")
                    call_ids.add(call_id)
            elif role == "tool":
                tool_call_id = msg.get("tool_call_id")
                if not isinstance(tool_call_id, str) or not tool_call_id:
                    raise _bad(f"Invalid request: tool_call_id is required for the tool message at position {index}")
                responses[tool_call_id] += 1
        for tool_call_id, count in responses.items():
            if tool_call_id not in call_ids:
                raise _bad(f"Invalid request: tool_call_id {tool_call_id} not found")  # invented
            if count > 1:
                raise _bad(f"Invalid request: tool_call_id {tool_call_id} has {count} tool messages")  # invented
        missing = sorted(call_ids - set(responses))
        if missing:
            raise _bad(f"Invalid request: tool_call_id {missing[0]} has no tool message")  # invented

    @staticmethod
    def _validate_tools(tools: Any) -> list[str]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _bad("Invalid request: tools must be a list")  # invented
        if len(tools) > 128:
            raise _bad(f"Invalid request: too many tools: {len(tools)}, at most 128 are allowed")  # invented
        names: list[str] = []
        for tool in tools:
            kind = tool.get("type") if isinstance(tool, dict) else None
            function = tool.get("function") if isinstance(tool, dict) else None
            if kind not in ("function", "builtin_function") or not isinstance(function, dict):
                raise _bad(f"Invalid request: invalid tool: {json.dumps(tool)[:200]}")  # invented
            name = function.get("name")
            if kind == "function" and (not isinstance(name, str) or not _TOOL_NAME_RE.match(name)):
                raise _bad(f"Invalid request: function name {name} is invalid")  # invented
            if kind == "builtin_function" and (not isinstance(name, str) or not name.startswith("$")):
                raise _bad(f"Invalid request: invalid builtin function {name}")  # invented
            if name in names:
                raise _bad(f"Invalid request: function name {name} is duplicated")
            parameters = function.get("parameters")
            if parameters is not None and (not isinstance(parameters, dict) or parameters.get("type") != "object"):
                raise _bad(f"Invalid request: parameters of function {name} must be an object schema")  # invented
            names.append(str(name))
        return names

    @staticmethod
    def _validate_tool_choice(tool_choice: Any, names: list[str], thinking: bool) -> None:
        if tool_choice is None or tool_choice in ("auto", "none"):
            return
        if tool_choice == "required":
            if thinking:
                raise _bad("tool_choice 'required' is incompatible with thinking enabled")
            if not names:
                raise _bad("Invalid request: tool_choice 'required' needs at least one tool")  # invented
            return
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            if thinking:
                raise _bad("tool_choice 'specified' is incompatible with thinking enabled")
            name = (tool_choice.get("function") or {}).get("name")
            if name not in names:
                raise _bad(f"Invalid request: tool_choice function {name} is not in tools")  # invented
            return
        raise _bad(f"Invalid request: invalid tool_choice: {json.dumps(tool_choice)}")  # invented

    # ------------------------------------------------------------------ answering

    def _answer(self, body: JSON, thinking: bool, step: Step | None) -> _Output:
        messages: list[JSON] = body["messages"]
        next_index = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
        if isinstance(step, Reply):
            out = _Output(step.content, step.reasoning_content, None, step.finish_reason)
            if thinking and not out.reasoning:
                out.reasoning = "The answer for this turn was scripted by the test."
            return out
        if isinstance(step, CallTools):
            calls = [self._tool_call(name, args, next_index + i) for i, (name, args) in enumerate(step.calls)]
            reasoning = step.reasoning_content or (
                "I need to call " + ", ".join(name for name, _ in step.calls) + "." if thinking else None
            )
            return _Output(step.content, reasoning, calls, "tool_calls")
        out = self._brain(body, next_index)
        if not thinking:
            out.reasoning = None
        if out.tool_calls is None:
            out = self._shape_text(body, out)
        return out

    @staticmethod
    def _tool_call(name: str, arguments: dict[str, Any] | str, index: int) -> JSON:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return {
            "id": f"functions.{name}:{index}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }

    def _brain(self, body: JSON, next_index: int) -> _Output:
        messages: list[JSON] = body["messages"]
        tool_choice = body.get("tool_choice")
        names = [t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"]
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user_text = _text_of(messages[last_user].get("content")) if last_user >= 0 else ""
        tool_since_user = any(m.get("role") == "tool" for m in messages[last_user + 1 :])
        trailing: list[str] = []
        for msg in reversed(messages):
            if msg.get("role") != "tool":
                break
            trailing.insert(0, _text_of(msg.get("content")))

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
                return _Output("", reasoning, [self._tool_call(target, args, next_index)], "tool_calls")

        if trailing:
            text = "Thanks for waiting! Here is what I found: " + "\n".join(trailing)
            reasoning = "I have the tool results, so I will summarise them for the customer."
        elif user_text:
            text = (
                f'Thanks for reaching out! You wrote: "{user_text}". '
                "A member of our support team will follow up shortly."
            )
            reasoning = "The customer sent a message; I will acknowledge it politely."
        else:
            text = "Hello! How can I help you today?"
            reasoning = "There is no user message yet, so I will greet the customer."
        return _Output(text, reasoning, None, "stop")

    @staticmethod
    def _shape_text(body: JSON, out: _Output) -> _Output:
        """Apply JSON mode, ``stop`` and ``max_tokens`` to a brain-generated text answer."""
        content = out.content
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_object":
            content = json.dumps({"reply": content}, ensure_ascii=False)
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
        return _Output(content, out.reasoning, None, finish)

    # ------------------------------------------------------------------ streaming

    async def _stream(
        self,
        request: web.Request,
        body: JSON,
        completion: JSON,
        output: _Output,
        thinking: bool,
        hang: Hang | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Msh-Request-Id": request[_REQUEST_ID],
                "Server-Timing": "inner; dur=1",
            },
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
        }
        sent = 0

        async def send(payload: JSON | str) -> None:
            nonlocal sent
            if hang is not None and hang.after_chunks is not None and sent == hang.after_chunks:
                await self._sleep(hang.seconds)
            data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            await response.write(f"data: {data}\n\n".encode())
            sent += 1
            if self.chunk_delay:
                await self._sleep(self.chunk_delay)

        def chunk(index: int, delta: JSON, finish: str | None = None, usage: JSON | None = None) -> JSON:
            choice: JSON = {"index": index, "delta": delta, "finish_reason": finish}
            if usage is not None:
                choice["usage"] = usage
            out: JSON = {**base, "choices": [choice], "system_fingerprint": self.system_fingerprint}
            if include_usage:
                out["usage"] = None
            return out

        usage = completion["usage"]
        try:
            for choice in completion["choices"]:
                i = choice["index"]
                await send(chunk(i, {"role": "assistant", "content": ""}))
                if thinking and output.reasoning:
                    for piece in _pieces(output.reasoning):
                        await send(chunk(i, {"reasoning_content": piece}))
                for piece in _pieces(output.content):
                    await send(chunk(i, {"content": piece}))
                for n, call in enumerate(output.tool_calls or []):
                    first = {
                        "index": n,
                        "id": call["id"],
                        "type": call["type"],
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                    await send(chunk(i, {"tool_calls": [first]}))
                    arguments = call["function"]["arguments"]
                    step = max(1, len(arguments) // 3 + 1)
                    for start in range(0, len(arguments), step):
                        fragment = {"index": n, "function": {"arguments": arguments[start : start + step]}}
                        await send(chunk(i, {"tool_calls": [fragment]}))
                await send(chunk(i, {}, output.finish_reason, dict(usage)))
            if include_usage:
                await send(
                    {
                        **base,
                        "choices": [],
                        "usage": dict(usage),
                        "system_fingerprint": self.system_fingerprint,
                    }
                )
            await send("[DONE]")
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away mid-stream
        return response
