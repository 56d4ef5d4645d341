"""The Discord world the fake serves: one guild ("Acme Community") with ``#support`` and
``#staff-review``, its roles and users, the channels, messages, interactions and CDN files, and
the payload builders that put them in Discord's shapes (reference ``discord.md`` §4)."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

__all__ = [
    "AGENT_ROLE_ID",
    "ALICE",
    "BOB",
    "BOT_ID",
    "BOT_ROLE_ID",
    "BOT_USER",
    "GUILD_ID",
    "HELPER_BOT",
    "REVIEW_CHANNEL_ID",
    "SUPPORT_CHANNEL_ID",
    "DiscordWorld",
    "FakeInteraction",
    "FakeUser",
    "InteractionResponse",
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


class DiscordWorld(ABC):
    """The state of the fake Discord and the builders of its payloads; see
    :class:`tests.fakes.discord.FakeDiscord` for the settings. Its gateway (which :meth:`dispatch`
    writes to) is the fake's."""

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
        self.identifies: list[JSON] = []
        #: Every RESUME (op 6) a client sent: a session that dropped and came back.
        self.resumes: list[JSON] = []
        #: When set, READY waits until the event is set (a gateway that is slow to get ready).
        self.ready_gate: asyncio.Event | None = None
        self.channels: dict[str, JSON] = {}
        #: Users whose direct messages are closed to the bot (a post in their DM: 403, code 50007).
        self.closed_dms: set[str] = set()
        self.messages: dict[str, JSON] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.guild: JSON = self._guild_payload()
        for channel in self.guild["channels"]:
            self.channels[channel["id"]] = {**channel, "guild_id": GUILD_ID}
        self._counter = 0
        self.port = 0

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @abstractmethod
    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a DISPATCH (op 0) to every identified gateway session."""

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
