"""The Kimi simulator: Moonshot's Open Platform API on loopback, for the tests, the benches and
``supportbot eval``.

It serves the OpenAI-compatible ``/v1/chat/completions`` (JSON and SSE), ``/v1/models``,
``/v1/tokenizers/estimate-token-count`` and the files API (upload with
``purpose=file-extract``, list, content, delete), validates requests the way the real API
does (:mod:`.wire`), and answers with a model's brain unless a test scripts the next answers
(:mod:`.behaviours`). Limits (concurrency, RPM, TPM) and faults (errors, hangs, malformed
bodies, an outage, one model down) are switched on per test.

Usage::

    async with KimiSimulator(api_key="sk-test") as kimi:
        kimi.script(Reply("Hello!"), Fail.rate_limited(after=1))
        ...  # point the bot at kimi.base_url
        assert kimi.completions[0]["model"] == "kimi-k2.5"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import typedefs as web_typedefs
from aiohttp import web

from bot.evaluation.simulator.behaviours import CallTools, Fail, Hang, Malformed, Output, Reply, Step, answer
from bot.evaluation.simulator.loopback import LoopbackFake, LoopbackServer
from bot.evaluation.simulator.scripted import MODELS as SCRIPTED
from bot.evaluation.simulator.wire import (
    AK_ID,
    JSON,
    K2,
    KIMI_MODELS,
    ORG_ID,
    ApiError,
    ModelSpec,
    PrefixCache,
    bad,
    canonical_json,
    estimate_tokens,
    prompt_bytes,
    validate,
)

__all__ = ["AccountLimits", "FilesApi", "KimiSimulator", "RecordedRequest", "Recorder", "ScriptedKimi"]

_ALNUM = string.ascii_letters + string.digits


@dataclass
class RecordedRequest:
    """One HTTP request received by the simulator."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    status: int | None = None
    response: Any = None


_REQUEST_ID = web.RequestKey("request_id", str)
_RECORD = web.RequestKey("record", RecordedRequest)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8", headers=headers)


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status, {"error": {"message": exc.message, "type": exc.type}}, exc.headers or None)


def _pieces(text: str, words: int = 3) -> list[str]:
    """Split text into small streaming fragments that concatenate back to ``text``."""
    tokens = re.findall(r"\s*\S+\s*|\s+", text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)] or ([text] if text else [])


class Recorder:
    """The simulator's HTTP edge, as an aiohttp middleware: records every request (and the bodies
    of the completions answered) unless ``keep`` is False, turns :class:`ApiError` and aiohttp's
    404/405 into Kimi's error bodies, and stamps ``Msh-Request-Id`` and ``Server-Timing``."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.requests: list[RecordedRequest] = []
        self.completions: list[JSON] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: web_typedefs.Handler) -> web.StreamResponse:
        started = time.monotonic()
        request[_REQUEST_ID] = request_id = str(uuid.uuid4())
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request[_RECORD] = record = RecordedRequest(request.method, request.path, dict(request.headers), raw, body)
        if self.keep:
            self.requests.append(record)
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _json(404, {"code": 5, "error": "url.not_found", "message": "没找到对象",
                                   "method": request.method, "scode": "0x5", "status": False,
                                   "ua": request.headers.get("User-Agent", ""), "url": request.path})  # fmt: skip
        except web.HTTPMethodNotAllowed:
            response = _error(ApiError(405, "invalid_request_error", "Method Not Allowed"))
        except ApiError as exc:
            response = _error(exc)
        if not response.prepared:
            response.headers["Msh-Request-Id"] = request_id
            response.headers["Server-Timing"] = f"inner; dur={int((time.monotonic() - started) * 1000)}"
        record.status = response.status
        if self.keep and isinstance(response, web.Response) and response.body is not None:
            try:
                record.response = json.loads(response.body)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                record.response = response.text
        return response


@dataclass
class AccountLimits:
    """The account's limits as Moonshot enforces them, each off while None.

    * ``max_concurrency`` – a completion arriving while this many are in flight gets the real 429
      concurrency error.
    * ``rpm`` / ``tpm`` – requests and tokens per ``limit_window`` seconds (a sliding window, 60 s by
      default): a completion past either gets the real 429 ``rate_limit_reached_error`` (RPM with
      "please try again after N seconds", TPM with ``current:..., limit:...``). TPM is pre-charged
      with prompt tokens + ``max_tokens`` (or the model's default), as Moonshot does.
    * ``rate_limited`` – how many 429s these limits caused.
    * ``in_flight`` / ``max_in_flight`` – current and peak number of concurrent completions.
    """

    max_concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    limit_window: float = 60.0
    rate_limited: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _starts: list[float] = field(default_factory=list)
    _charges: list[tuple[float, int]] = field(default_factory=list)

    @contextlib.contextmanager
    def admit(self, models: dict[str, ModelSpec], body: Any) -> Iterator[None]:
        """Let one completion in (or raise the real 429) and count it in flight while it runs."""
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            self._limited(f"max organization concurrency: {self.max_concurrency}, please try again after 1 seconds")
        self._check_minute_limits(models, body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    def _limited(self, what: str) -> None:
        self.rate_limited += 1
        raise ApiError(429, "rate_limit_reached_error", f"Your account {ORG_ID}<{AK_ID}> request reached {what}")

    def _check_minute_limits(self, models: dict[str, ModelSpec], body: Any) -> None:
        """RPM and TPM over a sliding window, checked when a request arrives; an accepted request
        is charged at once (429s are not)."""
        if self.rpm is None and self.tpm is None:
            return
        now = time.monotonic()
        horizon = now - self.limit_window
        self._starts = [t for t in self._starts if t > horizon]
        self._charges = [(t, n) for t, n in self._charges if t > horizon]
        if self.rpm is not None and len(self._starts) >= self.rpm:
            after = max(1, math.ceil(self._starts[0] + self.limit_window - now))
            self._limited(f"organization max RPM: {self.rpm}, please try again after {after} seconds")
        charge = 0
        if isinstance(body, dict):
            spec = models.get(str(body.get("model")))
            default_max = spec.default_max_tokens if spec else 1024
            max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else default_max
            charge = estimate_tokens(prompt_bytes(body.get("messages"), body.get("tools"))) + int(max_tokens or 0)
        current = sum(n for _, n in self._charges)
        if self.tpm is not None and current + charge > self.tpm:
            self._limited(f"organization TPM rate limit, current:{current + charge}, limit:{self.tpm}")
        self._starts.append(now)
        self._charges.append((now, charge))


class FilesApi:
    """Kimi's files API (``purpose=file-extract``): upload, list, content, delete. ``files`` maps a
    file id to its FileObject, ``file_bytes`` to the uploaded bytes."""

    def __init__(self, check_auth: Callable[[web.Request], None]) -> None:
        self.files: dict[str, JSON] = {}
        self.file_bytes: dict[str, bytes] = {}
        self._check_auth = check_auth

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self._upload)
        router.add_get("/v1/files", self._list)
        router.add_delete("/v1/files/{file_id}", self._delete)
        router.add_get("/v1/files/{file_id}/content", self._content)

    def _file(self, request: web.Request) -> JSON:
        self._check_auth(request)
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            raise ApiError(404, "resource_not_found_error", f"file {request.match_info['file_id']} not found")
        return found

    async def _upload(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise bad("Invalid request: multipart/form-data expected")  # invented
        fields: dict[str, tuple[str, bytes]] = {}
        boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
        for part in request[_RECORD].raw.split(b"--" + boundary):
            head, sep, body = part.partition(b"\r\n\r\n")
            disposition = re.search(rb'name="([^"]+)"(?:; filename="([^"]*)")?', head) if sep else None
            if disposition:
                filename = (disposition.group(2) or b"").decode()
                fields[disposition.group(1).decode()] = (filename, body.removesuffix(b"\r\n"))
        purpose = fields.get("purpose", ("", b""))[1].decode()
        if purpose != "file-extract":
            raise bad("Invalid purpose: only 'file-extract' accepted")
        if "file" not in fields:
            raise bad("Invalid request: file is required")  # invented
        filename, data = fields["file"]
        if not data:
            raise bad("File size is zero, please confirm and re-upload the file")
        if len(data) > 100 * 1024 * 1024:
            raise bad("File size is too large, max file size is 100MB, please confirm and re-upload the file")
        file_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(20))
        self.files[file_id] = obj = {"id": file_id, "object": "file", "bytes": len(data),
                                     "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                                     "status": "ok", "status_details": ""}  # fmt: skip
        self.file_bytes[file_id] = data
        return _json(200, obj)

    async def _list(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return _json(200, {"object": "list", "data": list(self.files.values())})

    async def _delete(self, request: web.Request) -> web.Response:
        obj = self._file(request)
        del self.files[obj["id"]]
        self.file_bytes.pop(obj["id"], None)
        return _json(200, {"id": obj["id"], "object": "file", "deleted": True})

    async def _content(self, request: web.Request) -> web.Response:
        obj = self._file(request)
        text = self.file_bytes[obj["id"]].decode("utf-8", errors="replace")
        payload = {"content": text, "file_type": "text/plain", "filename": obj["filename"], "title": "", "type": "file"}
        # The "internally agreed format": a JSON string, served as text.
        return web.Response(status=200, text=json.dumps(payload, ensure_ascii=False), content_type="text/plain")


async def _stream(
    request: web.Request,
    completion: JSON,
    output: Output,
    *,
    thinking: bool,
    include_usage: bool,
    hang: Hang | None,
    pause: Callable[[float], Awaitable[None]],
    chunk_delay: float,
) -> web.StreamResponse:
    """Send ``completion`` as SSE chunks, as Kimi streams it (``pause`` sleeps, waking when the
    simulator stops)."""
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "Msh-Request-Id": request[_REQUEST_ID], "Server-Timing": "inner; dur=1"},
    )  # fmt: skip
    await response.prepare(request)
    fingerprint = completion["system_fingerprint"]
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}  # fmt: skip
    sent = 0

    async def send(payload: JSON | str) -> None:
        nonlocal sent
        if hang is not None and hang.after_chunks is not None and sent == hang.after_chunks:
            await pause(hang.seconds)
        data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        await response.write(f"data: {data}\n\n".encode())
        sent += 1
        if chunk_delay:
            await pause(chunk_delay)

    def chunk(index: int, delta: JSON, finish: str | None = None, usage: JSON | None = None) -> JSON:
        choice: JSON = {"index": index, "delta": delta, "finish_reason": finish}
        if usage is not None:
            choice["usage"] = usage
        out: JSON = {**base, "choices": [choice], "system_fingerprint": fingerprint}
        return out | {"usage": None} if include_usage else out

    usage = completion["usage"]
    try:
        for choice in completion["choices"]:
            i = choice["index"]
            await send(chunk(i, {"role": "assistant", "content": ""}))
            for piece in _pieces(output.reasoning or "") if thinking else []:
                await send(chunk(i, {"reasoning_content": piece}))
            for piece in _pieces(output.content):
                await send(chunk(i, {"content": piece}))
            for n, call in enumerate(output.tool_calls or []):
                function = call["function"]
                first = {"index": n, "id": call["id"], "type": call["type"],
                         "function": {"name": function["name"], "arguments": ""}}  # fmt: skip
                await send(chunk(i, {"tool_calls": [first]}))
                arguments = function["arguments"]
                step = max(1, len(arguments) // 3 + 1)
                for start in range(0, len(arguments), step):
                    fragment = {"index": n, "function": {"arguments": arguments[start : start + step]}}
                    await send(chunk(i, {"tool_calls": [fragment]}))
            await send(chunk(i, {}, output.finish_reason, dict(usage)))
        if include_usage:
            await send({**base, "choices": [], "usage": dict(usage), "system_fingerprint": fingerprint})
        await send("[DONE]")
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away mid-stream
    return response


class KimiSimulator(LoopbackFake):
    """Kimi (Moonshot) API on ``http://127.0.0.1:<port>/v1``; an async context manager.

    ``api_key`` is the only key accepted (None: any bearer token); ``models`` picks catalog
    entries from ``catalog`` (the Kimi models by default); ``record=False`` keeps no history
    (``requests`` and ``completions`` stay empty), for long eval runs. Its jobs live in small
    parts: :class:`Recorder` (the HTTP edge and history), :class:`AccountLimits` (``limits``),
    :class:`FilesApi` (``files``); this class answers chat completions and takes a test's script.

    Attributes tests can read or set:

    * ``base_url`` – ``"http://127.0.0.1:PORT/v1"`` (set on start).
    * ``requests`` – every :class:`RecordedRequest`, any path, in arrival order.
    * ``completions`` – bodies of the chat-completion requests answered with 200.
    * ``latency`` – seconds slept before every chat completion answer.
    * ``chunk_delay`` – seconds slept between SSE events when streaming.
    * ``limits`` – the account's :class:`AccountLimits` (concurrency, RPM, TPM) and their counters.
    """

    def __init__(
        self,
        api_key: str | None = "sk-test",
        *,
        models: list[str] | None = None,
        catalog: dict[str, ModelSpec] = KIMI_MODELS,
        record: bool = True,
    ) -> None:
        self.api_key = api_key
        self.models = {mid: catalog[mid] for mid in (models if models is not None else list(catalog))}
        self.recorder = Recorder(keep=record)
        self.requests, self.completions = self.recorder.requests, self.recorder.completions
        self.limits = AccountLimits()
        self.files_api = FilesApi(self._check_auth)
        self.files = self.files_api.files
        self.latency = 0.0
        self.chunk_delay = 0.0
        self.system_fingerprint = "fpv0_" + secrets.token_hex(4)
        self._script: list[Step] = []
        self._always: Fail | None = None
        self._failing_models: dict[str, Fail] = {}
        self._cache = PrefixCache()
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self.recorder.middleware], client_max_size=100 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/tokenizers/estimate-token-count", self._estimate)
        self.files_api.add_routes(app.router)
        self._server = LoopbackServer(app)
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start serving."""
        self._closing = asyncio.Event()
        self.base_url = await self._server.start() + "/v1"

    async def close(self) -> None:
        """Wake any hanging handlers and stop the server."""
        self._closing.set()
        await self._server.stop()

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
        """The ``prompt_tokens`` the simulator would report for this prompt."""
        return estimate_tokens(prompt_bytes(messages, tools))

    def _check_auth(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        if not (given.startswith("Bearer ") if self.api_key is None else given == f"Bearer {self.api_key}"):
            raise ApiError(401, "invalid_authentication_error", "Invalid Authentication")

    def _spec(self, model: Any) -> ModelSpec:
        if not isinstance(model, str) or not model:
            raise bad("Invalid request: model is required")  # invented
        spec = self.models.get(model)
        if spec is None:
            raise ApiError(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
        return spec

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    # ------------------------------------------------------------------ simple endpoints

    async def _models(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return _json(200, {"object": "list", "data": [m.as_json() for m in self.models.values()]})

    async def _estimate(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        body = request[_RECORD].body
        if not isinstance(body, dict):
            raise bad("Invalid request: request body must be a JSON object")  # invented
        self._spec(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("Invalid request: messages must not be empty")  # invented
        return _json(200, {"data": {"total_tokens": estimate_tokens(prompt_bytes(messages, body.get("tools")))}})

    # ------------------------------------------------------------------ chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._check_auth(request)
        body = request[_RECORD].body
        failing = self._failing_models.get(str(body.get("model"))) if isinstance(body, dict) else None
        if (failure := self._always or failing) is not None:
            raise ApiError(failure.status, failure.type, failure.message, failure.headers)
        with self.limits.admit(self.models, body):
            return await self._chat_inner(request)

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        hang: Hang | None = None
        head = self._script[0] if self._script else None
        if isinstance(head, Fail | Malformed | Hang):
            self._script.pop(0)
            if isinstance(head, Fail):
                raise ApiError(head.status, head.type, head.message, head.headers)
            if isinstance(head, Malformed):
                return web.Response(status=200, text=head.body, content_type=head.content_type)
            hang = head
            if hang.after_chunks is None:
                await self._sleep(hang.seconds)

        body = request[_RECORD].body
        if not isinstance(body, dict):
            raise bad("Invalid request: request body must be a JSON object")  # invented
        spec = self._spec(body.get("model"))
        thinking = validate(spec, body)
        prompt = prompt_bytes(body["messages"], body.get("tools"))
        prompt_tokens = estimate_tokens(prompt)
        max_tokens = body.get("max_tokens") or spec.default_max_tokens
        if prompt_tokens + max_tokens > spec.context_length:
            raise bad(
                f"Invalid request: Your request exceeded model token limit: {spec.context_length} "
                f"(requested: {prompt_tokens + max_tokens})"
            )

        stream = bool(body.get("stream"))
        if hang is not None and hang.after_chunks is not None and not stream:
            await self._sleep(hang.seconds)
        step = self._script[0] if self._script else None
        if isinstance(step, Reply | CallTools):
            self._script.pop(0)
        await self._sleep(self.latency)

        output = answer(spec, body, thinking, step if isinstance(step, Reply | CallTools) else None)
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
            usage["cached_tokens"] = self._cache.cached_tokens(spec.id, prompt)
        message: JSON = {"role": "assistant", "content": output.content}
        if thinking:
            message["reasoning_content"] = output.reasoning or ""
        if output.tool_calls:
            message["tool_calls"] = output.tool_calls
        completion: JSON = {
            "id": "chatcmpl-" + "".join(secrets.choice(_ALNUM) for _ in range(24)),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.id,
            "choices": [
                {"index": i, "message": dict(message), "finish_reason": output.finish_reason} for i in range(n)
            ],
            "usage": usage,
            "system_fingerprint": self.system_fingerprint,
        }
        if self.recorder.keep:
            self.completions.append(body)
        if not stream:
            return _json(200, completion)
        request[_RECORD].response = completion
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await _stream(
            request, completion, output, thinking=thinking, include_usage=include_usage, hang=hang,
            pause=self._sleep, chunk_delay=self.chunk_delay,
        )  # fmt: skip


class ScriptedKimi(KimiSimulator):
    """The simulator as ``supportbot eval`` runs it: the scripted models only (``scripted``,
    ``rulebreaker``, ``scripted-customer``), any bearer key, no recorded history."""

    def __init__(self) -> None:
        catalog = {m: ModelSpec(m, 262144, K2, 1024, supports_image_in=True, scripted=True) for m in SCRIPTED}
        super().__init__(api_key=None, catalog=catalog, record=False)
