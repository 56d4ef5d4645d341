"""Customer messages from Discord, translated into :class:`bot.events.InboundMessage`.

Who the bot listens to:

* a message that mentions the bot *user* (``bot.user in message.mentions``; ``@everyone``,
  ``@here`` and role mentions, even of the bot's managed role, never count);
* any direct message;
* any message in a thread where the core already has a conversation
  (:meth:`Core.has_conversation`): the thread the bot opened on the first mention, or a
  thread the bot was mentioned in. Replies to the bot's own messages are covered by this,
  since the bot only speaks in such threads and in DMs.

Messages of bots (including this one), webhooks and system messages are ignored, and so is
the staff review channel.

An edit (MESSAGE_UPDATE) is handed over as an :class:`InboundMessage` with ``edited`` set, a
deletion (MESSAGE_DELETE, or each message of a moderator's MESSAGE_DELETE_BULK) as a
:class:`MessageDeleted`, both in the thread the message was answered in; neither opens a
thread. The core decides what they change (only a message it stored as a customer's counts).
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

import discord
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from adapters.discord.outbound import PendingMarkers
from adapters.discord.settings import DM_WORKSPACE
from bot.events import Attachment, Author, InboundMessage, MessageDeleted, MessageKind, Place, ThreadRef
from bot.ports import Core

log = logging.getLogger(__name__)

PLATFORM = "discord"
#: Minutes of inactivity before Discord hides the thread; a week covers a slow review.
THREAD_AUTO_ARCHIVE_MINUTES: Final = 10080
#: How often recording a customer message is tried before it is given up (and logged).
RECEIVE_ATTEMPTS = 6

#: Discord's error code for "a thread has already been created for this message".
THREAD_ALREADY_EXISTS = 160004

_CUSTOMER_MESSAGE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})


async def _receive_reliably(core: Core, inbound: InboundMessage) -> None:
    await _reliably(lambda: core.receive(inbound), inbound.message_id)


async def _reliably(record: Callable[[], Awaitable[bool]], message_id: str) -> None:
    """Discord never redelivers a gateway event, so a failure to record it (the database
    restarting, say) is retried here; the core ignores a repeat of the same event id."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(RECEIVE_ATTEMPTS),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        retry=retry_if_exception_type(Exception),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "recording Discord message %s failed (attempt %d); retrying", message_id, state.attempt_number
        ),
    )
    async for attempt in retrying:
        with attempt:
            await record()


class MessageIntake:
    """Decides whether a Discord message is for the bot, and hands it to the core."""

    def __init__(self, pending: PendingMarkers, review_channel_id: int | None) -> None:
        self._pending = pending
        self._review_channel_id = review_channel_id

    async def handle(self, client: discord.Client, core: Core, message: discord.Message) -> None:
        me = client.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        if not isinstance(message.type.value, int) or message.type not in _CUSTOMER_MESSAGE_TYPES:
            return  # (discord.py keeps a ``type`` it cannot read as it came: a list, an object...)
        mentioned = any(user.id == me.id for user in message.mentions)
        routed = await self._route(client, core, message, mentioned)
        if routed is None:
            return
        thread, kind, location, place = routed
        self._pending.saw_customer_message(thread, message.channel.id, message.id)
        inbound = InboundMessage(
            event_id=f"discord:{message.id}",
            thread=thread,
            message_id=str(message.id),
            author=author_of(message),
            text=strip_mention(message.content, me.id),
            kind=kind,
            sent_at=message.created_at,
            attachments=collect_attachments(message),
            location=location,
            place=place,
        )
        await _receive_reliably(core, inbound)

    async def _route(
        self, client: discord.Client, core: Core, message: discord.Message, mentioned: bool
    ) -> tuple[ThreadRef, MessageKind, str, Place] | None:
        """The conversation, how the message reached the bot, where (for the card) and who can
        read it: a DM or a private thread is private; a server's channel, and the public thread
        the bot opens there, are public."""
        author = f"@{message.author.display_name}"
        if message.guild is None:
            channel_id = str(message.channel.id)
            thread = ThreadRef(PLATFORM, DM_WORKSPACE, channel_id, channel_id)
            return thread, MessageKind.DIRECT, dm_location(message), Place.PRIVATE

        guild = message.guild
        channel = await _resolve_channel(client, message)
        if channel is None:
            return None

        if isinstance(channel, discord.Thread):
            parent_id = channel.parent_id
            if self._is_review_channel(parent_id):
                return None
            thread = ThreadRef(PLATFORM, str(guild.id), str(parent_id), str(channel.id))
            parent_name = channel.parent.name if channel.parent is not None else channel.name
            location = f"Discord · {guild.name} · #{parent_name} · {author}"
            place = Place.PRIVATE if channel.type is discord.ChannelType.private_thread else Place.PUBLIC
            if await core.has_conversation(thread):
                return thread, MessageKind.FOLLOW_UP, location, place
            if mentioned:
                return thread, MessageKind.MENTION, location, place
            return None

        if not mentioned or self._is_review_channel(channel.id):
            return None
        if not core.serves(ThreadRef(PLATFORM, str(guild.id), str(channel.id), "")):
            return None  # a server the operator does not serve: no thread opened there
        location = f"Discord · {guild.name} · #{channel.name} · {author}"
        thread_id = await open_thread(message, channel)
        if thread_id is None:
            return None
        thread = ThreadRef(PLATFORM, str(guild.id), str(channel.id), thread_id)
        return thread, MessageKind.MENTION, location, Place.PUBLIC

    async def handle_edit(self, client: discord.Client, core: Core, message: discord.Message) -> None:
        """MESSAGE_UPDATE: the message as edited. Its event id names the edit (Discord's
        ``edited_timestamp``), so an update that edits nothing (an embed loading) repeats it."""
        me = client.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        thread = await self._thread_of(client, message.channel.id, message.guild, message.id)
        if thread is None:
            return
        edited_at = message.edited_at.isoformat() if message.edited_at else "unedited"
        event_id = f"discord:{message.id}:edited:{edited_at}"
        edit = as_edit(message, me.id, event_id, thread, MessageKind.FOLLOW_UP)
        if message.guild is None:
            # A direct message's edit may stand for a message whose first delivery was not
            # recorded yet: translated whole, as the message itself would be.
            edit = replace(
                edit,
                kind=MessageKind.DIRECT,
                location=dm_location(message),
                place=Place.PRIVATE,
                attachments=collect_attachments(message),
            )
        await _receive_reliably(core, edit)

    async def handle_delete(
        self, client: discord.Client, core: Core, channel_id: int, guild_id: int | None, message_id: int
    ) -> None:
        """MESSAGE_DELETE: only ids; the thread is worked out from the channel."""
        guild = None if guild_id is None else discord.Object(guild_id)
        thread = await self._thread_of(client, channel_id, guild, message_id)
        if thread is None:
            return
        deleted = MessageDeleted(f"discord:{message_id}:deleted", thread, str(message_id))
        await _reliably(lambda: core.retract(deleted), str(message_id))

    async def _thread_of(
        self, client: discord.Client, channel_id: int, guild: discord.abc.Snowflake | None, message_id: int
    ) -> ThreadRef | None:
        """The conversation a message belongs to, as :meth:`_route` named it when it arrived,
        without opening anything: a DM; a thread (under its parent channel); or a message in a
        channel, whose thread the bot opened on it (Discord gives it the message's id)."""
        if guild is None:
            return ThreadRef(PLATFORM, DM_WORKSPACE, str(channel_id), str(channel_id))
        channel = client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await client.fetch_channel(channel_id)
            except discord.HTTPException as exc:
                log.warning("cannot resolve Discord channel %s: %s", channel_id, exc)
                return None
        if isinstance(channel, discord.Thread):
            if self._is_review_channel(channel.parent_id):
                return None
            return ThreadRef(PLATFORM, str(guild.id), str(channel.parent_id), str(channel.id))
        if self._is_review_channel(channel_id):
            return None
        return ThreadRef(PLATFORM, str(guild.id), str(channel_id), str(message_id))

    def _is_review_channel(self, channel_id: int | None) -> bool:
        return self._review_channel_id is not None and channel_id == self._review_channel_id


async def _resolve_channel(
    client: discord.Client, message: discord.Message
) -> discord.abc.GuildChannel | discord.Thread | None:
    channel = message.channel
    if isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return channel
    if not isinstance(channel, discord.PartialMessageable):
        return None
    # A thread missing from the cache (no THREAD_CREATE seen yet): ask the API what it is.
    try:
        fetched = await client.fetch_channel(channel.id)
    except discord.HTTPException as exc:
        log.warning("cannot resolve Discord channel %s: %s", channel.id, exc)
        return None
    return fetched if isinstance(fetched, discord.abc.GuildChannel | discord.Thread) else None


async def open_thread(message: discord.Message, channel: discord.abc.GuildChannel) -> str | None:
    """Open a public thread on ``message`` and return its id (which equals the message id).

    Returns None (and logs why) when the channel cannot hold threads or the bot lacks the
    Create Public Threads permission: without a thread there is nowhere to answer.
    """
    if not isinstance(channel, discord.TextChannel):
        log.warning("mentioned in #%s, which cannot hold threads; ignoring", channel.name)
        return None
    name = f"Support: {message.author.display_name}"[:100]
    try:
        thread = await message.create_thread(name=name, auto_archive_duration=THREAD_AUTO_ARCHIVE_MINUTES)
    except discord.HTTPException as exc:
        if exc.code == THREAD_ALREADY_EXISTS:
            # A redelivered MESSAGE_CREATE: the thread from the first delivery is ours.
            return str(message.id)
        log.error("cannot open a thread in #%s (needs Create Public Threads): %s", channel.name, exc)
        return None
    return str(thread.id)


def dm_location(message: discord.Message) -> str:
    """Where a direct message is, as its card says it."""
    return f"Discord · DM · @{message.author.display_name}"


def as_edit(
    message: discord.Message, bot_id: int, event_id: str, thread: ThreadRef, kind: MessageKind
) -> InboundMessage:
    """An edited Discord message in the core's terms: the core matches it to the stored message
    by thread and id, and reads only its new text (and who edited it, for the audit)."""
    return InboundMessage(
        event_id=event_id,
        thread=thread,
        message_id=str(message.id),
        author=author_of(message),
        text=strip_mention(message.content, bot_id),
        kind=kind,
        sent_at=message.created_at,
        edited=True,
    )


def author_of(message: discord.Message) -> Author:
    """The author with the facts the core decides who is speaking from: a bot or not, and the
    ids of their roles in the guild (staff roles make an agent, by the policy)."""
    user = message.author
    roles = user.roles if isinstance(user, discord.Member) else []
    return Author(
        id=str(user.id),
        display_name=user.display_name,
        is_bot=user.bot,
        groups=frozenset(str(role.id) for role in roles if not role.is_default()),  # not @everyone
    )


def strip_mention(content: str, bot_id: int) -> str:
    """Remove the bot's own ``<@id>`` / ``<@!id>`` mention from the text."""
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def collect_attachments(message: discord.Message) -> tuple[Attachment, ...]:
    """The files of ``message`` as Discord describes them; the core downloads the images later,
    through :attr:`adapters.discord.platform.DiscordPlatform.files` (only from Discord's CDN)."""
    return tuple(
        Attachment(
            filename=item.filename,
            content_type=item.content_type or mimetypes.guess_type(item.filename)[0] or "application/octet-stream",
            size=item.size,
            url=item.url,
        )
        for item in message.attachments
    )
