"""A loopback fake of Discord: REST API, gateway WebSocket and attachment CDN in one aiohttp app.

Point the bot at it with ``DISCORD_API_URL=fake.api_url``; ``GET /gateway/bot`` answers this
server's WebSocket URL, so discord.py connects its gateway here too. Payloads follow Discord's
own shapes (reference ``discord.md`` §4), answers carry ``Content-Type: application/json``
exactly (discord.py parses nothing else), and input is checked the way Discord does (2,000
characters, nonce deduplication, the 3 s interaction deadline, one thread per message).

Usage::

    async with FakeDiscord() as fake:
        ...  # start the adapter with discord_api_url=fake.api_url, discord_bot_token=fake.token
        message = await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> hi", mention_bot=True)
        [call] = await fake.wait_for("POST", r"/channels/\\d+/messages/\\d+/threads")
        fake.rate_limit_next("POST", r"/channels/\\d+/messages", retry_after=0.2)
        click = await fake.click(card_message_id, "supportbot:approve:d-1", BOB)
        await fake.wait_for_response(click)

World: one guild (``GUILD_ID``, "Acme Community") with ``#support`` (customers) and
``#staff-review`` (agents), the roles ``@everyone``, ``agents`` and the bot's managed role, and
the users ``ALICE`` (customer), ``BOB`` (agent), ``HELPER_BOT`` (another bot).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiohttp import WSMsgType, web

from bot.evaluation.simulator import LoopbackServer

__all__ = [
    "AGENT_ROLE_ID",
    "ALICE",
    "BOB",
    "BOT_ID",
    "BOT_ROLE_ID",
    "GUILD_ID",
    "HELPER_BOT",
    "REVIEW_CHANNEL_ID",
    "SUPPORT_CHANNEL_ID",
    "FakeDiscord",
    "FakeInteraction",
    "FakeUser",
    "RecordedCall",
]

JSON: TypeAlias = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
BOT_ID = "1100000000000000001"  # the bot user's id is the application id
GUILD_ID = "1200000000000000001"  # also the id of the @everyone role
BOT_ROLE_ID = "1210000000000000001"
AGENT_ROLE_ID = "1210000000000000002"
SUPPORT_CHANNEL_ID = "1300000000000000001"
REVIEW_CHANNEL_ID = "1300000000000000002"

MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT
INTERACTION_DEADLINE_SECONDS = 3.0
TOKEN_LIFETIME_SECONDS = 15 * 60
EPHEMERAL_FLAG = 1 << 6


@dataclass(frozen=True)
class FakeUser:
    """A Discord user of the fake world, with their guild roles."""

    id: str
    username: str
    global_name: str | None = None
    bot: bool = False
    roles: tuple[str, ...] = ()

    def payload(self) -> JSON:
        data: JSON = {
            "id": self.id,
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "primary_guild": None,
            "collectibles": None,
            "clan": None,
            "display_name_styles": None,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    def member_payload(self, *, with_user: bool = True) -> JSON:
        data: JSON = {
            "roles": list(self.roles),
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "pending": False,
            "mute": False,
            "deaf": False,
            "flags": 0,
            "joined_at": "2026-01-01T00:00:00.000000+00:00",
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.payload()
        return data


BOT_USER = FakeUser(BOT_ID, "support-copilot", None, bot=True, roles=(BOT_ROLE_ID,))
ALICE = FakeUser("1400000000000000001", "alice", "Alice")
BOB = FakeUser("1400000000000000002", "bob_support", "Bob (Support)", roles=(AGENT_ROLE_ID,))
HELPER_BOT = FakeUser("1400000000000000003", "helper-bot", "Helper", bot=True)


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
class InteractionResponse:
    """A callback the bot sent for an interaction (``type`` 4, 5, 6, 7 or 9)."""

    type: int
    data: JSON
    at: float


@dataclass
class FakeInteraction:
    """An INTERACTION_CREATE the fake sent, and what the bot answered to it."""

    id: str
    token: str
    type: int
    payload: JSON
    dispatched_at: float
    responses: list[InteractionResponse] = field(default_factory=list)
    followups: list[JSON] = field(default_factory=list)

    @property
    def modal(self) -> JSON | None:
        """The modal the bot opened in answer (callback type 9), if any."""
        return next((r.data for r in self.responses if r.type == 9), None)


@dataclass
class _RateLimit:
    method: str
    pattern: re.Pattern[str]
    retry_after: float
    is_global: bool


@dataclass
class _Session:
    ws: web.WebSocketResponse
    session_id: str
    shard: list[int]
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_Handler = Callable[[web.Request, "re.Match[str]", Any], Any]


class FakeDiscord:
    """Discord on 127.0.0.1: REST under ``/api/v10``, gateway at ``/gateway``, CDN at ``/cdn``."""

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        message_content_intent_enabled: bool = True,
        nonce_window_seconds: float = 300.0,
    ) -> None:
        self.token = token
        self.message_content_intent_enabled = message_content_intent_enabled
        self.nonce_window_seconds = nonce_window_seconds
        self.calls: list[RecordedCall] = []
        self.identifies: list[JSON] = []
        #: Every RESUME (op 6) a client sent: a session that dropped and came back.
        self.resumes: list[JSON] = []
        #: When set, READY waits until the event is set (a gateway that is slow to get ready).
        self.ready_gate: asyncio.Event | None = None
        self.dispatched: list[JSON] = []
        self.channels: dict[str, JSON] = {}
        self.messages: dict[str, JSON] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.guild: JSON = self._guild_payload()
        for channel in self.guild["channels"]:
            self.channels[channel["id"]] = {**channel, "guild_id": GUILD_ID}
        self._nonces: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._rate_limits: list[_RateLimit] = []
        self._sessions: list[_Session] = []
        self._counter = 0
        self._server: LoopbackServer | None = None
        self.port = 0
        self._routes: list[tuple[str, re.Pattern[str], _Handler]] = [
            ("GET", re.compile(r"/users/@me"), self._get_me),
            ("GET", re.compile(r"/oauth2/applications/@me"), self._get_application),
            ("GET", re.compile(r"/gateway"), self._get_gateway),
            ("GET", re.compile(r"/gateway/bot"), self._get_gateway_bot),
            ("GET", re.compile(r"/channels/(?P<channel>\d+)"), self._get_channel),
            ("POST", re.compile(r"/channels/(?P<channel>\d+)/messages"), self._create_message),
            ("GET", re.compile(r"/channels/(?P<channel>\d+)/messages"), self._get_messages),
            ("GET", re.compile(r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)"), self._get_message),
            (
                "PATCH",
                re.compile(r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)"),
                self._edit_message,
            ),
            (
                "POST",
                re.compile(r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/threads"),
                self._create_thread,
            ),
            (
                "PUT",
                re.compile(r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/reactions/(?P<emoji>[^/]+)/@me"),
                self._no_content,
            ),
            (
                "DELETE",
                re.compile(r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/reactions/(?P<emoji>[^/]+)/@me"),
                self._no_content,
            ),
            ("POST", re.compile(r"/channels/(?P<channel>\d+)/typing"), self._no_content),
            ("POST", re.compile(r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback"), self._callback),
            ("POST", re.compile(r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"), self._followup),
            (
                "PATCH",
                re.compile(r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/@original"),
                self._edit_original,
            ),
            (
                "DELETE",
                re.compile(r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/@original"),
                self._no_content,
            ),
        ]

    # ------------------------------------------------------------------ server lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self._api)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{tail:.*}", self._cdn)
        self._server = LoopbackServer(app, handler_cancellation=False, shutdown_timeout=60.0)
        await self._server.start()
        self.port = self._server.port

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.ws.close()
        if self._server is not None:
            await self._server.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def cdn_url(self) -> str:
        """Where :meth:`serve_file` hosts attachments (``DISCORD_CDN_URLS`` for the bot)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def bot_settings(self) -> dict[str, str]:
        """The settings that point the bot at this fake (``running_bot(..., **discord.bot_settings)``)."""
        return {"discord_bot_token": self.token, "discord_api_url": self.api_url, "discord_cdn_urls": self.cdn_url}

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ test helpers: world

    def next_id(self) -> str:
        """A fresh snowflake with the current time in it."""
        self._counter += 1
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (self._counter & 0x3FFFFF))

    def serve_file(
        self, filename: str, data: bytes, content_type: str, *, channel_id: str = SUPPORT_CHANNEL_ID
    ) -> JSON:
        """Host ``data`` on the fake CDN and return a Discord attachment object for it (with a
        signed, expiring URL as Discord gives)."""
        attachment_id = self.next_id()
        path = f"/cdn/attachments/{channel_id}/{attachment_id}/{filename}"
        self.files[path] = (data, content_type)
        query = "?ex=6a05e0d3&is=6a048f53&hm=0123456789abcdef&"
        return {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": f"http://127.0.0.1:{self.port}{path}{query}",
            "proxy_url": f"http://127.0.0.1:{self.port}{path}{query}",
            "content_type": content_type,
            "original_content_type": content_type,
            "content_scan_version": 4,
        }

    def messages_in(self, channel_id: str) -> list[JSON]:
        """Messages stored in a channel (or thread), oldest first."""
        return [m for m in self.messages.values() if m["channel_id"] == channel_id]

    def calls_to(self, method: str, path_pattern: str) -> list[RecordedCall]:
        """Recorded calls whose path fully matches the regex, oldest first."""
        pattern = re.compile(path_pattern)
        return [c for c in self.calls if c.method == method and pattern.fullmatch(c.path)]

    async def wait_for(
        self,
        method: str,
        path_pattern: str,
        count: int = 1,
        timeout: float = 5.0,
        where: Callable[[RecordedCall], bool] | None = None,
    ) -> list[RecordedCall]:
        """Poll until ``count`` calls match; raise AssertionError listing all calls on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls_to(method, path_pattern) if where is None or where(c)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = [(c.method, c.path, c.status) for c in self.calls]
                raise AssertionError(f"expected {count} x {method} {path_pattern}, got {len(found)}; calls: {seen}")
            await asyncio.sleep(0.01)

    async def wait_for_response(self, interaction: FakeInteraction, timeout: float = 5.0) -> InteractionResponse:
        deadline = time.monotonic() + timeout
        while not interaction.responses:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the bot did not answer interaction {interaction.id}")
            await asyncio.sleep(0.01)
        return interaction.responses[0]

    def rate_limit_next(
        self, method: str, path_pattern: str, *, retry_after: float = 0.2, is_global: bool = False
    ) -> None:
        """Answer the next matching request with 429, Discord's headers and ``retry_after``."""
        self._rate_limits.append(_RateLimit(method, re.compile(path_pattern), retry_after, is_global))

    # ------------------------------------------------------------------ test helpers: gateway

    @property
    def connected(self) -> bool:
        return any(not s.ws.closed for s in self._sessions)

    async def drop_gateway(self, code: int = 4000, reason: str = "Unknown error.") -> None:
        """Close every gateway session with ``code`` (4000 "unknown error" by default), as
        Discord does when something went wrong on its side."""
        for session in list(self._sessions):
            await session.ws.close(code=code, message=reason.encode())

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a DISPATCH (op 0) to every identified gateway session."""
        self.dispatched.append({"t": event, "d": data})
        for session in list(self._sessions):
            if session.ws.closed:
                continue
            async with session.lock:
                session.seq += 1
                await session.ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": event, "d": data}))

    async def post_user_message(
        self,
        channel_id: str,
        author: FakeUser,
        content: str,
        *,
        mention_bot: bool = False,
        mentions: Sequence[FakeUser] = (),
        mention_roles: Sequence[str] = (),
        mention_everyone: bool = False,
        attachments: Sequence[JSON] = (),
        reply_to: str | None = None,
    ) -> JSON:
        """A user writes in a guild channel or thread: store it and dispatch MESSAGE_CREATE.
        Like Discord, the message arrives only once the gateway session is up."""
        mentioned = [*([BOT_USER] if mention_bot else []), *mentions]
        message = self._message(
            channel_id,
            author,
            content,
            mentions=[{**u.payload(), "member": u.member_payload(with_user=False)} for u in mentioned],
            mention_roles=list(mention_roles),
            mention_everyone=mention_everyone,
            attachments=list(attachments),
            reply_to=reply_to,
        )
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", self._gateway_message(message, author))
        return message

    async def edit_user_message(self, author: FakeUser, message_id: str, content: str) -> JSON:
        """``author`` edits their message: store the new content and dispatch MESSAGE_UPDATE
        (the full message, as Discord sends it since 2024, with ``edited_timestamp`` set)."""
        message = self.messages[message_id]
        message["content"] = content
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        await self.dispatch("MESSAGE_UPDATE", self._gateway_message(message, author))
        return message

    async def delete_user_message(self, message_id: str) -> None:
        """The author deletes their message: MESSAGE_DELETE carries only ids."""
        message = self.messages.pop(message_id)
        data: JSON = {"id": message_id, "channel_id": message["channel_id"]}
        guild_id = self.channels.get(message["channel_id"], {}).get("guild_id")
        if guild_id:
            data["guild_id"] = guild_id
        await self.dispatch("MESSAGE_DELETE", data)

    async def post_direct_message(self, author: FakeUser, content: str, *, attachments: Sequence[JSON] = ()) -> JSON:
        """A user DMs the bot (MESSAGE_CREATE without guild_id, in the user's DM channel)."""
        channel_id = self.dm_channel(author)
        message = self._message(channel_id, author, content, attachments=list(attachments))
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", {**message, "channel_type": 1})
        return message

    def dm_channel(self, user: FakeUser) -> str:
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user.id:
                return str(channel["id"])
        channel_id = self.next_id()
        self.channels[channel_id] = {
            "id": channel_id,
            "type": 1,
            "last_message_id": None,
            "recipients": [user.payload()],
            "flags": 0,
        }
        return channel_id

    async def click(self, message_id: str, custom_id: str, user: FakeUser = BOB) -> FakeInteraction:
        """An agent clicks a button (INTERACTION_CREATE type 3) on a message the bot posted."""
        message = self.messages[message_id]
        buttons = [c.get("custom_id") for row in message.get("components", []) for c in row.get("components", [])]
        if custom_id not in buttons:
            raise AssertionError(f"message {message_id} has no button {custom_id!r}; it has {buttons}")
        data = {"component_type": 2, "custom_id": custom_id, "id": 2}
        return await self._interact(3, data, user, message)

    async def submit_modal(
        self, opened_by: FakeInteraction, values: Mapping[str, str], user: FakeUser = BOB
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to ``opened_by`` (INTERACTION_CREATE type 5),
        with ``values`` by input custom_id (inputs left out keep their prefilled value)."""
        modal = opened_by.modal
        if modal is None:
            raise AssertionError(f"the bot opened no modal for interaction {opened_by.id}")
        data = {"custom_id": modal["custom_id"], "components": _fill_modal(modal["components"], values)}
        return await self._interact(5, data, user, opened_by.payload.get("message"))

    # ------------------------------------------------------------------ payloads

    def _guild_payload(self) -> JSON:
        def role(role_id: str, name: str, position: int, **extra: Any) -> JSON:
            return {
                "id": role_id,
                "name": name,
                "permissions": "2248473465835073",
                "position": position,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
                "icon": None,
                "unicode_emoji": None,
                **extra,
            }

        def text_channel(channel_id: str, name: str, position: int) -> JSON:
            return {
                "id": channel_id,
                "type": 0,
                "guild_id": GUILD_ID,
                "name": name,
                "position": position,
                "permission_overwrites": [],
                "topic": None,
                "nsfw": False,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "parent_id": None,
                "flags": 0,
            }

        return {
            "id": GUILD_ID,
            "name": "Acme Community",
            "icon": None,
            "owner_id": BOB.id,
            "unavailable": False,
            "large": False,
            "member_count": 4,
            "joined_at": "2026-01-01T00:00:00.000000+00:00",
            "features": [],
            "preferred_locale": "en-US",
            "verification_level": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_id": None,
            "afk_timeout": 300,
            "afk_channel_id": None,
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "threads": [],
            "roles": [
                role(GUILD_ID, "@everyone", 0),
                role(BOT_ROLE_ID, "support-copilot", 1, managed=True, tags={"bot_id": BOT_ID}),
                role(AGENT_ROLE_ID, "agents", 2),
            ],
            "members": [u.member_payload() for u in (BOT_USER, ALICE, BOB, HELPER_BOT)],
            "channels": [
                text_channel(SUPPORT_CHANNEL_ID, "support", 0),
                text_channel(REVIEW_CHANNEL_ID, "staff-review", 1),
            ],
        }

    def _message(
        self,
        channel_id: str,
        author: FakeUser,
        content: str,
        *,
        mentions: list[JSON] | None = None,
        mention_roles: list[str] | None = None,
        mention_everyone: bool = False,
        attachments: list[JSON] | None = None,
        embeds: list[JSON] | None = None,
        components: list[JSON] | None = None,
        nonce: str | None = None,
        flags: int = 0,
        reply_to: str | None = None,
        webhook_id: str | None = None,
    ) -> JSON:
        message: JSON = {
            "id": self.next_id(),
            "type": 19 if reply_to else 0,
            "channel_id": channel_id,
            "author": author.payload(),
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "pinned": False,
            "mention_everyone": mention_everyone,
            "mentions": mentions or [],
            "mention_roles": mention_roles or [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "flags": flags,
        }
        if nonce is not None:
            message["nonce"] = nonce
        if reply_to is not None:
            message["message_reference"] = {"type": 0, "message_id": reply_to, "channel_id": channel_id}
            message["referenced_message"] = self.messages.get(reply_to)
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
            message["application_id"] = BOT_ID
        return message

    def _gateway_message(self, message: JSON, author: FakeUser) -> JSON:
        """The MESSAGE_CREATE shape of a stored message (guild extras added for guild channels)."""
        channel = self.channels.get(message["channel_id"], {})
        data = {**message, "channel_type": channel.get("type", 0)}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
            data["member"] = author.member_payload(with_user=False)
        return data

    async def _interact(self, kind: int, data: JSON, user: FakeUser, message: JSON | None) -> FakeInteraction:
        interaction_id = self.next_id()
        token = f"interaction-token-{interaction_id}"
        channel_id = message["channel_id"] if message else REVIEW_CHANNEL_ID
        channel = self.channels[channel_id]
        payload: JSON = {
            "id": interaction_id,
            "application_id": BOT_ID,
            "type": kind,
            "data": data,
            "guild_id": GUILD_ID,
            "guild": {"id": GUILD_ID, "features": [], "locale": "en-US"},
            "channel_id": channel_id,
            "channel": {**channel, "permissions": "2248473465835073"},
            "member": {**user.member_payload(), "permissions": "2248473465835073"},
            "token": token,
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "attachment_size_limit": 10485760,
        }
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(interaction_id, token, kind, payload, time.monotonic())
        self.interactions[interaction_id] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # ------------------------------------------------------------------ HTTP plumbing

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = (
                json.loads(raw) if raw and request.content_type == "application/json" else raw.decode(errors="replace")
            )
        for fault in self._rate_limits:
            if fault.method == request.method and fault.pattern.fullmatch(path):
                self._rate_limits.remove(fault)
                self._record(request, path, body, 429)
                return _rate_limited(fault)
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if method == request.method and match:
                if (
                    not path.startswith(("/interactions/", "/webhooks/"))
                    and request.headers.get("Authorization") != f"Bot {self.token}"
                ):
                    response = _json({"message": "401: Unauthorized", "code": 0}, 401)
                else:
                    response = await handler(request, match, body)
                self._record(request, path, body, response.status)
                return response
        self._record(request, path, body, 404)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    def _record(self, request: web.Request, path: str, body: Any, status: int) -> None:
        self.calls.append(RecordedCall(request.method, path, body, dict(request.query), status, time.monotonic()))

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.calls.append(RecordedCall("GET", path, None, dict(request.query), 200, time.monotonic()))
        if path not in self.files:
            return web.Response(status=404)
        data, content_type = self.files[path]
        return web.Response(body=data, headers={"Content-Type": content_type})

    # ------------------------------------------------------------------ REST handlers

    async def _get_me(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        return _json({**BOT_USER.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "bio": ""})

    async def _get_application(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        return _json(
            {
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
        )

    async def _get_gateway(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_channel(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        channel = self.channels.get(match["channel"])
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        return _json(channel)

    async def _get_messages(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        """GET /channels/{id}/messages: newest first, ``limit`` 1-100 (default 50), paged with
        ``before`` / ``after``. Like Discord, fetched messages carry no ``nonce`` (only the
        create answer and the gateway's MESSAGE_CREATE do)."""
        channel_id = match["channel"]
        if channel_id not in self.channels:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        try:
            limit = int(request.query.get("limit", "50"))
            before = int(request.query["before"]) if "before" in request.query else None
            after = int(request.query["after"]) if "after" in request.query else None
        except ValueError:
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
        if not 1 <= limit <= 100:
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
        found = [
            m
            for m in self.messages.values()
            if m["channel_id"] == channel_id
            and (before is None or int(m["id"]) < before)
            and (after is None or int(m["id"]) > after)
        ]
        found.sort(key=lambda m: int(m["id"]), reverse=after is None)
        page = found[:limit]
        if after is not None:
            page.reverse()
        return _json([{k: v for k, v in _public(m).items() if k != "nonce"} for m in page])

    async def _get_message(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        message = self.messages.get(match["message"])
        if message is None or message["channel_id"] != match["channel"]:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        return _json(message)

    async def _create_message(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        channel_id = match["channel"]
        if channel_id not in self.channels:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        if not isinstance(body, dict):
            return _json({"message": "Cannot send an empty message", "code": 50006}, 400)
        problem = _invalid_message(body)
        if problem:
            return _json(problem, 400)
        nonce = body.get("nonce")
        now = time.monotonic()
        if nonce is not None and body.get("enforce_nonce"):
            if len(str(nonce)) > 25:
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)
            key = (channel_id, BOT_ID, str(nonce))
            seen = self._nonces.get(key)
            if seen is not None and now - seen[1] <= self.nonce_window_seconds:
                return _json(_public(self.messages[seen[0]]))
        reference = body.get("message_reference")
        reply_to = str(reference.get("message_id")) if isinstance(reference, dict) else None
        if reply_to is not None:
            target = self.messages.get(reply_to)
            if target is None or target["channel_id"] != channel_id:
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)  # unknown message
        message = self._message(
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
        self.messages[message["id"]] = message
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(channel_id, BOT_ID, str(nonce))] = (message["id"], now)
        await self.dispatch("MESSAGE_CREATE", self._gateway_message(_public(message), BOT_USER))
        return _json(_public(message))

    async def _edit_message(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        message = self.messages.get(match["message"])
        if message is None or message["channel_id"] != match["channel"]:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if message["author"]["id"] != BOT_ID:
            return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        body = body if isinstance(body, dict) else {}
        problem = _invalid_message({**_public(message), **body})
        if problem:
            return _json(problem, 400)
        for key in ("content", "embeds", "components", "flags", "allowed_mentions"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        return _json(_public(message))

    async def _create_thread(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        parent_id, message_id = match["channel"], match["message"]
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != parent_id:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if message_id in self.channels:
            return _json({"message": "A thread has already been created for this message", "code": 160004}, 400)
        name = (body or {}).get("name", "")
        if not 1 <= len(name) <= 100:
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
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
        self.channels[message_id] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, 201)

    async def _no_content(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        return web.Response(status=204)

    async def _callback(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        interaction = self.interactions.get(match["id"])
        if interaction is None or interaction.token != match["token"]:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        now = time.monotonic()
        if now - interaction.dispatched_at > INTERACTION_DEADLINE_SECONDS:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if interaction.responses:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
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
            message = self._message(
                interaction.payload["channel_id"],
                BOT_USER,
                data.get("content") or "",
                flags=int(data.get("flags") or 0),
                webhook_id=BOT_ID,
            )
            interaction.followups.append(message)
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"] = {"type": 4, "message": message}
        return _json(answer)

    async def _followup(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        interaction = self._interaction_by_token(match["token"])
        if interaction is None or match["app"] != BOT_ID:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        if not interaction.responses:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        body = body if isinstance(body, dict) else {}
        problem = _invalid_message(body)
        if problem:
            return _json(problem, 400)
        message = self._message(
            interaction.payload["channel_id"],
            BOT_USER,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            flags=int(body.get("flags") or 0),
            webhook_id=BOT_ID,
        )
        interaction.followups.append(message)
        return _json(message)

    async def _edit_original(self, request: web.Request, match: re.Match[str], body: Any) -> web.Response:
        interaction = self._interaction_by_token(match["token"])
        if interaction is None or not interaction.responses:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        message = self._message(interaction.payload["channel_id"], BOT_USER, (body or {}).get("content") or "")
        interaction.followups.append(message)
        return _json(message)

    def _interaction_by_token(self, token: str) -> FakeInteraction | None:
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None or time.monotonic() - interaction.dispatched_at > TOKEN_LIFETIME_SECONDS:
            return None
        return interaction

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": 41250}}))
        session: _Session | None = None
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "s": None, "t": None, "d": None}))
            elif op == 2:
                self.identifies.append(data)
                if data.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                intents = int(data.get("intents", 0))
                if intents & MESSAGE_CONTENT_INTENT and not self.message_content_intent_enabled:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                session = _Session(ws, f"session-{self.next_id()}", list(data.get("shard") or [0, 1]))
                await self._ready(session)
            elif op == 6:
                self.resumes.append(data)
                known = next((s for s in self._sessions if s.session_id == (data or {}).get("session_id")), None)
                if known is None:
                    await ws.send_str(json.dumps({"op": 9, "s": None, "t": None, "d": False}))
                    continue
                session = _Session(ws, known.session_id, known.shard, seq=known.seq)
                self._sessions = [s for s in self._sessions if s is not known]
                self._sessions.append(session)
                async with session.lock:
                    session.seq += 1
                    await ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": "RESUMED", "d": {}}))
        # The session stays known after its socket closed, as Discord keeps it resumable: a
        # RESUME with its id continues it (dispatch skips closed sockets).
        return ws

    async def _ready(self, session: _Session) -> None:
        if self.ready_gate is not None:
            await self.ready_gate.wait()  # a slow start-up: READY only once the test opens the gate
        ready = {
            "v": 10,
            "user": {**BOT_USER.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": session.shard,
            "application": {"id": BOT_ID, "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
        }
        async with session.lock:
            for event, data in (("READY", ready), ("GUILD_CREATE", self._guild_create())):
                session.seq += 1
                await session.ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": event, "d": data}))
        self._sessions.append(session)

    def _guild_create(self) -> JSON:
        threads = [c for c in self.channels.values() if c.get("type") == 11 and not c["thread_metadata"]["archived"]]
        return {**self.guild, "threads": threads}


def _public(message: JSON) -> JSON:
    return {k: v for k, v in message.items() if k != "allowed_mentions"}


def _invalid_message(body: Mapping[str, Any]) -> JSON | None:
    content = body.get("content") or ""
    if len(content) > 2000:
        return {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {
                "content": {
                    "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]
                }
            },
        }
    embeds = body.get("embeds") or []
    if not content and not embeds and not body.get("components") and not body.get("attachments"):
        return {"message": "Cannot send an empty message", "code": 50006}
    for embed in embeds:
        if len(embed.get("description") or "") > 4096 or len(embed.get("fields") or []) > 25:
            return {"message": "Invalid Form Body", "code": 50035}
        if any(len(f.get("value") or "") > 1024 or not f.get("value") for f in embed.get("fields") or []):
            return {"message": "Invalid Form Body", "code": 50035}
    total = sum(
        len(e.get("title") or "")
        + len(e.get("description") or "")
        + sum(len(f.get("name") or "") + len(f.get("value") or "") for f in e.get("fields") or [])
        + len((e.get("footer") or {}).get("text") or "")
        + len((e.get("author") or {}).get("name") or "")
        for e in embeds
    )
    if total > 6000:
        return {"message": "Invalid Form Body", "code": 50035}
    return None


def _rate_limited(fault: _RateLimit) -> web.Response:
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


def _fill_modal(components: Sequence[JSON], values: Mapping[str, str]) -> list[JSON]:
    """A modal submission's ``components``, mirroring the modal's layout (rows or labels)."""
    filled: list[JSON] = []
    for index, component in enumerate(components, start=1):
        kind = component.get("type")
        if kind == 1:
            filled.append({"type": 1, "id": index, "components": _fill_modal(component["components"], values)})
        elif kind == 18:
            [inner] = _fill_modal([component["component"]], values)
            filled.append({"type": 18, "id": index, "component": inner})
        elif kind == 4:
            custom_id = component["custom_id"]
            value = values.get(custom_id, component.get("value") or "")
            filled.append({"type": 4, "id": index, "custom_id": custom_id, "value": value})
    return filled
