"""What the bot posts in Slack: approved replies in customer threads (the
:class:`bot.ports.CustomerChannel` port) and review cards (the :class:`bot.ports.ReviewDesk`
port).

Replies and cards both carry their idempotency key in message metadata (``supportbot_reply`` /
``supportbot_card``), so after a crash the core can ask whether the post already happened:
:meth:`SlackOutbound.find_reply` reads the thread, :meth:`SlackOutbound.find_card` the review
channel's recent history, both with ``include_all_metadata``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import cards, wire
from adapters.slack.intake import FLAT_DM
from adapters.slack.mrkdwn import escape, to_mrkdwn
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
from bot.ports import ReviewCard

P = ParamSpec("P")
R = TypeVar("R")

PENDING_REACTION = "eyes"
REPLY_EVENT = "supportbot_reply"
CARD_EVENT = "supportbot_card"
#: How far back :meth:`SlackOutbound.find_card` looks: pages of 100 messages of the review channel.
CARD_SEARCH_PAGES = 3


def safe_reply(text: str) -> str:
    """A model's text can never ping a channel or a group from the bot's account."""
    return re.sub(r"<!(channel|here|everyone|subteam\^[^>]*)>", r"@\1", text).replace("<!", "&lt;!")


#: Slack's ``error`` codes that say the thing named is gone (or the bot cannot see it).
NOT_FOUND_ERRORS = frozenset(
    {"channel_not_found", "thread_not_found", "message_not_found", "cant_update_message", "is_archived"}
)
#: Slack's ``error`` codes that say Slack itself failed: trying later may work.
#: Slack's refusals of a direct message with a user (``conversations.open``): no retry helps.
DM_REFUSED_ERRORS = frozenset({"cannot_dm_bot", "user_disabled", "user_not_visible"})
UNAVAILABLE_ERRORS = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout"})


def platform_error(exc: Exception) -> PlatformError | None:
    """What a slack_sdk (or transport) exception means at the port boundary; None for anything
    else (a bug, which the core sees as it is)."""
    if isinstance(exc, SlackApiError):
        status, error = exc.response.status_code, str(exc.response.get("error") or "")
        if status == 429:
            wait = str(exc.response.headers.get("Retry-After", ""))
            return PlatformRateLimited("Slack", float(wait) if wait.isdigit() else None)
        if error in DM_REFUSED_ERRORS:
            return DirectMessageRefused("Slack", f"Slack: {error}")
        if error in NOT_FOUND_ERRORS or status == 404:
            return PlatformNotFound("Slack", f"Slack: {error or status}")
        if error in UNAVAILABLE_ERRORS or status >= 500:
            return PlatformUnavailable("Slack", f"Slack: {error or status}")
        return PlatformRefused("Slack", f"Slack: {error or status}")
    if isinstance(exc, SlackClientError | aiohttp.ClientError | TimeoutError | OSError):
        return PlatformUnavailable("Slack", f"Slack could not be reached ({type(exc).__name__}: {exc})")
    return None


# slack_sdk's exceptions reach the core as :class:`bot.errors.PlatformError` s: a 429 that
# slack_sdk's retry handler did not get past is :class:`PlatformRateLimited` (the core retries
# later and logs one warning, not a traceback), a gone channel or message
# :class:`PlatformNotFound`, Slack's own failure or no connection :class:`PlatformUnavailable`,
# any other ``ok: false`` :class:`PlatformRefused`.
platform_errors_told = translating(platform_error)


class SlackOutbound:
    """Posts replies and cards through one Web API client."""

    platform = "slack"
    name = "slack"

    def __init__(self, client: AsyncWebClient, review_channel: str | None) -> None:
        self._client = client
        self.review_channel = review_channel
        #: Told after a card is posted or updated (the agents' Home tabs refresh).
        self.desk_changed: Callable[[], None] = lambda: None

    # -- CustomerChannel --------------------------------------------------------------------

    @platform_errors_told
    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str, feedback_for: str = "") -> str:
        shown = safe_reply(to_mrkdwn(text))  # the model writes Markdown; Slack reads mrkdwn
        response = await self._client.chat_postMessage(
            channel=thread.channel,
            thread_ts=None if thread.thread == FLAT_DM else thread.thread,
            text=shown,
            blocks=cards.reply_with_feedback(shown, feedback_for) if feedback_for else None,
            unfurl_links=False,
            metadata={"event_type": REPLY_EVENT, "event_payload": {"key": idempotency_key}},
        )
        if thread.thread != FLAT_DM:
            with contextlib.suppress(SlackApiError):  # the answer is there: the "being reviewed" marker goes
                await self._client.reactions_remove(
                    channel=thread.channel, timestamp=thread.thread, name=PENDING_REACTION
                )
        return str(response["ts"])

    @platform_errors_told
    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        if thread.thread == FLAT_DM:
            response = await self._client.conversations_history(
                channel=thread.channel, include_all_metadata=True, limit=100
            )
        else:
            response = await self._client.conversations_replies(
                channel=thread.channel, ts=thread.thread, include_all_metadata=True, limit=200
            )
        for message in response.get("messages") or []:
            if wire.metadata_key_of(message, REPLY_EVENT) == idempotency_key:
                return str(message.get("ts"))
        return None

    @platform_errors_told
    async def open_direct(self, thread: ThreadRef, user_id: str) -> ThreadRef:
        """``conversations.open`` with the user (scope ``im:write``): the same DM every time."""
        response = await self._client.conversations_open(users=user_id)
        channel = response.get("channel") or {}
        return ThreadRef("slack", thread.workspace, str(channel["id"]), FLAT_DM)

    @platform_errors_told
    async def show_pending(self, thread: ThreadRef) -> None:
        if thread.thread == FLAT_DM:
            return
        try:
            await self._client.reactions_add(channel=thread.channel, timestamp=thread.thread, name=PENDING_REACTION)
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                raise

    # -- ReviewDesk -------------------------------------------------------------------------

    def _channel(self) -> str:
        if not self.review_channel:
            raise PlatformRefused("Slack", "no Slack review channel is configured (SLACK_REVIEW_CHANNEL)")
        return self.review_channel

    @platform_errors_told
    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        response = await self._client.chat_postMessage(
            channel=self._channel(),
            text=cards.card_fallback_text(card),
            blocks=cards.card_blocks(card),
            metadata={"event_type": CARD_EVENT, "event_payload": {"key": idempotency_key}},
        )
        return f"{response['channel']}:{response['ts']}"

    @platform_errors_told
    async def find_card(self, idempotency_key: str) -> str | None:
        channel = self._channel()
        cursor = ""
        for _ in range(CARD_SEARCH_PAGES):
            response = await self._client.conversations_history(
                channel=channel, include_all_metadata=True, limit=100, cursor=cursor or None
            )
            for message in response.get("messages") or []:
                if wire.metadata_key_of(message, CARD_EVENT) == idempotency_key:
                    return f"{channel}:{message['ts']}"
            cursor = str((response.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        return None

    @platform_errors_told
    async def update_card(self, ref: str, card: ReviewCard) -> None:
        channel, ts = ref.split(":", 1)
        await self._client.chat_update(
            channel=channel, ts=ts, text=cards.card_fallback_text(card), blocks=cards.card_blocks(card)
        )
        self.desk_changed()  # a click's or a refresh's change is committed by now; a new card's, see below

    def cards_changed(self) -> None:
        self.desk_changed()

    @platform_errors_told
    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        channel, ts = ref.split(":", 1)
        tag = f"{cards.mention(on_call)} " if on_call else ""
        await self._client.chat_postMessage(channel=channel, thread_ts=ts, text=f"{tag}{escape(text)}")

    @platform_errors_told
    async def post_notice(self, text: str) -> None:
        # A notice may quote what others wrote (a policy file's bad value): shown, never pinging.
        if self.review_channel:
            await self._client.chat_postMessage(channel=self.review_channel, text=escape(text))
