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

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from aiohttp import web

from bot.evaluation.simulator.loopback import LoopbackFake, LoopbackServer
from tests.fakes.common import at_least
from tests.fakes.discord_gateway import DiscordGateway
from tests.fakes.discord_rest import RateLimit, RecordedCall, RestApi
from tests.fakes.discord_world import (
    AGENT_ROLE_ID,
    ALICE,
    BOB,
    BOT_ID,
    BOT_ROLE_ID,
    BOT_USER,
    GUILD_ID,
    HELPER_BOT,
    JSON,
    REVIEW_CHANNEL_ID,
    SUPPORT_CHANNEL_ID,
    DiscordWorld,
    FakeInteraction,
    FakeUser,
    InteractionResponse,
)

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


class FakeDiscord(DiscordWorld, LoopbackFake):
    """Discord on 127.0.0.1: REST under ``/api/v10`` (:class:`RestApi`), gateway at ``/gateway``
    (:class:`DiscordGateway`), CDN at ``/cdn``; the world they share is its :class:`DiscordWorld`
    state. Its methods are what a test does: users who write, edit and click, and waits."""

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        message_content_intent_enabled: bool = True,
        nonce_window_seconds: float = 300.0,
    ) -> None:
        super().__init__(
            token=token,
            message_content_intent_enabled=message_content_intent_enabled,
            nonce_window_seconds=nonce_window_seconds,
        )
        self.gateway = DiscordGateway(self)
        self.rest = RestApi(self)
        self.calls = self.rest.calls
        self._server: LoopbackServer | None = None

    # ------------------------------------------------------------------ server lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest.serve)
        app.router.add_get("/gateway", self.gateway.serve)
        app.router.add_get("/cdn/{tail:.*}", self.rest.cdn)
        self._server = LoopbackServer(app, handler_cancellation=False, shutdown_timeout=60.0)
        await self._server.start()
        self.port = self._server.port

    async def close(self) -> None:
        await self.gateway.close()
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

    # ------------------------------------------------------------------ test helpers

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

        def failure(found: int) -> str:
            seen = [(c.method, c.path, c.status) for c in self.calls]
            return f"expected {count} x {method} {path_pattern}, got {found}; calls: {seen}"

        def matching() -> list[RecordedCall]:
            return [c for c in self.calls_to(method, path_pattern) if where is None or where(c)]

        return await at_least(count, matching, timeout, failure)

    async def wait_for_response(self, interaction: FakeInteraction, timeout: float = 5.0) -> InteractionResponse:
        failure = f"the bot did not answer interaction {interaction.id}"
        [first, *_] = await at_least(1, lambda: interaction.responses, timeout, lambda _: failure)
        return first

    def rate_limit_next(
        self, method: str, path_pattern: str, *, retry_after: float = 0.2, is_global: bool = False
    ) -> None:
        """Answer the next matching request with 429, Discord's headers and ``retry_after``."""
        pattern = re.compile(path_pattern)
        fault = RateLimit(retry_after, is_global)
        self.rest.rate_limits.add(lambda call: call[0] == method and bool(pattern.fullmatch(call[1])), fault)

    @property
    def connected(self) -> bool:
        return self.gateway.connected

    async def drop_gateway(self, code: int = 4000, reason: str = "Unknown error.") -> None:
        """Close every gateway session with ``code`` (4000 "unknown error" by default), as
        Discord does when something went wrong on its side."""
        await self.gateway.drop(code, reason)

    async def dispatch(self, event: str, data: JSON) -> None:
        await self.gateway.dispatch(event, data)

    # ------------------------------------------------------------------ what users do

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

    async def post_direct_message(
        self, author: FakeUser, content: str, *, attachments: Sequence[JSON] = (), delivered: bool = True
    ) -> JSON:
        """A user DMs the bot (MESSAGE_CREATE without guild_id, in the user's DM channel);
        ``delivered=False`` keeps the MESSAGE_CREATE back (:meth:`deliver_direct_message` sends it)."""
        channel_id = self.dm_channel(author)
        message = self._message(channel_id, author, content, attachments=list(attachments))
        self.messages[message["id"]] = message
        if delivered:
            await self.deliver_direct_message(message)
        return message

    async def deliver_direct_message(self, message: JSON) -> None:
        await self.dispatch("MESSAGE_CREATE", {**message, "channel_type": 1})

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
