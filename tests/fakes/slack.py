"""A protocol-faithful fake of the Slack Web API (plus ``response_url`` webhooks) on loopback HTTP.

Point ``slack_sdk``'s ``AsyncWebClient(base_url=slack.base_url)`` (and so bolt's ``AsyncApp``) at it.
Methods are served at ``/api/<method>`` and accept JSON bodies, form-encoded bodies and GET query
parameters exactly as ``slack_sdk`` sends them (reference ``slack.md`` §2.5).  Answers are HTTP 200
``{"ok": true, ...}`` in Slack's shapes; input is validated the way Slack does (``invalid_blocks``,
``msg_too_long``, ``invalid_arguments``, ``message_not_found`` ...) so the bot's bugs show.

Usage::

    async with FakeSlack(bot_token="xoxb-test") as slack:
        slack.fail_next("chat.postMessage", status=429, retry_after=1)
        ...  # run the bot against slack.base_url
        [call] = await slack.wait_for("chat.postMessage", where=lambda p: p["channel"] == "C111")
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiohttp import web

from bot.evaluation.simulator.loopback import LoopbackFake, LoopbackServer
from tests.fakes.common import FaultQueue, at_least
from tests.fakes.slack_methods import ChatMethods, Handler, ReadMethods, SlackError, ViewAndReactionMethods
from tests.fakes.slack_world import EMAIL_SCOPES, SlackWorkspace

__all__ = ["EMAIL_SCOPES", "FakeSlack", "SlackCall", "WebhookPost"]

JSON: TypeAlias = dict[str, Any]

_JSON_PARAMS = ("blocks", "attachments", "metadata", "view")


@dataclass
class SlackCall:
    """One Web API call received by :class:`FakeSlack`."""

    method: str
    params: JSON
    headers: dict[str, str]
    http_method: str = "POST"
    status: int = 200
    response: JSON | None = None

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok"))


@dataclass
class WebhookPost:
    """One POST to a ``response_url`` served by :class:`FakeSlack`."""

    name: str
    body: Any
    headers: dict[str, str]


@dataclass
class _Fault:
    status: int
    error: str
    retry_after: int | None


class FakeSlack(SlackWorkspace, LoopbackFake):
    """Fake Slack Web API on ``http://127.0.0.1:<port>/api/``; an async context manager. The
    workspace it serves is its :class:`SlackWorkspace` state; the methods are answered by
    :mod:`tests.fakes.slack_methods`; this class is the HTTP side: auth, recording, faults.

    Public state (read or pre-populate in tests):

    * ``calls`` – every :class:`SlackCall` (including failed and unauthenticated ones).
    * ``webhook_posts`` – every :class:`WebhookPost` to a :meth:`response_url`.
    * ``users`` / ``channels`` / ``usergroups`` – directory data for ``users.info``,
      ``conversations.info`` and ``usergroups.users.list`` (``{"S123": ["U1"]}``).
    * ``ephemerals`` – ``chat.postEphemeral`` messages (never in channel history).
    * ``views`` – opened views by id.
    * ``reactions`` – ``(channel, ts, name)`` tuples added by the bot.
    * ``max_text_length`` (40,000), ``max_blocks_text`` (13,200), ``max_metadata_bytes`` (4,000).
    * ``strict_metadata`` – False: oversized metadata is dropped with an ok response carrying
      ``warning: metadata_too_large`` (what Slack does); True: the call fails with that error.
    * ``strict`` – True: ``reactions.add``/``chat.getPermalink`` on unknown messages fail with
      ``message_not_found``, and ``users.info`` on unknown users with ``user_not_found``.
    * ``scopes`` – the bot token's OAuth scopes (sent back in ``x-oauth-scopes``). Without
      ``users:read.email``, ``users.info`` leaves ``profile.email`` out, as Slack does; without
      ``users:read`` it fails with ``missing_scope``.
    """

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        *,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_id: str = "T111",
        app_id: str = "A111",
        team_domain: str = "acme",
        strict: bool = False,
    ) -> None:
        super().__init__(
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            team_id=team_id,
            app_id=app_id,
            team_domain=team_domain,
            strict=strict,
        )
        self.bot_token = bot_token
        self.calls: list[SlackCall] = []
        self.webhook_posts: list[WebhookPost] = []
        self._faults: FaultQueue[str, _Fault] = FaultQueue()
        self._stalls: FaultQueue[tuple[str, JSON], float] = FaultQueue()
        self._server: LoopbackServer | None = None
        self.port = 0
        self.base_url = ""
        self.handlers: dict[str, Handler] = {
            "api.test": lambda p: {"args": {k: v for k, v in p.items() if k != "token"}},
            **ChatMethods(self).handlers,
            **ViewAndReactionMethods(self).handlers,
            **ReadMethods(self).handlers,
            "assistant.threads.setStatus": lambda p: {},
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start serving."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/webhook/{name}", self._webhook)
        self._server = LoopbackServer(app)
        self.base_url = await self._server.start() + "/api/"
        self.port = self._server.port

    async def close(self) -> None:
        """Stop the server."""
        if self._server is not None:
            await self._server.stop()

    # ------------------------------------------------------------------ test helpers

    def response_url(self, name: str = "default") -> str:
        """An absolute ``response_url`` served by this fake; posts land in ``webhook_posts``."""
        return f"http://127.0.0.1:{self.port}/webhook/{name}"

    def webhook_posts_to(self, name: str) -> list[WebhookPost]:
        return [p for p in self.webhook_posts if p.name == name]

    def calls_to(self, method: str) -> list[SlackCall]:
        """Recorded calls of one Web API method, oldest first."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,
        where: Callable[[JSON], bool] | None = None,
    ) -> list[SlackCall]:
        """Poll until at least ``count`` calls of ``method`` (matching ``where(params)``) exist.

        Returns all matching calls; raises ``AssertionError`` listing what was received on timeout.
        """

        def failure(found: int) -> str:
            seen = [(c.method, c.response and c.response.get("error")) for c in self.calls]
            return f"expected {count} call(s) to {method}, got {found} within {timeout}s; calls: {seen}"

        def matching() -> list[SlackCall]:
            return [c for c in self.calls_to(method) if where is None or where(c.params)]

        return await at_least(count, matching, timeout, failure)

    async def wait_for_webhook(self, name: str, count: int = 1, timeout: float = 5.0) -> list[WebhookPost]:
        """Poll until at least ``count`` posts reached ``response_url(name)``."""
        failure = f"expected {count} post(s) to webhook {name!r}, got {self.webhook_posts}"
        return await at_least(count, lambda: self.webhook_posts_to(name), timeout, lambda _: failure)

    def fail_next(
        self,
        method: str,
        status: int | None = None,
        retry_after: int | None = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail.

        ``fail_next(m)`` / ``fail_next(m, status=429, retry_after=1)``: HTTP 429 ``ratelimited`` with a
        ``Retry-After`` header.  ``fail_next(m, error="channel_not_found")``: HTTP 200 ``ok: false``.
        Another ``status`` (e.g. 500) answers that status with ``error`` or ``fatal_error``.
        """
        if status is None:
            status = 200 if error is not None else 429
        if error is None:
            error = "ratelimited" if status == 429 else "fatal_error"
        self._faults.add(
            lambda called: called == method, _Fault(status, error, retry_after if status == 429 else None), times
        )

    def stall_next(self, method: str, seconds: float, where: Callable[[JSON], bool] | None = None) -> None:
        """The next call of ``method`` (whose params match ``where``) is carried out at once but
        answered only after ``seconds``: what a client sees when it dies mid-request."""
        self._stalls.add(lambda call: call[0] == method and (where is None or where(call[1])), seconds)

    def clear_faults(self) -> None:
        """Forget every fault still pending from :meth:`fail_next`."""
        self._faults.clear()

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _reply(status: int, payload: JSON, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(payload).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: JSON = dict(request.query)
        raw = await request.read()
        ctype = request.content_type
        body_error: str | None = None
        if raw:
            if ctype == "application/json":
                try:
                    data = json.loads(raw)
                    if isinstance(data, dict):
                        params.update(data)
                    else:
                        body_error = "invalid_json"
                except ValueError:
                    body_error = "invalid_json"
            elif ctype == "application/x-www-form-urlencoded":
                params.update(dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)))
            elif ctype.startswith("multipart/"):
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        call = SlackCall(method, params, dict(request.headers), request.method)
        self.calls.append(call)

        headers = {"x-oauth-scopes": ",".join(sorted(self.scopes)), "x-accepted-oauth-scopes": ""}
        status = 200
        try:
            self._check_auth(request, params)
            if body_error is not None:
                raise SlackError(body_error)
            fault = self._faults.take(method)
            if fault is not None:
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                raise SlackError(fault.error, status=fault.status)
            handler = self.handlers.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            for key in _JSON_PARAMS:
                if isinstance(params.get(key), str):
                    try:
                        params[key] = json.loads(params[key])
                    except ValueError:
                        raise SlackError("invalid_blocks_format" if key == "blocks" else "invalid_arguments") from None
            payload: JSON = {"ok": True, **handler(params)}
            stall = self._stalls.take((method, params))
            if stall:
                await asyncio.sleep(stall)  # done, but the answer is late (or never comes)
        except SlackError as exc:
            status = exc.status
            payload = {"ok": False, "error": exc.error}
            if exc.error == "unknown_method":
                payload["req_method"] = method
            if exc.messages:
                payload["response_metadata"] = {"messages": exc.messages}
        call.status = status
        call.response = payload
        return self._reply(status, payload, headers)

    @staticmethod
    def _token(request: web.Request, params: JSON) -> Any:
        header = request.headers.get("Authorization", "")
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else params.get("token")

    def _check_auth(self, request: web.Request, params: JSON) -> None:
        token = self._token(request, params)
        if not token:
            raise SlackError("not_authed")
        if token != self.bot_token:
            raise SlackError("invalid_auth")

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        self.webhook_posts.append(WebhookPost(request.match_info["name"], body, dict(request.headers)))
        return web.Response(status=200, text="ok")
