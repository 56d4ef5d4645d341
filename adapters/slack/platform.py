"""The Slack adapter: Bolt (AsyncApp) in HTTP mode at ``/slack/events``, or Socket Mode when
``SLACK_APP_TOKEN`` is set.

Translation only. Events become :class:`bot.events.InboundMessage`; button clicks and modal
submissions become :class:`bot.events.ReviewDecision`; review cards are rendered as Block Kit.
An event is acknowledged as soon as the customer's message is stored (milliseconds; drafting
runs in the background), so Slack retries anything the bot could not keep. Clicks are
acknowledged first and decided in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import cards
from adapters.slack.mrkdwn import to_mrkdwn
from bot.errors import ConfigError
from bot.events import (
    Actor,
    Attachment,
    Author,
    DecisionAction,
    InboundMessage,
    MessageKind,
    ReviewDecision,
    ThreadRef,
)
from bot.ports import Core, ReviewCard
from bot.settings import Settings

log = logging.getLogger(__name__)

FLAT_DM = "-"
IGNORED_SUBTYPES = {
    "message_changed",
    "message_deleted",
    "bot_message",
    "channel_join",
    "channel_leave",
    "message_replied",
}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
GROUPS_TTL = 60.0
PENDING_REACTION = "eyes"


def _safe_reply(text: str) -> str:
    """A model's text can never ping a channel or a group from the bot's account."""
    return re.sub(r"<!(channel|here|everyone|subteam\^[^>]*)>", r"@\1", text).replace("<!", "&lt;!")


class SlackPlatform:
    """Slack as a customer channel and (with ``SLACK_REVIEW_CHANNEL``) the review desk."""

    name = "slack"

    def __init__(self, settings: Settings) -> None:
        assert settings.slack_bot_token is not None
        self.settings = settings
        self._token = settings.slack_bot_token
        # One connection pool for every Web API call (Bolt's per-request clients share it too).
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.client = AsyncWebClient(
            token=self._token.get_secret_value(), base_url=settings.slack_api_url, session=self._http
        )
        self.client.retry_handlers.extend(
            [
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
                AsyncServerErrorRetryHandler(max_retry_count=2),
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
            ]
        )
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        # Slack gets its 200 only once a customer message is stored, so a failure (say the
        # database is down) is a 500 that Slack retries instead of a lost message. Clicks are
        # acknowledged first and decided in the background.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=secret,
            request_verification_enabled=settings.slack_app_token is None,
            process_before_response=True,
        )
        self._background: set[asyncio.Task[Any]] = set()
        self.review_channel = settings.slack_review_channel
        self.bot_user_id = ""
        self._core: Core | None = None
        self._socket: Any = None
        self._groups: tuple[float, dict[str, set[str]]] = (0.0, {})
        self._register()

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackPlatform | None:
        """None when Slack is not configured; ConfigError naming what is missing when half is."""
        if not (settings.slack_bot_token or settings.slack_signing_secret or settings.slack_app_token):
            return None
        needed = ["slack_bot_token"]
        if settings.slack_app_token is None:
            needed.append("slack_signing_secret")
        if not settings.discord_review_channel:
            needed.append("slack_review_channel")
        settings.require("Slack", needed)
        return cls(settings)

    # -- PlatformAdapter ------------------------------------------------------------------

    @property
    def customer_channel(self) -> SlackPlatform:
        return self

    @property
    def review_desk(self) -> SlackPlatform | None:
        return self if self.review_channel else None

    def routes(self) -> Sequence[web.RouteDef]:
        if self.settings.slack_app_token is not None:
            return []
        return [web.post("/slack/events", self._handle_http)]

    async def start(self, core: Core) -> None:
        self._core = core
        try:
            identity = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN: {exc.response.get('error')}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(
                f"cannot reach the Slack API at {self.settings.slack_api_url} ({type(exc).__name__})"
            ) from None
        self.bot_user_id = str(identity.get("user_id", ""))
        if self.settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(self.app, self.settings.slack_app_token.get_secret_value())
            await self._socket.connect_async()

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        await self._http.close()

    async def _handle_http(self, request: web.Request) -> web.Response:
        try:
            bolt_request = await to_bolt_request(request)
        except ValueError:  # a body that is neither JSON nor a form: nobody signed that
            return web.json_response({"error": "malformed request"}, status=400)
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    # -- inbound --------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.action(cards.APPROVE)(self._on_approve)
        app.action(cards.REJECT)(self._on_reject)
        app.action(cards.EDIT)(self._on_edit)
        app.action(cards.REGENERATE)(self._on_regenerate)
        app.view(cards.EDIT_MODAL)(self._on_edit_submit)
        app.view(cards.REGENERATE_MODAL)(self._on_regenerate_submit)

    @property
    def core(self) -> Core:
        assert self._core is not None, "the Slack adapter is not started"
        return self._core

    def _strip_mention(self, text: str) -> str:
        if self.bot_user_id:
            text = text.replace(f"<@{self.bot_user_id}>", "")
        return text.strip()

    async def _translate(self, event: dict[str, Any], body: dict[str, Any], kind: MessageKind) -> InboundMessage:
        channel = str(event.get("channel", ""))
        team = str(event.get("team") or body.get("team_id") or "")
        ts = str(event.get("ts", ""))
        if kind is MessageKind.DIRECT:
            thread = str(event.get("thread_ts") or FLAT_DM)
            where = "Slack · direct message"
        else:
            thread = str(event.get("thread_ts") or ts)
            where = ("Slack Connect" if body.get("is_ext_shared_channel") else "Slack") + f" · <#{channel}>"
        user = str(event.get("user", ""))
        sent_at = datetime.fromtimestamp(float(ts), UTC) if ts else datetime.now(UTC)
        return InboundMessage(
            event_id=f"slack:{body.get('event_id') or ts}",
            thread=ThreadRef("slack", team, channel, thread),
            message_id=ts,
            author=Author(user, f"<@{user}>"),
            text=self._strip_mention(str(event.get("text", ""))),
            kind=kind,
            sent_at=sent_at,
            attachments=tuple([await self._attachment(f) for f in event.get("files") or []]),
            location=where,
        )

    async def _attachment(self, file: dict[str, Any]) -> Attachment:
        content_type = str(file.get("mimetype") or "application/octet-stream")
        size = int(file.get("size") or 0)
        url = str(file.get("url_private") or "")
        data = None
        if content_type.startswith("image/") and url and 0 < size <= MAX_IMAGE_BYTES:
            try:
                async with httpx.AsyncClient(timeout=2) as http:  # the event is acked after this
                    response = await http.get(
                        url, headers={"Authorization": f"Bearer {self._token.get_secret_value()}"}
                    )
                if response.status_code == 200 and len(response.content) <= MAX_IMAGE_BYTES:
                    data = response.content
            except httpx.HTTPError as exc:
                log.warning("could not download the image %s: %s", file.get("name"), type(exc).__name__)
        return Attachment(str(file.get("name") or "file"), content_type, size, url, data)

    def _ignored(self, event: dict[str, Any]) -> bool:
        """Bots, edits, deletions, and the agents' own review channel are not customers."""
        return bool(
            event.get("bot_id")
            or event.get("subtype") in IGNORED_SUBTYPES
            or not event.get("user")
            or (self.review_channel and event.get("channel") == self.review_channel)
        )

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if self._ignored(event):
            return
        await self.core.receive(await self._translate(event, body, MessageKind.MENTION))

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if self._ignored(event):
            return
        if event.get("channel_type") == "im":
            await self.core.receive(await self._translate(event, body, MessageKind.DIRECT))
            return
        if self.bot_user_id and f"<@{self.bot_user_id}>" in str(event.get("text", "")):
            return  # the app_mention event carries this one
        thread_ts = event.get("thread_ts")
        if not thread_ts or thread_ts == event.get("ts"):
            return
        message = await self._translate(event, body, MessageKind.FOLLOW_UP)
        if await self.core.has_conversation(message.thread):
            await self.core.receive(message)

    # -- review desk: clicks --------------------------------------------------------------

    async def _actor(self, user: dict[str, Any]) -> Actor:
        user_id = str(user.get("id", ""))
        return Actor("slack", user_id, f"<@{user_id}>", frozenset(await self._groups_of(user_id)))

    async def _groups_of(self, user_id: str) -> set[str]:
        fetched_at, groups = self._groups
        if time.monotonic() - fetched_at > GROUPS_TTL:
            try:
                response = await self.client.usergroups_list(include_users=True)
                groups = {str(g["id"]): set(g.get("users") or []) for g in response.get("usergroups") or []}
            except SlackApiError as exc:
                log.info(
                    "user groups unavailable (%s); approver lists use user ids only",
                    exc.response.get("error"),
                )
                groups = {}
            self._groups = (time.monotonic(), groups)
        return {group for group, members in groups.items() if user_id in members}

    async def _decide(
        self, body: dict[str, Any], action: DecisionAction, channel: str | None = None, **extra: Any
    ) -> None:
        draft_id = str(extra.pop("draft_id", None) or body["actions"][0]["value"])
        actor = await self._actor(body.get("user") or {})
        outcome = await self.core.decide(ReviewDecision(draft_id=draft_id, action=action, actor=actor, **extra))
        channel = channel or (body.get("container") or {}).get("channel_id") or self.review_channel
        if outcome.message and channel:
            try:
                await self.client.chat_postEphemeral(channel=channel, user=actor.id, text=outcome.message)
            except SlackApiError as exc:
                log.warning("could not tell %s the outcome: %s", actor.id, exc.response.get("error"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Work after an ack: Slack's 3-second budget is for the ack alone."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_approve(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._decide(body, DecisionAction.APPROVE))

    async def _on_reject(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._decide(body, DecisionAction.REJECT))

    async def _on_edit(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._open_edit_modal(body))

    async def _open_edit_modal(self, body: dict[str, Any]) -> None:
        draft_id = str(body["actions"][0]["value"])
        form = await self.core.edit_form(draft_id)
        channel = str((body.get("container") or {}).get("channel_id") or self.review_channel or "")
        if form is None:
            return
        await self.client.views_open(
            trigger_id=body["trigger_id"],
            view=cards.edit_modal(draft_id, form.text, form.refund_amount, channel),
        )

    async def _on_regenerate(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._open_regenerate_modal(body))

    async def _open_regenerate_modal(self, body: dict[str, Any]) -> None:
        channel = str((body.get("container") or {}).get("channel_id") or self.review_channel or "")
        await self.client.views_open(
            trigger_id=body["trigger_id"],
            view=cards.regenerate_modal(str(body["actions"][0]["value"]), channel),
        )

    @staticmethod
    def _modal_value(view: dict[str, Any], block: str, action: str) -> str | None:
        value = ((view.get("state") or {}).get("values") or {}).get(block, {}).get(action, {}).get("value")
        return None if value is None else str(value)

    async def _on_edit_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        text = (self._modal_value(view, "draft_block", "draft_input") or "").strip()
        if not text:
            await ack(response_action="errors", errors={"draft_block": "The reply cannot be empty."})
            return
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        self._spawn(
            self._decide(
                body,
                DecisionAction.EDIT,
                channel=meta.get("channel"),
                draft_id=meta.get("draft_id"),
                edited_text=text,
                refund_amount=self._modal_value(view, "refund_block", "refund_input"),
            )
        )

    async def _on_regenerate_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        self._spawn(
            self._decide(
                body,
                DecisionAction.REGENERATE,
                channel=meta.get("channel"),
                draft_id=meta.get("draft_id"),
                instruction=self._modal_value(view, "instruction_block", "instruction_input"),
            )
        )

    # -- ReviewDesk -----------------------------------------------------------------------

    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        assert self.review_channel
        response = await self.client.chat_postMessage(
            channel=self.review_channel,
            text=cards.card_fallback_text(card),
            blocks=cards.card_blocks(card),
            metadata={"event_type": "supportbot_card", "event_payload": {"key": idempotency_key}},
        )
        return f"{response['channel']}:{response['ts']}"

    async def find_card(self, idempotency_key: str) -> str | None:
        return None

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        channel, ts = ref.split(":", 1)
        await self.client.chat_update(
            channel=channel, ts=ts, text=cards.card_fallback_text(card), blocks=cards.card_blocks(card)
        )

    async def post_notice(self, text: str) -> None:
        if self.review_channel:
            await self.client.chat_postMessage(channel=self.review_channel, text=text)

    # -- CustomerChannel ------------------------------------------------------------------

    platform = "slack"

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str) -> str:
        response = await self.client.chat_postMessage(
            channel=thread.channel,
            thread_ts=None if thread.thread == FLAT_DM else thread.thread,
            text=_safe_reply(to_mrkdwn(text)),  # the model writes Markdown; Slack reads mrkdwn
            unfurl_links=False,
            metadata={"event_type": "supportbot_reply", "event_payload": {"key": idempotency_key}},
        )
        if thread.thread != FLAT_DM:
            with contextlib.suppress(SlackApiError):  # the answer is there: the "being reviewed" marker goes
                await self.client.reactions_remove(
                    channel=thread.channel, timestamp=thread.thread, name=PENDING_REACTION
                )
        return str(response["ts"])

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        if thread.thread == FLAT_DM:
            response = await self.client.conversations_history(
                channel=thread.channel, include_all_metadata=True, limit=100
            )
        else:
            response = await self.client.conversations_replies(
                channel=thread.channel, ts=thread.thread, include_all_metadata=True, limit=200
            )
        for message in response.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("key") == idempotency_key:
                return str(message.get("ts"))
        return None

    async def show_pending(self, thread: ThreadRef) -> None:
        if thread.thread == FLAT_DM:
            return
        try:
            await self.client.reactions_add(channel=thread.channel, timestamp=thread.thread, name=PENDING_REACTION)
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                raise
