"""Discord's REST API under the fake's ``/api/v10``: a table of routes to small handlers that
answer Discord's JSON or raise Discord's error (:class:`Refused`), the bot-token check, queued
429s with Discord's rate-limit headers, and the record of every call (CDN downloads too)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.common import FaultQueue
from tests.fakes.discord_world import (
    BOB,
    BOT_ID,
    BOT_USER,
    EPHEMERAL_FLAG,
    GUILD_ID,
    INTERACTION_DEADLINE_SECONDS,
    JSON,
    TOKEN_LIFETIME_SECONDS,
    DiscordWorld,
    FakeInteraction,
    FakeUser,
    InteractionResponse,
)

__all__ = ["RateLimit", "RecordedCall", "RestApi"]


@dataclass
class RecordedCall:
    """One HTTP request the bot made. ``path`` is relative to ``/api/v10`` (decoded), or the
    CDN path (``/cdn/...``) for attachment downloads."""

    method: str
    path: str
    json: Any
    query: dict[str, str]
    status: int
    at: float


@dataclass
class RateLimit:
    retry_after: float
    is_global: bool


_Handler = Callable[[web.Request, "re.Match[str]", Any], Any]
#: Path patterns of the REST routes, relative to ``/api/v10``.
_CHANNEL = r"/channels/(?P<channel>\d+)"
_MESSAGE = _CHANNEL + r"/messages/(?P<message>\d+)"
_OWN_REACTION = _MESSAGE + r"/reactions/(?P<emoji>[^/]+)/@me"
_WEBHOOK = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"


class RestApi:
    """The route table and what every request goes through; the handlers live in
    :class:`MessageRoutes` and :class:`InteractionRoutes` (and the static answers here)."""

    def __init__(self, world: DiscordWorld) -> None:
        self.world = world
        self.calls: list[RecordedCall] = []
        self.rate_limits: FaultQueue[tuple[str, str], RateLimit] = FaultQueue()
        routes: list[tuple[str, str, _Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            *MessageRoutes(world).routes,
            ("PUT", _OWN_REACTION, self._no_content),
            ("DELETE", _OWN_REACTION, self._no_content),
            ("POST", _CHANNEL + "/typing", self._no_content),
            *InteractionRoutes(world).routes,
            ("DELETE", _WEBHOOK + "/messages/@original", self._no_content),
        ]
        self._routes = [(method, re.compile(path), handler) for method, path, handler in routes]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = (
                json.loads(raw) if raw and request.content_type == "application/json" else raw.decode(errors="replace")
            )
        fault = self.rate_limits.take((request.method, path))
        if fault is not None:
            self._record(request, path, body, 429)
            return _rate_limited(fault)
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if method == request.method and match:
                if (
                    not path.startswith(("/interactions/", "/webhooks/"))
                    and request.headers.get("Authorization") != f"Bot {self.world.token}"
                ):
                    response = _json({"message": "401: Unauthorized", "code": 0}, 401)
                else:
                    response = await self._answer(handler(request, match, body))
                self._record(request, path, body, response.status)
                return response
        self._record(request, path, body, 404)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    @staticmethod
    async def _answer(handled: Awaitable[Any]) -> web.Response:
        """A handler's result as Discord's answer: JSON (200) unless it made its own response."""
        try:
            result = await handled
        except Refused as refused:
            return _json(refused.body, refused.status)
        return result if isinstance(result, web.Response) else _json(result)

    def _record(self, request: web.Request, path: str, body: Any, status: int) -> None:
        self.calls.append(RecordedCall(request.method, path, body, dict(request.query), status, time.monotonic()))

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.calls.append(RecordedCall("GET", path, None, dict(request.query), 200, time.monotonic()))
        if path not in self.world.files:
            return web.Response(status=404)
        data, content_type = self.world.files[path]
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def _get_me(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        return {**BOT_USER.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "bio": ""}

    async def _get_application(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        return {
            "id": BOT_ID,
            "name": "support-copilot",
            "icon": None,
            "description": "",
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 1 << 19,
            "team": None,
            "owner": BOB.payload(),
            "summary": "",
            "interactions_endpoint_url": None,
        }

    async def _get_gateway(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        return {"url": self.world.gateway_url}

    async def _get_gateway_bot(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return {"url": self.world.gateway_url, "shards": 1, "session_start_limit": limit}

    async def _no_content(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        return web.Response(status=204)


class MessageRoutes:
    """Channels, messages and threads: what the bot reads and posts, checked as Discord does
    (2,000 characters, nonce deduplication, one thread per message)."""

    def __init__(self, world: DiscordWorld) -> None:
        self.world = world
        self._nonces: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.routes: list[tuple[str, str, _Handler]] = [
            ("GET", _CHANNEL, self._get_channel),
            ("POST", _CHANNEL + "/messages", self._create_message),
            ("GET", _CHANNEL + "/messages", self._get_messages),
            ("GET", _MESSAGE, self._get_message),
            ("PATCH", _MESSAGE, self._edit_message),
            ("POST", _MESSAGE + "/threads", self._create_thread),
            ("POST", "/users/@me/channels", self._create_dm),
        ]

    async def _get_channel(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        return self.world.channels[self._channel_at(match)]

    async def _get_messages(self, request: web.Request, match: re.Match[str], body: Any) -> list[JSON]:
        """GET /channels/{id}/messages: newest first, ``limit`` 1-100 (default 50), paged with
        ``before`` / ``after``. Like Discord, fetched messages carry no ``nonce`` (only the
        create answer and the gateway's MESSAGE_CREATE do)."""
        channel_id = self._channel_at(match)
        try:
            limit = int(request.query.get("limit", "50"))
            before = int(request.query["before"]) if "before" in request.query else None
            after = int(request.query["after"]) if "after" in request.query else None
        except ValueError:
            raise _invalid_form() from None
        if not 1 <= limit <= 100:
            raise _invalid_form()
        found = [
            m
            for m in self.world.messages.values()
            if m["channel_id"] == channel_id
            and (before is None or int(m["id"]) < before)
            and (after is None or int(m["id"]) > after)
        ]
        found.sort(key=lambda m: int(m["id"]), reverse=after is None)
        page = found[:limit]
        if after is not None:
            page.reverse()
        return [{k: v for k, v in _public(m).items() if k != "nonce"} for m in page]

    async def _get_message(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        return self._message_at(match)

    async def _create_dm(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        """POST /users/@me/channels ``{recipient_id}``: the DM channel with that user, the same one
        every time. Discord opens it even for a user whose DMs are closed (posting is refused)."""
        recipient = str(body.get("recipient_id") or "") if isinstance(body, dict) else ""
        if not recipient.isdigit():
            raise _invalid_form()
        return self.world.channels[self.world.dm_channel(FakeUser(recipient, f"user{recipient}"))]

    async def _create_message(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        channel_id = self._channel_at(match)
        if not isinstance(body, dict):
            raise Refused(400, 50006, "Cannot send an empty message")
        channel = self.world.channels.get(channel_id, {})
        if channel.get("type") == 1 and channel["recipients"][0]["id"] in self.world.closed_dms:
            raise Refused(403, 50007, "Cannot send messages to this user")
        _check_message(body)
        nonce = body.get("nonce")
        now = time.monotonic()
        if nonce is not None and body.get("enforce_nonce"):
            if len(str(nonce)) > 25:
                raise _invalid_form()
            key = (channel_id, BOT_ID, str(nonce))
            seen = self._nonces.get(key)
            if seen is not None and now - seen[1] <= self.world.nonce_window_seconds:
                return _public(self.world.messages[seen[0]])
        reference = body.get("message_reference")
        reply_to = str(reference.get("message_id")) if isinstance(reference, dict) else None
        if reply_to is not None:
            target = self.world.messages.get(reply_to)
            if target is None or target["channel_id"] != channel_id:
                raise _invalid_form()  # unknown message
        message = self.world._message(
            channel_id,
            BOT_USER,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            nonce=str(nonce) if nonce is not None else None,
            flags=int(body.get("flags") or 0),
            reply_to=reply_to,
        )
        message["allowed_mentions"] = body.get("allowed_mentions")  # kept for assertions
        self.world.messages[message["id"]] = message
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(channel_id, BOT_ID, str(nonce))] = (message["id"], now)
        await self.world.dispatch("MESSAGE_CREATE", self.world._gateway_message(_public(message), BOT_USER))
        return _public(message)

    async def _edit_message(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        message = self._message_at(match)
        if message["author"]["id"] != BOT_ID:
            raise Refused(403, 50005, "Cannot edit a message authored by another user")
        body = body if isinstance(body, dict) else {}
        _check_message({**_public(message), **body})
        for key in ("content", "embeds", "components", "flags", "allowed_mentions"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        return _public(message)

    async def _create_thread(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        parent_id, message_id = match["channel"], match["message"]
        self._message_at(match)
        if message_id in self.world.channels:
            raise Refused(400, 160004, "A thread has already been created for this message")
        name = (body or {}).get("name", "")
        if not 1 <= len(name) <= 100:
            raise _invalid_form()
        now = datetime.now(UTC).isoformat()
        thread = {
            "id": message_id,  # a thread started from a message has the message's id
            "type": 11,
            "guild_id": GUILD_ID,
            "parent_id": parent_id,
            "owner_id": BOT_ID,
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": (body or {}).get("auto_archive_duration") or 4320,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }
        self.world.channels[message_id] = thread
        await self.world.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, 201)

    def _channel_at(self, match: re.Match[str]) -> str:
        if match["channel"] not in self.world.channels:
            raise _unknown("Channel", 10003)
        return match["channel"]

    def _message_at(self, match: re.Match[str]) -> JSON:
        message = self.world.messages.get(match["message"])
        if message is None or message["channel_id"] != match["channel"]:
            raise _unknown("Message", 10008)
        return message


class InteractionRoutes:
    """The answers to interactions: the callback (within 3 s, once), follow-ups and edits of the
    original response (by the interaction's token, for 15 minutes)."""

    def __init__(self, world: DiscordWorld) -> None:
        self.world = world
        self.routes: list[tuple[str, str, _Handler]] = [
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("POST", _WEBHOOK, self._followup),
            ("PATCH", _WEBHOOK + "/messages/@original", self._edit_original),
        ]

    async def _callback(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        interaction = self.world.interactions.get(match["id"])
        now = time.monotonic()
        if interaction is None or interaction.token != match["token"]:
            raise _unknown("interaction", 10062)
        if now - interaction.dispatched_at > INTERACTION_DEADLINE_SECONDS:
            raise _unknown("interaction", 10062)
        if interaction.responses:
            raise Refused(400, 40060, "Interaction has already been acknowledged.")
        body = body if isinstance(body, dict) else {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        interaction.responses.append(InteractionResponse(kind, data, now))
        answer: JSON = {
            "interaction": {
                "id": interaction.id,
                "type": interaction.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL_FLAG),
            }
        }
        if kind == 4:
            message = self.world._message(
                interaction.payload["channel_id"],
                BOT_USER,
                data.get("content") or "",
                flags=int(data.get("flags") or 0),
                webhook_id=BOT_ID,
            )
            interaction.followups.append(message)
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"] = {"type": 4, "message": message}
        return answer

    async def _followup(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        interaction = self._answered_interaction(match)
        body = body if isinstance(body, dict) else {}
        _check_message(body)
        message = self.world._message(
            interaction.payload["channel_id"],
            BOT_USER,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            flags=int(body.get("flags") or 0),
            webhook_id=BOT_ID,
        )
        interaction.followups.append(message)
        return message

    async def _edit_original(self, request: web.Request, match: re.Match[str], body: Any) -> JSON:
        interaction = self._answered_interaction(match)
        message = self.world._message(interaction.payload["channel_id"], BOT_USER, (body or {}).get("content") or "")
        interaction.followups.append(message)
        return message

    def _answered_interaction(self, match: re.Match[str]) -> FakeInteraction:
        """The interaction a webhook call names by token (within the token's lifetime), once answered."""
        interaction = next((i for i in self.world.interactions.values() if i.token == match["token"]), None)
        if interaction is None or time.monotonic() - interaction.dispatched_at > TOKEN_LIFETIME_SECONDS:
            raise _unknown("Webhook", 10015)
        if match["app"] != BOT_ID or not interaction.responses:
            raise _unknown("Webhook", 10015)
        return interaction


def _public(message: JSON) -> JSON:
    return {k: v for k, v in message.items() if k != "allowed_mentions"}


class Refused(Exception):
    """Discord's error answer: ``{"message", "code"}`` (and ``errors``) with an HTTP status."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"message": message, "code": code} | ({"errors": errors} if errors else {})


def _unknown(what: str, code: int) -> Refused:
    return Refused(404, code, f"Unknown {what}")


def _invalid_form(errors: JSON | None = None) -> Refused:
    return Refused(400, 50035, "Invalid Form Body", errors)


def _check_message(body: Mapping[str, Any]) -> None:
    """Refuse a message body as Discord does: too long, empty, or embeds past their limits."""
    content = body.get("content") or ""
    if len(content) > 2000:
        too_long = {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
        raise _invalid_form({"content": {"_errors": [too_long]}})
    embeds = body.get("embeds") or []
    if not content and not embeds and not body.get("components") and not body.get("attachments"):
        raise Refused(400, 50006, "Cannot send an empty message")
    for embed in embeds:
        if len(embed.get("description") or "") > 4096 or len(embed.get("fields") or []) > 25:
            raise _invalid_form()
        if any(len(f.get("value") or "") > 1024 or not f.get("value") for f in embed.get("fields") or []):
            raise _invalid_form()
    total = sum(
        len(e.get("title") or "")
        + len(e.get("description") or "")
        + sum(len(f.get("name") or "") + len(f.get("value") or "") for f in e.get("fields") or [])
        + len((e.get("footer") or {}).get("text") or "")
        + len((e.get("author") or {}).get("name") or "")
        for e in embeds
    )
    if total > 6000:
        raise _invalid_form()


def _rate_limited(fault: RateLimit) -> web.Response:
    reset_after = f"{fault.retry_after:.3f}"
    headers = {
        "Retry-After": str(max(1, round(fault.retry_after))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
        "X-RateLimit-Reset-After": reset_after,
        "X-RateLimit-Bucket": "fake-bucket",
        "X-RateLimit-Scope": "global" if fault.is_global else "user",
        "Via": "1.1 google",  # without it discord.py takes a 429 for a Cloudflare ban
    }
    if fault.is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {
        "message": "You are being rate limited.",
        "retry_after": fault.retry_after,
        "global": fault.is_global,
    }
    return _json(body, 429, headers)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly "application/json".
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
