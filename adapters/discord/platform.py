"""The Discord platform adapter: lifecycle, and wiring of intake, replies and review desk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from adapters.discord import feedback
from adapters.discord.client import DEFAULT_GUILD_READY_TIMEOUT, SupportbotClient
from adapters.discord.inbound import MessageIntake
from adapters.discord.outbound import DiscordCustomerChannel, PendingMarkers
from adapters.discord.review import DiscordReviewDesk, ReviewButton, ReviewInteractions
from adapters.discord.settings import DiscordSettings
from bot.downloads import FileHost
from bot.errors import ConfigError, PlatformUnavailable
from bot.events import DecisionAction, Vote
from bot.ports import Core

if TYPE_CHECKING:
    from aiohttp import web

    from bot.settings import Settings

log = logging.getLogger(__name__)

#: How long ``start`` waits for the gateway to be ready before giving up.
DEFAULT_READY_TIMEOUT = 60.0

PRIVILEGED_INTENTS_MESSAGE = (
    "Discord refused the gateway connection (close code 4014): supportbot requests the privileged "
    "Message Content intent, which is not enabled for this application. In the Discord developer "
    "portal (https://discord.com/developers/applications{app}), open Bot > Privileged Gateway "
    "Intents, switch on MESSAGE CONTENT INTENT, save, and start supportbot again."
)


class DiscordPlatform:
    """The ``discord`` platform: implements :class:`bot.ports.PlatformAdapter`.

    Build it with :func:`create` (None when ``DISCORD_BOT_TOKEN`` is unset). ``start`` logs in,
    connects the gateway in a background task and returns once Discord reports ready.
    """

    name = "discord"

    def __init__(
        self,
        settings: DiscordSettings | Settings,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        guild_ready_timeout: float = DEFAULT_GUILD_READY_TIMEOUT,
    ) -> None:
        if not isinstance(settings, DiscordSettings):
            own = DiscordSettings.from_settings(settings)
            if own is None:
                raise ConfigError("discord is enabled but these settings are missing: DISCORD_BOT_TOKEN")
            settings = own
        self.settings = settings
        self._token = settings.bot_token.get_secret_value()
        self._api_url = settings.api_url
        self._review_channel_id = settings.review_channel_id
        self._ready_timeout = ready_timeout
        self._guild_ready_timeout = guild_ready_timeout
        self._client: SupportbotClient | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._core: Core | None = None
        # Discord's CDN links are signed: no token goes with them, and no other host is asked.
        self._files = FileHost.at("Discord's CDN", settings.cdn_urls, setting="DISCORD_CDN_URLS")
        pending = PendingMarkers()
        self._intake = MessageIntake(pending, self._review_channel_id)
        self._interactions = ReviewInteractions(self._require_core)
        self._customer_channel = DiscordCustomerChannel(self._require_client, pending, settings.pending_indicator)
        self._review_desk = (
            DiscordReviewDesk(self._require_client, self._review_channel_id)
            if self._review_channel_id is not None
            else None
        )

    @property
    def customer_channel(self) -> DiscordCustomerChannel:
        return self._customer_channel

    @property
    def review_desk(self) -> DiscordReviewDesk | None:
        """The staff-channel review desk when ``DISCORD_REVIEW_CHANNEL`` is set, else None."""
        return self._review_desk

    @property
    def desk_preferred(self) -> bool:
        """``DISCORD_REVIEW_CHANNEL`` set: agents review every platform's drafts there."""
        return self._review_desk is not None

    @property
    def files(self) -> FileHost:
        return self._files

    @property
    def client(self) -> SupportbotClient | None:
        """The connected discord.py client, between ``start`` and ``stop``."""
        return self._client

    def routes(self) -> Sequence[web.RouteDef]:
        """None: Discord events arrive over the gateway WebSocket, not over HTTP."""
        return ()

    @property
    def connected(self) -> bool:
        """Started, READY, the gateway task alive and every shard's WebSocket open. A gateway
        task that ended (a fatal close code, an error) makes this False until :meth:`reconnect`."""
        client, gateway = self._client, self._gateway
        if client is None or gateway is None or gateway.done():
            return False
        if client.is_closed() or not client.is_ready():
            return False
        return all(not shard.is_closed() for shard in client.shards.values())

    async def reconnect(self) -> None:
        """Start a fresh client when the gateway died (a live one is left alone)."""
        core = self._core
        if core is None:
            raise RuntimeError("the Discord adapter is not started")
        if self.connected:
            return
        log.warning("the Discord gateway is down; connecting again")
        await self.stop()
        await self.start(core)

    async def start(self, core: Core) -> None:
        """Log in and connect; return once ready. Raises :class:`ConfigError` when the token is
        rejected, the privileged intents are not enabled, or Discord is not ready in time."""
        if self._client is not None:
            raise RuntimeError("the Discord adapter is already started")
        self._core = core
        # Every REST call (and the gateway URL GET /gateway/bot returns) goes through this base.
        discord.http.Route.BASE = self._api_url
        client = SupportbotClient(
            self, dynamic_items=[ReviewButton, feedback.FeedbackButton], guild_ready_timeout=self._guild_ready_timeout
        )
        self._client = client
        try:
            await asyncio.wait_for(self._connect(client), self._ready_timeout)
        except TimeoutError:
            await self.stop()
            raise ConfigError(
                f"Discord was not ready within {self._ready_timeout:.0f} s; check that the gateway "
                f"behind DISCORD_API_URL ({self._api_url}) is reachable"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _connect(self, client: SupportbotClient) -> None:
        try:
            await client.login(self._token)
        except discord.LoginFailure:
            raise ConfigError(
                "Discord rejected DISCORD_BOT_TOKEN (401 Unauthorized): copy a fresh token from Bot > "
                "Reset Token in the developer portal"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"cannot reach the Discord API at DISCORD_API_URL ({self._api_url}): {exc}") from None
        gateway = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        self._gateway = gateway
        ready = asyncio.create_task(client.became_ready.wait(), name="discord-ready")
        try:
            await asyncio.wait({gateway, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not gateway.done():
            gateway.add_done_callback(_log_gateway_end)
            log.info("connected to Discord as %s", client.user)
            return
        error = gateway.exception()
        if isinstance(error, discord.PrivilegedIntentsRequired):
            app = f"/{client.application_id}/bot" if client.application_id else ""
            raise ConfigError(PRIVILEGED_INTENTS_MESSAGE.format(app=app)) from None
        if isinstance(error, discord.ConnectionClosed):
            raise ConfigError(f"Discord closed the gateway connection with code {error.code}: {error.reason}") from None
        if error is not None:
            raise error
        raise ConfigError("the Discord gateway connection ended before it was ready")

    async def stop(self) -> None:
        """Close the gateway and HTTP sessions. The adapter can be started again."""
        client, gateway = self._client, self._gateway
        self._client = self._gateway = None
        if client is not None:
            await client.close()
        if gateway is not None:
            if not gateway.done():
                # The gateway's own end (an error included) is logged by its done callback.
                done, _ = await asyncio.wait({gateway}, timeout=5.0)
                if not done:
                    gateway.cancel()
            elif not gateway.cancelled():
                gateway.exception()  # retrieved: it was reported by start()

    # EventHandlers, called by SupportbotClient

    async def on_message(self, message: discord.Message) -> None:
        client, core = self._client, self._core
        if client is None or core is None:
            return
        try:
            await self._intake.handle(client, core, message)
        except Exception:
            log.exception("handling Discord message %s failed", message.id)

    async def on_message_edited(self, event: discord.RawMessageUpdateEvent) -> None:
        client, core = self._client, self._core
        if client is None or core is None:
            return
        try:
            await self._intake.handle_edit(client, core, event.message)
        except Exception:
            log.exception("handling the edit of Discord message %s failed", event.message_id)

    async def on_message_deleted(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        client, core = self._client, self._core
        if client is None or core is None:
            return
        try:
            await self._intake.handle_delete(client, core, channel_id, guild_id, message_id)
        except Exception:
            log.exception("handling the deletion of Discord message %s failed", message_id)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.type is not discord.InteractionType.modal_submit or self._core is None:
            return
        try:
            await self._interactions.on_modal_submit(interaction)
        except discord.HTTPException as exc:
            log.warning("handling Discord form submission %s failed: Discord answered %s", interaction.id, exc)
        except Exception:
            log.exception("handling Discord form submission %s failed", interaction.id)

    async def on_review_click(
        self, interaction: discord.Interaction[Any], action: DecisionAction, draft_id: str
    ) -> None:
        if self._core is None:
            return
        try:
            await self._interactions.on_click(interaction, action, draft_id)
        except discord.HTTPException as exc:  # Discord said no (an expired interaction: 10062): its word is enough
            log.warning("handling %s on draft %s failed: Discord answered %s", action, draft_id, exc)
        except Exception:
            log.exception("handling %s on draft %s failed", action, draft_id)

    async def on_feedback_click(self, interaction: discord.Interaction[Any], vote: Vote, draft_id: str) -> None:
        if self._core is None:
            return
        try:
            await feedback.rate(self._require_core, interaction, vote, draft_id)
        except discord.HTTPException as exc:
            log.warning("handling a %s vote on draft %s failed: Discord answered %s", vote, draft_id, exc)
        except Exception:
            log.exception("handling a %s vote on draft %s failed", vote, draft_id)

    def _require_client(self) -> SupportbotClient:
        if self._client is None:  # stopped, or between a dead gateway and its reconnect
            raise PlatformUnavailable("Discord", "the Discord adapter is not started")
        return self._client

    def _require_core(self) -> Core:
        if self._core is None:
            raise RuntimeError("the Discord adapter is not started")
        return self._core


def create(settings: Settings) -> DiscordPlatform | None:
    """The ``supportbot.platforms`` factory: None when ``DISCORD_BOT_TOKEN`` is not set."""
    own = DiscordSettings.from_settings(settings)
    return None if own is None else DiscordPlatform(own)


def _log_gateway_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("the Discord gateway connection ended: %s", error, exc_info=error)
