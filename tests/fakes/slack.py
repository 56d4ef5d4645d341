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
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiohttp import web

from bot.evaluation.simulator import LoopbackServer
from tests.fakes.slack_payloads import next_ts, observe_ts

__all__ = ["EMAIL_SCOPES", "FakeSlack", "SlackCall", "WebhookPost", "validate_blocks", "validate_view"]

JSON: TypeAlias = dict[str, Any]

_JSON_PARAMS = ("blocks", "attachments", "metadata", "view")
_BLOCK_TYPES = {
    "actions",
    "call",
    "context",
    "context_actions",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}
_ELEMENT_TYPES = {
    "button",
    "channels_select",
    "checkboxes",
    "conversations_select",
    "datepicker",
    "datetimepicker",
    "email_text_input",
    "external_select",
    "feedback_buttons",
    "file_input",
    "icon_button",
    "image",
    "multi_channels_select",
    "multi_conversations_select",
    "multi_external_select",
    "multi_static_select",
    "multi_users_select",
    "number_input",
    "overflow",
    "plain_text_input",
    "radio_buttons",
    "rich_text_input",
    "static_select",
    "timepicker",
    "url_text_input",
    "users_select",
    "workflow_button",
}
#: The bot token's scopes by default: what ``deploy/slack-manifest.yaml`` asks for (plus a few
#: read scopes), so no ``users:read`` / ``users:read.email``: add them to ``FakeSlack.scopes`` for a
#: workspace installed from ``deploy/slack-manifest-email-match.yaml``.
_SCOPES = (
    "app_mentions:read,channels:history,groups:history,im:history,chat:write,reactions:write,"
    "channels:read,groups:read,usergroups:read,im:write,files:read"
)
EMAIL_SCOPES = frozenset({"users:read", "users:read.email"})


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


class _SlackError(Exception):
    def __init__(self, error: str, messages: list[str] | None = None, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
        self.status = status


@dataclass
class _Fault:
    method: str
    status: int
    error: str
    retry_after: int | None
    times: int


# --------------------------------------------------------------------------------------------------
# Block Kit validation (limits from reference slack.md §4.3)
# --------------------------------------------------------------------------------------------------


def _text_object(obj: Any, ptr: str, max_len: int, errs: list[str], plain_only: bool = False) -> None:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed or not isinstance(obj.get("text"), str):
        errs.append(f"[ERROR] must provide an object with type {' or '.join(allowed)} [json-pointer:{ptr}]")
        return
    text = obj["text"]
    if not text:
        errs.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
    elif len(text) > max_len:
        errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]")


def _max_len(obj: JSON, key: str, max_len: int, ptr: str, errs: list[str]) -> None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > max_len):
        errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/{key}]")


def _confirm(obj: Any, ptr: str, errs: list[str]) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
        return
    for key, limit in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
        if key in obj:
            _text_object(obj[key], f"{ptr}/{key}", limit, errs, plain_only=key != "text")
        elif key != "deny":
            errs.append(f"[ERROR] missing required field: {key} [json-pointer:{ptr}]")


def _element(el: Any, ptr: str, errs: list[str]) -> None:
    if not isinstance(el, dict) or el.get("type") not in _ELEMENT_TYPES:
        errs.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{ptr}]")
        return
    _max_len(el, "action_id", 255, ptr, errs)
    kind = el["type"]
    if kind == "button":
        _text_object(el.get("text"), f"{ptr}/text", 75, errs, plain_only=True)
        _max_len(el, "value", 2000, ptr, errs)
        _max_len(el, "url", 3000, ptr, errs)
        if el.get("style") not in (None, "primary", "danger"):
            errs.append(f"[ERROR] must be one of primary, danger [json-pointer:{ptr}/style]")
        _confirm(el.get("confirm"), f"{ptr}/confirm", errs)
    elif kind == "plain_text_input":
        max_length = el.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or not 1 <= max_length <= 3000):
            errs.append(f"[ERROR] must be between 1 and 3000 [json-pointer:{ptr}/max_length]")
            max_length = None
        min_length = el.get("min_length")
        if min_length is not None and (not isinstance(min_length, int) or not 0 <= min_length <= 3000):
            errs.append(f"[ERROR] must be between 0 and 3000 [json-pointer:{ptr}/min_length]")
        _max_len(el, "initial_value", max_length or 3000, ptr, errs)
        if "placeholder" in el:
            _text_object(el["placeholder"], f"{ptr}/placeholder", 150, errs, plain_only=True)
    elif kind in ("static_select", "multi_static_select", "overflow", "radio_buttons", "checkboxes"):
        options = el.get("options")
        if options is not None:
            if not isinstance(options, list) or len(options) > 100:
                errs.append(f"[ERROR] no more than 100 items allowed [json-pointer:{ptr}/options]")
            else:
                for i, option in enumerate(options):
                    if not isinstance(option, dict):
                        errs.append(f"[ERROR] must be an object [json-pointer:{ptr}/options/{i}]")
                        continue
                    _text_object(option.get("text"), f"{ptr}/options/{i}/text", 75, errs)
                    _max_len(option, "value", 150, f"{ptr}/options/{i}", errs)


def validate_blocks(blocks: Any, ptr: str = "/blocks", max_blocks: int = 50) -> list[str]:
    """Slack-style ``[ERROR] ... [json-pointer:...]`` messages for invalid Block Kit (empty if valid)."""
    errs: list[str] = []
    if not isinstance(blocks, list):
        return [f"[ERROR] must be an array [json-pointer:{ptr}]"]
    if len(blocks) > max_blocks:
        errs.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:{ptr}]")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        bp = f"{ptr}/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            errs.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{bp}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255:
                errs.append(f"[ERROR] must be less than 256 characters [json-pointer:{bp}/block_id]")
            elif block_id in block_ids:
                errs.append(f"[ERROR] duplicate block_id: {block_id} [json-pointer:{bp}/block_id]")
            else:
                block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errs.append(f"[ERROR] must provide text or fields [json-pointer:{bp}]")
            if "text" in block:
                _text_object(block["text"], f"{bp}/text", 3000, errs)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    errs.append(f"[ERROR] no more than 10 items allowed [json-pointer:{bp}/fields]")
                else:
                    for j, item in enumerate(fields):
                        _text_object(item, f"{bp}/fields/{j}", 2000, errs)
            if "accessory" in block:
                _element(block["accessory"], f"{bp}/accessory", errs)
        elif kind == "header":
            _text_object(block.get("text"), f"{bp}/text", 150, errs, plain_only=True)
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text or len(text) > 12000:
                errs.append(f"[ERROR] must be between 1 and 12000 characters [json-pointer:{bp}/text]")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                errs.append(f"[ERROR] must have between 1 and 25 items [json-pointer:{bp}/elements]")
                continue
            action_ids: set[str] = set()
            for j, el in enumerate(elements):
                _element(el, f"{bp}/elements/{j}", errs)
                action_id = el.get("action_id") if isinstance(el, dict) else None
                if isinstance(action_id, str):
                    if action_id in action_ids:
                        errs.append(f"[ERROR] duplicate action_id: {action_id} [json-pointer:{bp}/elements/{j}]")
                    action_ids.add(action_id)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errs.append(f"[ERROR] must have between 1 and 10 items [json-pointer:{bp}/elements]")
                continue
            for j, el in enumerate(elements):
                if isinstance(el, dict) and el.get("type") == "image":
                    continue
                _text_object(el, f"{bp}/elements/{j}", 3000, errs)
        elif kind == "input":
            _text_object(block.get("label"), f"{bp}/label", 2000, errs, plain_only=True)
            if "element" not in block:
                errs.append(f"[ERROR] missing required field: element [json-pointer:{bp}]")
            else:
                _element(block["element"], f"{bp}/element", errs)
            if "hint" in block:
                _text_object(block["hint"], f"{bp}/hint", 2000, errs, plain_only=True)
        elif kind == "image":
            _max_len(block, "image_url", 3000, bp, errs)
            alt = block.get("alt_text")
            if not isinstance(alt, str) or not alt or len(alt) > 2000:
                errs.append(f"[ERROR] must be between 1 and 2000 characters [json-pointer:{bp}/alt_text]")
    return errs


def validate_view(view: Any) -> list[str]:
    """Slack-style messages for an invalid modal/home view (empty if valid)."""
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        return ["[ERROR] must be a view object with type modal or home [json-pointer:/view]"]
    errs: list[str] = []
    if view["type"] == "modal":
        if "title" not in view:
            errs.append("[ERROR] missing required field: title [json-pointer:/view]")
        else:
            _text_object(view["title"], "/view/title", 24, errs, plain_only=True)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            _text_object(view[key], f"/view/{key}", 24, errs, plain_only=True)
    _max_len(view, "private_metadata", 3000, "/view", errs)
    _max_len(view, "callback_id", 255, "/view", errs)
    _max_len(view, "external_id", 255, "/view", errs)
    blocks = view.get("blocks")
    if blocks is None:
        errs.append("[ERROR] missing required field: blocks [json-pointer:/view]")
    else:
        errs.extend(validate_blocks(blocks, "/view/blocks", max_blocks=100))
        if (
            view["type"] == "modal"
            and isinstance(blocks, list)
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
            and view.get("submit") is None
        ):
            errs.append("[ERROR] submit is required when the view has input blocks [json-pointer:/view/submit]")
    return errs


def _copy(value: JSON) -> JSON:
    """A deep, JSON-faithful copy (what a client would see)."""
    copied: JSON = json.loads(json.dumps(value))
    return copied


def _truthy(value: Any) -> bool:
    return value is True or value in ("1", "true", "True", 1)


def _blocks_text_length(value: Any) -> int:
    if isinstance(value, dict):
        total = len(value["text"]) if isinstance(value.get("text"), str) else 0
        return total + sum(_blocks_text_length(v) for k, v in value.items() if k != "text")
    if isinstance(value, list):
        return sum(_blocks_text_length(v) for v in value)
    return 0


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class FakeSlack:
    """Fake Slack Web API on ``http://127.0.0.1:<port>/api/``; an async context manager.

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
        self.bot_token = bot_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.app_id = app_id
        self.team_domain = team_domain
        self.strict = strict
        self.scopes: set[str] = set(_SCOPES.split(","))
        self.strict_metadata = False
        self.max_text_length = 40_000
        self.max_blocks_text = 13_200
        self.max_metadata_bytes = 4_000
        self.calls: list[SlackCall] = []
        self.webhook_posts: list[WebhookPost] = []
        self.ephemerals: list[JSON] = []
        self.views: dict[str, JSON] = {}
        self.reactions: list[tuple[str, str, str]] = []
        self.usergroups: dict[str, list[str]] = {}
        self.users: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        #: ``conversations.members`` per channel (the review channel's agents, say).
        self.members: dict[str, list[str]] = {}
        self.add_user("U222", "customer.carol", real_name="Carol Customer", email="carol@customer.example")
        self.add_user("U333", "agent.alice", real_name="Alice Agent", email="alice@support.example")
        self.add_user(bot_user_id, "supportbot", real_name="Support Copilot", is_bot=True)
        self.add_channel("C111", "customer-acme", is_ext_shared=True)
        self.add_channel("C999", "support-drafts")
        self._messages: dict[str, list[JSON]] = {}
        self._faults: list[_Fault] = []
        self._stalls: list[tuple[str, float, Callable[[JSON], bool] | None]] = []
        self._view_counter = 0
        self._server: LoopbackServer | None = None
        self.port = 0
        self.base_url = ""
        self.handlers: dict[str, Callable[[JSON], JSON]] = {
            "api.test": lambda p: {"args": {k: v for k, v in p.items() if k != "token"}},
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.replies": self._replies,
            "conversations.history": self._history,
            "conversations.members": self._conversations_members,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroup_users,
            "usergroups.list": self._usergroups_list,
            "assistant.threads.setStatus": lambda p: {},
        }

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls_to(method) if where is None or where(c.params)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = [(c.method, c.response and c.response.get("error")) for c in self.calls]
                raise AssertionError(
                    f"expected {count} call(s) to {method}, got {len(found)} within {timeout}s; calls: {seen}"
                )
            await asyncio.sleep(0.01)

    async def wait_for_webhook(self, name: str, count: int = 1, timeout: float = 5.0) -> list[WebhookPost]:
        """Poll until at least ``count`` posts reached ``response_url(name)``."""
        deadline = time.monotonic() + timeout
        while len(self.webhook_posts_to(name)) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} post(s) to webhook {name!r}, got {self.webhook_posts}")
            await asyncio.sleep(0.01)
        return self.webhook_posts_to(name)

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
        self._faults.append(_Fault(method, status, error, retry_after if status == 429 else None, times))

    def stall_next(self, method: str, seconds: float, where: Callable[[JSON], bool] | None = None) -> None:
        """The next call of ``method`` (whose params match ``where``) is carried out at once but
        answered only after ``seconds``: what a client sees when it dies mid-request."""
        self._stalls.append((method, seconds, where))

    def _take_stall(self, method: str, params: JSON) -> float:
        for stall in self._stalls:
            if stall[0] == method and (stall[2] is None or stall[2](params)):
                self._stalls.remove(stall)
                return stall[1]
        return 0.0

    def messages_in(self, channel: str, thread_ts: str | None = None) -> list[JSON]:
        """Stored messages in ts order: the whole channel, or one thread (parent first)."""
        stored = sorted(self._messages.get(channel, []), key=lambda m: float(m["ts"]))
        if thread_ts is None:
            return stored
        return [m for m in stored if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def clear_faults(self) -> None:
        """Forget every fault still pending from :meth:`fail_next`."""
        self._faults.clear()

    def find_message(self, channel: str, ts: str) -> JSON | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    def add_message(
        self,
        channel: str,
        text: str,
        user: str | None = "U222",
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> JSON:
        """Seed a message as if someone posted it (returns the stored dict)."""
        if ts is None:
            ts = next_ts()
        else:
            observe_ts(ts)
        msg: JSON = {"type": "message", "ts": ts, "text": text, "team": self.team_id}
        if user is not None:
            msg["user"] = user
        if thread_ts is not None and thread_ts != ts:
            msg["thread_ts"] = thread_ts
            parent = self.find_message(channel, thread_ts)
            msg["parent_user_id"] = (parent or {}).get("user", user)
        msg.update(extra)
        existing = self.find_message(channel, ts)
        if existing is not None:
            existing.update(msg)
            return existing
        self._messages.setdefault(channel, []).append(msg)
        return msg

    def ingest_event(self, envelope: JSON) -> None:
        """Mirror an Events API envelope into the stored history (used by ``SlackSender(mirror_to=)``)."""
        event = envelope.get("event") or {}
        channel = event.get("channel")
        if event.get("type") not in ("message", "app_mention") or not isinstance(channel, str):
            return
        subtype = event.get("subtype")
        if subtype == "message_changed":
            inner = event.get("message") or {}
            found = self.find_message(channel, str(inner.get("ts")))
            if found is not None:
                found.update({k: v for k, v in inner.items() if k != "ts"})
            return
        if subtype == "message_deleted":
            deleted = event.get("deleted_ts")
            self._messages[channel] = [m for m in self._messages.get(channel, []) if m["ts"] != deleted]
            return
        if event.get("edited") and (found := self.find_message(channel, str(event.get("ts")))) is not None:
            found["text"] = event.get("text", "")  # an edited app_mention re-sent: the same message
            return
        extra = {
            k: v
            for k, v in event.items()
            if k not in ("type", "ts", "text", "user", "thread_ts", "channel", "event_ts", "channel_type")
        }
        self.add_message(
            channel, event.get("text", ""), event.get("user"), event["ts"], event.get("thread_ts"), **extra
        )

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
        tz: str = "America/Los_Angeles",
        locale: str = "en-US",
    ) -> JSON:
        """Add or replace a ``users.info`` entry."""
        real = real_name or name
        profile: JSON = {"real_name": real, "display_name": name, "image_72": "https://example.invalid/a.png"}
        if email is not None:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_offset": -28800,
            "is_bot": is_bot,
            "is_admin": False,
            "is_app_user": False,
            "updated": 1700000000,
            "profile": profile,
            "_locale": locale,
        }
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False, is_ext_shared: bool = False) -> JSON:
        """Add or replace a ``conversations.info`` entry."""
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_private,
            "is_group": is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": is_private,
            "created": 1700000000,
            "is_archived": False,
            "is_general": False,
            "is_shared": is_ext_shared,
            "is_ext_shared": is_ext_shared,
            "is_org_shared": False,
            "is_member": True,
            "creator": "U333",
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }
        self.channels[channel_id] = channel
        return channel

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
                raise _SlackError(body_error)
            fault = next((f for f in self._faults if f.method == method), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                raise _SlackError(fault.error, status=fault.status)
            handler = self.handlers.get(method)
            if handler is None:
                raise _SlackError("unknown_method")
            for key in _JSON_PARAMS:
                if isinstance(params.get(key), str):
                    try:
                        params[key] = json.loads(params[key])
                    except ValueError:
                        raise _SlackError("invalid_blocks_format" if key == "blocks" else "invalid_arguments") from None
            payload: JSON = {"ok": True, **handler(params)}
            stall = self._take_stall(method, params)
            if stall:
                await asyncio.sleep(stall)  # done, but the answer is late (or never comes)
        except _SlackError as exc:
            status = exc.status
            payload = {"ok": False, "error": exc.error}
            if exc.error == "unknown_method":
                payload["req_method"] = method
            if exc.messages:
                payload["response_metadata"] = {"messages": exc.messages}
        call.status = status
        call.response = payload
        return self._reply(status, payload, headers)

    def _check_auth(self, request: web.Request, params: JSON) -> None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else params.get("token")
        if not token:
            raise _SlackError("not_authed")
        if token != self.bot_token:
            raise _SlackError("invalid_auth")

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        self.webhook_posts.append(WebhookPost(request.match_info["name"], body, dict(request.headers)))
        return web.Response(status=200, text="ok")

    # ------------------------------------------------------------------ method helpers

    def _channel(self, params: JSON, key: str = "channel") -> str:
        channel = params.get(key)
        if not isinstance(channel, str) or not channel:
            raise _SlackError("channel_not_found")
        if channel[0] in "UW":  # posting to a user id opens (or reuses) the DM
            return "D" + channel[1:]
        return channel

    def _message_content(self, params: JSON, require: bool = True) -> tuple[str | None, Any, JSON | None, list[str]]:
        """Validate text/blocks/metadata; returns (text, blocks, metadata, warnings)."""
        text = params.get("text")
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if require and not text and not blocks and not attachments:
            raise _SlackError("no_text")
        if text is not None and len(text) > self.max_text_length:
            raise _SlackError("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise _SlackError("invalid_blocks_format")
            errs = validate_blocks(blocks)
            if errs:
                raise _SlackError("invalid_blocks", errs)
            if _blocks_text_length(blocks) > self.max_blocks_text:
                raise _SlackError("msg_blocks_too_long")
        warnings: list[str] = []
        metadata = params.get("metadata")
        if metadata is not None:
            if (
                not isinstance(metadata, dict)
                or not isinstance(metadata.get("event_type"), str)
                or not metadata["event_type"]
                or not isinstance(metadata.get("event_payload", {}), dict)
            ):
                raise _SlackError("invalid_metadata_format")
            size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
            if size > self.max_metadata_bytes:
                if self.strict_metadata:
                    raise _SlackError("metadata_too_large")
                warnings.append("metadata_too_large")
                metadata = None
        return text, blocks, metadata, warnings

    def _with_block_ids(self, blocks: list[JSON]) -> list[JSON]:
        return [{"block_id": uuid.uuid4().hex[:5], **block} for block in blocks]

    def _bot_message(self, ts: str, text: str | None, blocks: Any, metadata: JSON | None, params: JSON) -> JSON:
        msg: JSON = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": ts,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text if text else "This content can't be displayed.",
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": "Support Copilot",
                "deleted": False,
                "team_id": self.team_id,
            },
        }
        if blocks:
            msg["blocks"] = self._with_block_ids(blocks)
        if params.get("attachments"):
            msg["attachments"] = params["attachments"]
        if metadata is not None:
            msg["metadata"] = {
                "event_type": metadata["event_type"],
                "event_payload": metadata.get("event_payload", {}),
            }
        return msg

    @staticmethod
    def _warn(payload: JSON, warnings: list[str]) -> JSON:
        if warnings:
            payload["warning"] = ",".join(warnings)
            payload["response_metadata"] = {"warnings": warnings}
        return payload

    def _present(self, msg: JSON, channel: str, include_metadata: bool) -> JSON:
        out = {k: v for k, v in msg.items() if k != "metadata" or include_metadata}
        replies = [m for m in self._messages.get(channel, []) if m.get("thread_ts") == msg["ts"] and m is not msg]
        if replies:
            users = sorted({str(m.get("user") or m.get("bot_id")) for m in replies})
            out.update(
                thread_ts=msg["ts"],
                reply_count=len(replies),
                reply_users_count=len(users),
                latest_reply=max((m["ts"] for m in replies), key=float),
                reply_users=users,
                is_locked=False,
                subscribed=False,
            )
        return _copy(out)

    def _require_message(self, channel: str, ts: Any) -> JSON:
        msg = self.find_message(channel, ts) if isinstance(ts, str) else None
        if msg is None:
            raise _SlackError("message_not_found")
        return msg

    # ------------------------------------------------------------------ methods

    def _auth_test(self, params: JSON) -> JSON:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain.capitalize(),
            "user": "supportbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: JSON) -> JSON:
        channel = self._channel(params)
        text, blocks, metadata, warnings = self._message_content(params)
        ts = next_ts()
        msg = self._bot_message(ts, text, blocks, metadata, params)
        thread_ts = params.get("thread_ts")
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
            parent = self.find_message(channel, str(thread_ts))
            msg["parent_user_id"] = (parent or {}).get("user", self.bot_user_id)
            if _truthy(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
        self._messages.setdefault(channel, []).append(msg)
        return self._warn({"channel": channel, "ts": ts, "message": _copy(msg)}, warnings)

    def _update(self, params: JSON) -> JSON:
        channel = self._channel(params)
        msg = self._require_message(channel, params.get("ts"))
        if msg.get("bot_id") != self.bot_id:
            raise _SlackError("cant_update_message")
        text, blocks, metadata, warnings = self._message_content(params, require=False)
        if text is None and blocks is None and params.get("attachments") is None:
            raise _SlackError("no_text")
        if blocks is not None:
            if blocks:
                msg["blocks"] = self._with_block_ids(blocks)
            else:
                msg.pop("blocks", None)
        if text is not None:
            msg["text"] = text or "This content can't be displayed."
        if params.get("attachments") is not None:
            msg["attachments"] = params["attachments"]
        if metadata is not None:
            msg["metadata"] = {
                "event_type": metadata["event_type"],
                "event_payload": metadata.get("event_payload", {}),
            }
        msg["edited"] = {"user": self.bot_user_id, "ts": next_ts()}
        return self._warn(
            {
                "channel": channel,
                "ts": msg["ts"],
                "text": msg["text"],
                "message": _copy(msg),
            },
            warnings,
        )

    def _post_ephemeral(self, params: JSON) -> JSON:
        channel = self._channel(params)
        user = params.get("user")
        if not isinstance(user, str) or not user:
            raise _SlackError("user_not_found")
        text, blocks, _, _ = self._message_content(params)
        ts = next_ts()
        msg = self._bot_message(ts, text, blocks, None, params)
        msg.update(channel=channel, recipient=user)
        if params.get("thread_ts"):
            msg["thread_ts"] = str(params["thread_ts"])
        self.ephemerals.append(msg)
        return {"message_ts": ts}

    def _check_view(self, view: Any) -> JSON:
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments", ["[ERROR] missing required field: view [json-pointer:/view]"])
        if len(json.dumps(view).encode()) > 250_000:
            raise _SlackError("view_too_large")
        errs = validate_view(view)
        if errs:
            raise _SlackError("invalid_arguments", errs)
        return view

    def _store_view(self, view: JSON, view_id: str, previous: JSON | None) -> JSON:
        stored: JSON = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": self._with_block_ids(view.get("blocks") or []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": (previous or {}).get("root_view_id", view_id),
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        return _copy(stored)

    def _views_open(self, params: JSON) -> JSON:
        trigger_id = params.get("trigger_id")
        if not isinstance(trigger_id, str) or not trigger_id:
            raise _SlackError("invalid_trigger_id")
        view = self._check_view(params.get("view"))
        self._view_counter += 1
        return {"view": self._store_view(view, f"V{self._view_counter:010d}", None)}

    def _reaction_target(self, params: JSON) -> tuple[str, str, str, JSON | None]:
        channel = self._channel(params)
        name = params.get("name")
        ts = params.get("timestamp")
        if not isinstance(name, str) or not name:
            raise _SlackError("invalid_name")
        if not isinstance(ts, str) or not ts:
            raise _SlackError("bad_timestamp")
        msg = self.find_message(channel, ts)
        if msg is None and self.strict:
            raise _SlackError("message_not_found")
        return channel, ts, name.strip(":"), msg

    def _reactions_add(self, params: JSON) -> JSON:
        channel, ts, name, msg = self._reaction_target(params)
        if (channel, ts, name) in self.reactions:
            raise _SlackError("already_reacted")
        self.reactions.append((channel, ts, name))
        if msg is not None:
            msg.setdefault("reactions", []).append({"name": name, "users": [self.bot_user_id], "count": 1})
        return {}

    def _reactions_remove(self, params: JSON) -> JSON:
        channel, ts, name, msg = self._reaction_target(params)
        if (channel, ts, name) not in self.reactions:
            raise _SlackError("no_reaction")
        self.reactions.remove((channel, ts, name))
        if msg is not None:
            msg["reactions"] = [r for r in msg.get("reactions", []) if r["name"] != name]
            if not msg["reactions"]:
                del msg["reactions"]
        return {}

    @staticmethod
    def _page(items: list[JSON], params: JSON, default_limit: int) -> tuple[list[JSON], JSON]:
        try:
            limit = int(params.get("limit") or default_limit)
            offset = int(params.get("cursor") or 0) if str(params.get("cursor") or "0").isdigit() else 0
        except ValueError as exc:
            raise _SlackError("invalid_arguments") from exc
        page = items[offset : offset + max(limit, 1)]
        more = offset + len(page) < len(items)
        return page, {
            "has_more": more,
            "response_metadata": {"next_cursor": str(offset + len(page)) if more else ""},
        }

    @staticmethod
    def _in_range(msgs: list[JSON], params: JSON) -> list[JSON]:
        inclusive = _truthy(params.get("inclusive"))
        oldest, latest = params.get("oldest"), params.get("latest")
        out = []
        for m in msgs:
            ts = float(m["ts"])
            if oldest and (ts < float(oldest) or (ts == float(oldest) and not inclusive)):
                continue
            if latest and (ts > float(latest) or (ts == float(latest) and not inclusive)):
                continue
            out.append(m)
        return out

    def _replies(self, params: JSON) -> JSON:
        channel = self._channel(params)
        ts = params.get("ts")
        if not isinstance(ts, str) or not ts:
            raise _SlackError("thread_not_found")
        anchor = self.find_message(channel, ts)
        thread_ts = (anchor or {}).get("thread_ts") or ts
        msgs = self.messages_in(channel, thread_ts)
        if not msgs:
            raise _SlackError("thread_not_found")
        include_metadata = _truthy(params.get("include_all_metadata"))
        # The parent is always first; oldest/latest filter only the replies.
        parent, rest = (msgs[0], msgs[1:]) if msgs[0]["ts"] == thread_ts else (None, msgs)
        ordered = ([parent] if parent else []) + self._in_range(rest, params)
        page, extra = self._page(ordered, params, 1000)
        return {"messages": [self._present(m, channel, include_metadata) for m in page], **extra}

    def _history(self, params: JSON) -> JSON:
        channel = self._channel(params)
        include_metadata = _truthy(params.get("include_all_metadata"))
        top = [
            m
            for m in self.messages_in(channel)
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]
        newest_first = list(reversed(self._in_range(top, params)))
        page, extra = self._page(newest_first, params, 100)
        return {
            "messages": [self._present(m, channel, include_metadata) for m in page],
            "pin_count": 0,
            **extra,
        }

    def _conversations_members(self, params: JSON) -> JSON:
        channel = self._channel(params)
        if "channels:read" not in self.scopes and "groups:read" not in self.scopes:
            raise _SlackError("missing_scope")
        if channel not in self.channels:
            raise _SlackError("channel_not_found")
        page, extra = self._page([{"id": m} for m in self.members.get(channel, [])], params, 100)
        return {"members": [m["id"] for m in page], **extra}

    def _conversations_info(self, params: JSON) -> JSON:
        channel = self._channel(params)
        if channel not in self.channels:
            raise _SlackError("channel_not_found")
        info = self.channels[channel]
        needed = "groups:read" if info["is_private"] else "channels:read"
        if needed not in self.scopes:
            raise _SlackError("missing_scope")
        return {"channel": _copy(info)}

    def _user_json(self, user_id: str, include_locale: bool) -> JSON:
        user = _copy({k: v for k, v in self.users[user_id].items() if k != "_locale"})
        if "users:read.email" not in self.scopes:
            user["profile"].pop("email", None)
        if include_locale:
            user["locale"] = self.users[user_id]["_locale"]
        return _copy(user)

    def _users_info(self, params: JSON) -> JSON:
        if "users:read" not in self.scopes:
            raise _SlackError("missing_scope")
        user_id = params.get("user")
        if not isinstance(user_id, str) or not user_id:
            raise _SlackError("user_not_found")
        if user_id not in self.users:
            if self.strict or user_id[0] not in "UW":
                raise _SlackError("user_not_found")
            self.add_user(user_id, user_id.lower())
        return {"user": self._user_json(user_id, _truthy(params.get("include_locale")))}

    def _usergroups_list(self, params: JSON) -> JSON:
        with_users = _truthy(params.get("include_users"))
        groups = []
        for group_id, members in sorted(self.usergroups.items()):
            group: JSON = {"id": group_id, "team_id": self.team_id, "handle": group_id.lower(), "is_usergroup": True}
            if with_users:
                group["users"] = list(members)
                group["user_count"] = len(members)
            groups.append(group)
        return {"usergroups": groups}

    def _usergroup_users(self, params: JSON) -> JSON:
        group = params.get("usergroup")
        if not isinstance(group, str) or group not in self.usergroups:
            raise _SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}
