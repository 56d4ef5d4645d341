"""Customer messages from Slack: the listeners, and the middleware that drops what is no
customer's message (bots, joins, the agents' own review channel) before any listener runs, the
way Bolt's ``ignoring_self_events`` middleware does.

Edits and deletions are translated, never judged: an edit (``message_changed``, or an
``app_mention`` re-sent with ``edited``) becomes an :class:`InboundMessage` with ``edited`` set
and the original ``ts``; a deletion (``message_deleted``, or the ``tombstone`` a deleted thread
root leaves) a :class:`MessageDeleted`. The core decides what they change.

A message event is acknowledged once the core has stored it (Bolt runs with
``process_before_response``), so anything the bot could not keep is retried by Slack. A
payload that is malformed is a :class:`adapters.slack.wire.MalformedPayload`, answered 200 by
the app's error handler (:mod:`adapters.slack.review`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from adapters.slack import wire
from adapters.slack.directory import SlackDirectory
from bot import metrics
from bot.events import Attachment, Author, InboundMessage, MessageDeleted, MessageKind, Place, ThreadRef
from bot.ports import Core

log = logging.getLogger(__name__)

#: A direct message's conversation when it is not in a thread (Slack DMs are flat).
FLAT_DM = "-"
IGNORED_SUBTYPES = frozenset(
    {
        "bot_message",
        "channel_join",
        "channel_leave",
        "message_replied",
    }
)
CHANGED = "message_changed"
DELETED = "message_deleted"
#: ``channel_type`` of a message event in a place only its members read (a DM, a group DM, a
#: private channel); ``channel`` is a public one.
PRIVATE_CHANNEL_TYPES = frozenset({"im", "mpim", "group"})
#: What a ``message_changed`` leaves of a thread's first message deleted while it has replies.
TOMBSTONE = "tombstone"


def ignored_reason(event: dict[str, Any], review_channel: str | None) -> str | None:
    """Why an event is not a customer's message (or its edit or deletion), or None when it is one."""
    if event.get("type") not in ("message", "app_mention"):
        return None
    if review_channel and event.get("channel") == review_channel:
        return "the review channel"
    subtype = event.get("subtype")
    if subtype in (CHANGED, DELETED):
        # The message concerned is the nested one: a bot's (the bot's own replies too) is no
        # customer's; a change by Slack (an unfurl) arrives like an edit and changes no text.
        nested = event.get("message") if subtype == CHANGED else event.get("previous_message")
        if isinstance(nested, dict) and (nested.get("bot_id") or nested.get("subtype") in IGNORED_SUBTYPES):
            return f"a {subtype} event of no customer's message"
        return None
    if event.get("bot_id"):
        return "a bot's message"
    if subtype in IGNORED_SUBTYPES:
        return f"a {subtype} event"
    if not event.get("user"):
        return "no user"
    return None


def ignore_non_customers(review_channel: str | None) -> Callable[..., Awaitable[BoltResponse | None]]:
    """A global Bolt middleware: ignored events are acknowledged (200) and go no further."""

    async def ignore_non_customers(body: dict[str, Any], next_: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        if body.get("type") == "app_rate_limited":
            rate_limited(body)
            return BoltResponse(status=200, body="")
        event = body.get("event")
        if body.get("type") == "event_callback" and isinstance(event, dict):
            reason = ignored_reason(event, review_channel)
            if reason is not None:
                log.debug("ignored Slack event %s: %s", body.get("event_id"), reason)
                return BoltResponse(status=200, body="")
        await next_()
        return None

    return ignore_non_customers


def rate_limited(body: dict[str, Any]) -> None:
    """Slack's ``app_rate_limited``: past 30,000 events an hour, Slack drops a workspace's events
    for the rest of the minute and says so once. It will never send them: the operator hears of
    it, so the agents can look in the channels for what was asked then."""
    minute = body.get("minute_rate_limited")
    when = (
        datetime.fromtimestamp(minute, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if isinstance(minute, int | float) and 0 <= minute < 2**33
        else "an unknown minute"
    )
    log.warning(
        "Slack dropped the events of workspace %s from %s to the end of that minute (more than 30,000 an"
        " hour): messages sent then never reached the bot; look in the channels for them",
        str(body.get("team_id", "?"))[:32],
        when,
    )
    metrics.platform_dropped_events("slack")


class SlackIntake:
    """Translates customer events into :class:`InboundMessage` for the core."""

    def __init__(
        self,
        *,
        core: Callable[[], Core],
        directory: SlackDirectory,
        bot_user_id: Callable[[], str],
        review_channel: str | None = None,
    ) -> None:
        self._core = core
        self._directory = directory
        self._bot_user_id = bot_user_id
        self._review_channel = review_channel or ""

    def register(self, app: AsyncApp, review_channel: str | None) -> None:
        app.middleware(ignore_non_customers(review_channel))
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)

    async def on_mention(self, body: dict[str, Any]) -> None:
        envelope = wire.parse_event_callback(body)
        event = wire.parse_message_event(envelope["event"])
        edited = isinstance(envelope["event"].get("edited"), dict)
        await self._core().receive(await self.translate(envelope, event, MessageKind.MENTION, edited=edited))

    async def on_message(self, body: dict[str, Any]) -> None:
        envelope = wire.parse_event_callback(body)
        subtype = envelope["event"].get("subtype")
        if subtype == CHANGED:
            await self.on_changed(envelope)
            return
        if subtype == DELETED:
            await self.on_deleted(envelope, wire.parse_deleted_message(envelope["event"]))
            return
        event = wire.parse_message_event(envelope["event"])
        core = self._core()
        if event.get("channel_type") == "im":
            await core.receive(await self.translate(envelope, event, MessageKind.DIRECT))
            return
        bot = self._bot_user_id()
        if bot and f"<@{bot}>" in event["text"]:
            return  # the app_mention event carries this one
        thread_ts = event.get("thread_ts")
        if not thread_ts or thread_ts == event["ts"]:
            return
        message = await self.translate(envelope, event, MessageKind.FOLLOW_UP)
        if await core.has_conversation(message.thread):
            await core.receive(message)

    async def on_changed(self, envelope: wire.EventCallback) -> None:
        nested = envelope["event"].get("message")
        if isinstance(nested, dict) and nested.get("subtype") == TOMBSTONE:
            await self.on_deleted(envelope, wire.parse_deleted_message(envelope["event"]))
            return
        event = wire.parse_changed_message(envelope["event"])
        if not event["user"]:
            return
        if event.get("channel_type") == "im":
            kind = MessageKind.DIRECT
        elif event.get("thread_ts", event["ts"]) != event["ts"]:
            kind = MessageKind.FOLLOW_UP
        elif (bot := self._bot_user_id()) and f"<@{bot}>" in event["text"]:
            kind = MessageKind.MENTION
        else:
            kind = MessageKind.CHANNEL  # no mention (any more): it matters only if stored
        await self._core().receive(await self.translate(envelope, event, kind, edited=True))

    async def on_deleted(self, envelope: wire.EventCallback, deleted: wire.DeletedMessage) -> None:
        team = envelope["team_id"]
        if deleted.get("channel_type") == "im":
            thread = deleted.get("thread_ts") or FLAT_DM
        else:
            thread = deleted.get("thread_ts") or deleted["ts"]
        event_id = f"slack:{envelope['event_id'] or deleted['ts'] + ':deleted'}"
        await self._core().retract(
            MessageDeleted(event_id, ThreadRef("slack", team, deleted["channel"], thread), deleted["ts"])
        )

    async def requested(self, shortcut: wire.MessageShortcut) -> InboundMessage:
        """The message an agent's shortcut names (:mod:`adapters.slack.on_demand`), translated as
        its mention (or its reply in a thread) would be. One request per message: its event id is
        the channel and the message's ``ts``. A bot's message is marked as a bot's."""
        raw = shortcut["message"]
        channel = shortcut["channel"]
        event = wire.parse_message_event({**raw, "type": "message", "channel": channel})
        envelope = wire.EventCallback(
            type="message_action",
            event_id=f"draft_reply:{channel}:{event['ts']}",
            team_id=shortcut["team_id"],
            is_ext_shared_channel=False,
            event=raw,
        )
        if channel.startswith("D"):
            kind = MessageKind.DIRECT
        elif event.get("thread_ts", event["ts"]) != event["ts"]:
            kind = MessageKind.FOLLOW_UP
        else:
            kind = MessageKind.MENTION
        message = await self.translate(envelope, event, kind)
        if event.get("bot_id") or not event["user"] or event.get("subtype") in IGNORED_SUBTYPES:
            author = replace(message.author, id=event["user"] or event.get("bot_id", ""), is_bot=True)
            message = replace(message, author=author)
        return message

    def _strip_mention(self, text: str) -> str:
        bot = self._bot_user_id()
        if bot:
            text = text.replace(f"<@{bot}>", "")
        return text.strip()

    async def translate(
        self, envelope: wire.EventCallback, event: wire.MessageEvent, kind: MessageKind, *, edited: bool = False
    ) -> InboundMessage:
        channel = event["channel"]
        team = event.get("team") or envelope["team_id"]
        ts = event["ts"]
        if kind is MessageKind.DIRECT:
            thread = event.get("thread_ts") or FLAT_DM
            where = "Slack · direct message"
        else:
            thread = event.get("thread_ts") or ts
            where = ("Slack Connect" if envelope["is_ext_shared_channel"] else "Slack") + f" · <#{channel}>"
        return InboundMessage(
            event_id=f"slack:{envelope['event_id'] or ts}",
            thread=ThreadRef("slack", team, channel, thread),
            message_id=ts,
            author=await self._author(envelope, event, in_thread=kind is not MessageKind.DIRECT and thread != ts),
            text=self._strip_mention(event["text"]),
            kind=kind,
            sent_at=datetime.fromtimestamp(float(ts), UTC),
            attachments=tuple(self._attachment(f) for f in event["files"]),
            location=where,
            edited=edited,
            place=await self._place(envelope, event),
        )

    async def _place(self, envelope: wire.EventCallback, event: wire.MessageEvent) -> Place:
        """Who can read the channel: a Slack Connect channel is public (another organisation reads
        it); otherwise the message event's ``channel_type``, or, for an ``app_mention`` (which has
        none), ``conversations.info``. What Slack will not tell is public."""
        if envelope["is_ext_shared_channel"]:
            return Place.PUBLIC
        channel_type = event.get("channel_type")
        if channel_type is None:
            private = await self._directory.is_private(event["channel"])
        else:
            private = channel_type in PRIVATE_CHANNEL_TYPES
        return Place.PRIVATE if private else Place.PUBLIC

    async def _author(self, envelope: wire.EventCallback, event: wire.MessageEvent, *, in_thread: bool) -> Author:
        """The author with the facts the core decides who is speaking from. Only a reply in an
        existing thread can come from someone other than its customer, so only there are the
        groups and the review channel's members looked up (both cached by the directory)."""
        user = event["user"]
        email = await self._directory.email_of(user)
        home: bool | None = None
        if envelope["is_ext_shared_channel"]:  # Slack Connect: the author's team, vs the installing one
            home = (event.get("user_team") or event.get("team") or "") == envelope["team_id"]
        if not in_thread:
            return Author(user, f"<@{user}>", email, home_workspace=home)
        member = await self._directory.is_member(self._review_channel, user) if self._review_channel else None
        return Author(
            user,
            f"<@{user}>",
            email,
            groups=await self._directory.groups_of(user),
            home_workspace=home,
            review_member=member,
        )

    @staticmethod
    def _attachment(file: wire.FileObject) -> Attachment:
        """What Slack says about a file; the core downloads it later, through
        :attr:`adapters.slack.platform.SlackPlatform.files` (only from Slack's file host)."""
        return Attachment(
            file["name"],
            file["mimetype"],
            file["size"],
            file["url_private_download"] or file["url_private"],
            external=file["external"],
        )
