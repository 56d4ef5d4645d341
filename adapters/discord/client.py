"""The discord.py client the adapter runs: intents, one-time setup and event forwarding.

The client holds no logic of its own. It forwards gateway events to an :class:`EventHandlers`
(the :class:`~adapters.discord.platform.DiscordPlatform`) and registers the review buttons as
dynamic items so clicks on cards posted before a restart still arrive.

It is an :class:`discord.AutoShardedClient` for two reasons: it asks ``GET /gateway/bot`` for
the gateway URL and the shard count (a plain ``Client`` hard-codes ``wss://gateway.discord.gg``,
which would bypass ``DISCORD_API_URL``), and it shards on its own when Discord requires it
(2,500+ guilds). With fewer guilds Discord answers ``shards: 1`` and it behaves like ``Client``.

A gateway event discord.py cannot read (a field its version expects is missing, a value of
another type) raises inside its parser, and discord.py ends the whole connection for it: the
messages that follow are lost until a reconnect. The client wraps each parser of its
``ConnectionState`` once, so such an event is logged in one WARNING line and skipped. The
gateway reads the same ``parsers`` dict on every connect, RESUME and re-IDENTIFY
(``DiscordWebSocket.from_client``), so the wrapping holds for the client's whole life.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import discord

from bot.events import DecisionAction, Vote

#: Seconds discord.py waits after the last GUILD_CREATE before it fires ``on_ready``.
DEFAULT_GUILD_READY_TIMEOUT = 2.0

#: A long ``retry_after`` raises :class:`discord.RateLimited` instead of sleeping silently.
MAX_RATELIMIT_SLEEP_SECONDS = 60.0

#: Events whose failure leaves no usable session: they still end the connection (and the
#: watchdog connects again), rather than leaving a client that never becomes ready.
VITAL_EVENTS = frozenset({"READY"})

log = logging.getLogger(__name__)


def required_intents() -> discord.Intents:
    """The gateway intents the bot asks for.

    ``guilds`` (channel and thread cache), ``guild_messages`` and ``dm_messages`` are not
    privileged. ``message_content`` is privileged: without it, thread follow-ups that do not
    mention the bot arrive with empty content and no attachments.
    """
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


class EventHandlers(Protocol):
    """What the client forwards gateway events to."""

    async def on_message(self, message: discord.Message) -> None: ...

    async def on_message_edited(self, event: discord.RawMessageUpdateEvent) -> None: ...

    async def on_message_deleted(self, channel_id: int, guild_id: int | None, message_id: int) -> None: ...

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None: ...

    async def on_review_click(
        self, interaction: discord.Interaction[Any], action: DecisionAction, draft_id: str
    ) -> None: ...

    async def on_feedback_click(self, interaction: discord.Interaction[Any], vote: Vote, draft_id: str) -> None: ...


class SupportbotClient(discord.AutoShardedClient):
    """The gateway and REST connection of one adapter run (a new one per ``start``)."""

    def __init__(
        self,
        handlers: EventHandlers,
        *,
        dynamic_items: Sequence[type[discord.ui.DynamicItem[Any]]],
        guild_ready_timeout: float = DEFAULT_GUILD_READY_TIMEOUT,
    ) -> None:
        # The bot never joins voice: skip discord.py's start-up warnings about voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(
            intents=required_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            max_ratelimit_timeout=MAX_RATELIMIT_SLEEP_SECONDS,
            guild_ready_timeout=guild_ready_timeout,
            chunk_guilds_at_startup=False,
        )
        self.handlers = handlers
        self.became_ready = asyncio.Event()
        self._dynamic_items = tuple(dynamic_items)
        parsers = self._connection.parsers
        for event, parse in list(parsers.items()):
            if event not in VITAL_EVENTS:
                parsers[event] = skipping_failures(event, parse)

    async def setup_hook(self) -> None:
        # Runs once inside login(), before the gateway connects: the place for dynamic items.
        self.add_dynamic_items(*self._dynamic_items)

    async def on_ready(self) -> None:
        # May fire again after a failed RESUME; setting the event twice is harmless.
        self.became_ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.handlers.on_message(message)

    # The raw events: the plain ones fire only for messages still in discord.py's cache.
    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        await self.handlers.on_message_edited(event)

    async def on_raw_message_delete(self, event: discord.RawMessageDeleteEvent) -> None:
        await self.handlers.on_message_deleted(event.channel_id, event.guild_id, event.message_id)

    async def on_raw_bulk_message_delete(self, event: discord.RawBulkMessageDeleteEvent) -> None:
        # A moderator's purge: MESSAGE_DELETE_BULK names many messages, each deleted as one.
        for message_id in sorted(event.message_ids):
            await self.handlers.on_message_deleted(event.channel_id, event.guild_id, message_id)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.handlers.on_interaction(interaction)


def skipping_failures(event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
    """``parse``, with an exception logged as one WARNING line (no traceback) and the event
    skipped."""

    def parse_or_skip(data: Any) -> None:
        try:
            parse(data)
        except Exception as exc:
            log.warning(
                "skipped a Discord %s event discord.py could not read (%s: %.200s)", event, type(exc).__name__, exc
            )

    return parse_or_skip
