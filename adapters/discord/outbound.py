"""Posting approved replies into customers' Discord threads (the :class:`CustomerChannel` port)."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

import aiohttp
import discord

from adapters.discord.client import SupportbotClient
from adapters.discord.feedback import feedback_buttons
from adapters.discord.settings import DM_WORKSPACE
from bot.errors import (
    DirectMessageRefused,
    PlatformError,
    PlatformNotFound,
    PlatformRateLimited,
    PlatformRefused,
    PlatformUnavailable,
    translating,
)
from bot.events import ThreadRef

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Discord rejects message content longer than this (HTTP 400, code 50035).
MESSAGE_LIMIT = 2000
#: Discord accepts nonces of at most 25 characters.
NONCE_LENGTH = 25
PENDING_EMOJI = "⏳"
PENDING_INDICATORS = frozenset({"reaction", "typing", "none"})

#: How many threads / idempotency keys the in-memory maps remember.
_MEMORY_SIZE = 4096

ClientSource = Callable[[], SupportbotClient]


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, in order.

    Paragraphs (blank-line separated) are packed together while they fit; a paragraph that
    does not fit alone is split on line breaks, and a line that does not fit alone is cut at
    the last space in the window, or hard at ``limit`` when there is none.
    """
    paragraphs = (paragraph.strip("\n") for paragraph in text.split("\n\n") if paragraph.strip())
    return _pack((piece for paragraph in paragraphs for piece in _fit_paragraph(paragraph, limit)), "\n\n", limit)


def _fit_paragraph(paragraph: str, limit: int) -> list[str]:
    if len(paragraph) <= limit:
        return [paragraph]
    return _pack((segment for line in paragraph.split("\n") for segment in _cut_line(line, limit)), "\n", limit)


def _pack(pieces: Iterable[str], separator: str, limit: int) -> list[str]:
    """Join pieces (each at most ``limit`` long) with ``separator`` while they fit."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _cut_line(line: str, limit: int) -> list[str]:
    segments: list[str] = []
    while len(line) > limit:
        cut = line.rfind(" ", limit // 2, limit + 1)
        if cut <= 0:
            segments.append(line[:limit])
            line = line[limit:]
        else:
            segments.append(line[:cut])
            line = line[cut + 1 :]
    segments.append(line)
    return segments


def reply_nonce(idempotency_key: str, part: int) -> str:
    """The Discord nonce of part ``part`` of the reply posted under ``idempotency_key``.

    With ``enforce_nonce`` Discord returns the already-created message instead of posting a
    second one when the same nonce is sent again within a few minutes.
    """
    return hashlib.sha256(f"{idempotency_key}\x00{part}".encode()).hexdigest()[:NONCE_LENGTH]


def channel_id_of(thread: ThreadRef) -> int:
    """The Discord channel a conversation's messages go to: its thread (or DM channel)."""
    if thread.platform != "discord":
        raise ValueError(f"not a Discord thread: {thread.key}")
    return int(thread.thread)


class PendingMarkers:
    """Which customer message to put the pending reaction on, per conversation.

    In memory and bounded: after a restart a thread is unknown and ``show_pending`` falls back
    to the typing indicator.
    """

    def __init__(self, size: int = _MEMORY_SIZE) -> None:
        self._last_customer_message: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._reacted: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._size = size

    def saw_customer_message(self, thread: ThreadRef, channel_id: int, message_id: int) -> None:
        _remember(self._last_customer_message, thread.key, (channel_id, message_id), self._size)

    def last_customer_message(self, thread: ThreadRef) -> tuple[int, int] | None:
        return self._last_customer_message.get(thread.key)

    def reacted(self, thread: ThreadRef, channel_id: int, message_id: int) -> None:
        _remember(self._reacted, thread.key, (channel_id, message_id), self._size)

    def take_reacted(self, thread: ThreadRef) -> tuple[int, int] | None:
        return self._reacted.pop(thread.key, None)


def _remember(memory: OrderedDict[str, tuple[int, int]], key: str, value: tuple[int, int], size: int) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > size:
        memory.popitem(last=False)


#: Discord's "Cannot send messages to this user" (their DMs are closed to the bot): no retry helps.
CANNOT_MESSAGE_USER = 50007


def platform_error(exc: Exception) -> PlatformError | None:
    """What a discord.py (or transport) exception means at the port boundary; None for anything
    else (a bug, which the core sees as it is)."""
    if isinstance(exc, discord.RateLimited):
        return PlatformRateLimited("Discord", exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        said = f"Discord: {exc.status} {exc.text or ''}".strip()
        if exc.status == 429:
            return PlatformRateLimited("Discord")
        if exc.code == CANNOT_MESSAGE_USER:
            return DirectMessageRefused("Discord", said)
        if isinstance(exc, discord.NotFound):
            return PlatformNotFound("Discord", said)
        if isinstance(exc, discord.DiscordServerError) or exc.status >= 500:
            return PlatformUnavailable("Discord", said)
        return PlatformRefused("Discord", said)  # 403 Forbidden, 400 a request Discord rejects
    if isinstance(exc, discord.ClientException | aiohttp.ClientError | TimeoutError | OSError):
        return PlatformUnavailable("Discord", f"Discord could not be reached ({type(exc).__name__}: {exc})")
    return None


# discord.py's exceptions reach the core as :class:`bot.errors.PlatformError` s: a rate
# limit discord.py did not sit through (a wait above ``MAX_RATELIMIT_SLEEP_SECONDS`` raises
# :class:`discord.RateLimited`; a 429 it could not handle is an ``HTTPException``) is
# :class:`PlatformRateLimited` (the core retries later and logs one warning, not a traceback),
# 404 :class:`PlatformNotFound`, 5xx or no connection :class:`PlatformUnavailable`, any other
# refusal (403, 400) :class:`PlatformRefused`.
platform_errors_told = translating(platform_error)


class DiscordCustomerChannel:
    """Posts approved replies in the customer's thread or DM channel.

    Every part is sent with ``AllowedMentions.none()`` (a model draft can never ping
    ``@everyone``, roles or users) and a nonce derived from the idempotency key with
    ``enforce_nonce``, so a retried post within Discord's nonce window returns the message
    already created instead of duplicating it.
    """

    platform = "discord"

    def __init__(self, client: ClientSource, pending: PendingMarkers, indicator: str = "reaction") -> None:
        if indicator not in PENDING_INDICATORS:
            raise ValueError(f"unknown pending indicator {indicator!r}")
        self._client = client
        self._pending = pending
        self._indicator = indicator
        self._posted: OrderedDict[str, str] = OrderedDict()

    @platform_errors_told
    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        """Post ``text`` (split under 2,000 characters) and return the first message's id; with
        ``feedback_for``, the last part carries the 👍 / 👎 buttons rating that draft's reply."""
        parts = split_message(text)
        if not parts:
            raise PlatformRefused("Discord", "refusing to post an empty reply")
        client = self._client()
        channel = client.get_partial_messageable(channel_id_of(thread))
        first_id = ""
        for index, part in enumerate(parts):
            nonce, mentions = reply_nonce(idempotency_key, index), discord.AllowedMentions.none()
            if feedback_for and index == len(parts) - 1:
                view = feedback_buttons(feedback_for)
                message = await channel.send(part, nonce=nonce, allowed_mentions=mentions, view=view)
            else:
                message = await channel.send(part, nonce=nonce, allowed_mentions=mentions)
            if index == 0:
                first_id = str(message.id)
        self._posted[idempotency_key] = first_id
        while len(self._posted) > _MEMORY_SIZE:
            self._posted.popitem(last=False)
        await self._clear_pending(client, thread)
        return first_id

    @platform_errors_told
    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        """``POST /users/@me/channels`` with the user as recipient: the same DM channel every time.
        Discord opens it even for a user who accepts no DM; posting there is then refused (50007)."""
        channel = await self._client().create_dm(discord.Object(int(user_id)))
        return ThreadRef(self.platform, DM_WORKSPACE, str(channel.id), str(channel.id))

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        """The first message id of a reply this process posted under ``idempotency_key``.

        Discord cannot be searched by nonce, so after a restart this returns None ("cannot
        tell"); a retried :meth:`post_reply` within Discord's nonce window (a few minutes) is
        still deduplicated by the nonce.
        """
        return self._posted.get(idempotency_key)

    async def show_pending(self, thread: ThreadRef) -> None:
        """React with ⏳ on the customer's last message, or trigger the typing indicator
        (``DISCORD_PENDING_INDICATOR``). Cosmetic: failures are logged, never raised."""
        if self._indicator == "none":
            return
        client = self._client()
        target = self._pending.last_customer_message(thread)
        try:
            if self._indicator == "reaction" and target is not None:
                channel_id, message_id = target
                message = client.get_partial_messageable(channel_id).get_partial_message(message_id)
                await message.add_reaction(PENDING_EMOJI)
                self._pending.reacted(thread, channel_id, message_id)
            else:
                # One typing trigger lasts about 10 seconds; approval may take longer.
                await client.get_partial_messageable(channel_id_of(thread)).typing()
        except discord.HTTPException as exc:
            log.warning("could not show the pending indicator in %s: %s", thread.key, exc)

    async def _clear_pending(self, client: SupportbotClient, thread: ThreadRef) -> None:
        target = self._pending.take_reacted(thread)
        if target is None or client.user is None:
            return
        channel_id, message_id = target
        message = client.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            await message.remove_reaction(PENDING_EMOJI, client.user)
        except discord.HTTPException as exc:
            log.info("could not remove the pending reaction in %s: %s", thread.key, exc)
