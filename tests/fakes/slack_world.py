"""The Slack workspace the fake serves: who the bot is, the directory (users, channels,
usergroups, members), the messages in each channel, and what the bot did that leaves no message
(ephemerals, views, reactions). :class:`tests.fakes.slack.FakeSlack` is this workspace on the wire."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from tests.fakes.slack_payloads import next_ts, observe_ts

__all__ = ["EMAIL_SCOPES", "SlackWorkspace", "copy_json"]

JSON: TypeAlias = dict[str, Any]

_SCOPES = (
    "app_mentions:read,channels:history,groups:history,im:history,chat:write,reactions:write,"
    "channels:read,groups:read,usergroups:read,im:write,files:read"
)
EMAIL_SCOPES = frozenset({"users:read", "users:read.email"})


def copy_json(value: JSON) -> JSON:
    """A deep, JSON-faithful copy (what a client would see)."""
    copied: JSON = json.loads(json.dumps(value))
    return copied


class SlackWorkspace:
    """One workspace's state; see :class:`tests.fakes.slack.FakeSlack` for what each attribute means."""

    def __init__(
        self,
        *,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_id: str = "T111",
        app_id: str = "A111",
        team_domain: str = "acme",
        strict: bool = False,
    ) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.app_id = app_id
        self.team_domain = team_domain
        self.strict = strict
        self.scopes: set[str] = set(_SCOPES.split(","))
        self.strict_metadata = False
        self.max_text_length = 40_000
        self.max_blocks_text = 13_200
        self.max_metadata_bytes = 4_000
        self.ephemerals: list[JSON] = []
        self.views: dict[str, JSON] = {}
        self.reactions: list[tuple[str, str, str]] = []
        self.usergroups: dict[str, list[str]] = {}
        self.users: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        #: ``conversations.members`` per channel (the review channel's agents, say).
        self.members: dict[str, list[str]] = {}
        #: ``conversations.open`` refuses a DM with these users, with this error (``user_disabled``).
        self.dm_refusals: dict[str, str] = {}
        self.add_user("U222", "customer.carol", real_name="Carol Customer", email="carol@customer.example")
        self.add_user("U333", "agent.alice", real_name="Alice Agent", email="alice@support.example")
        self.add_user(bot_user_id, "supportbot", real_name="Support Copilot", is_bot=True)
        self.add_channel("C111", "customer-acme", is_ext_shared=True)
        self.add_channel("C999", "support-drafts")
        self._messages: dict[str, list[JSON]] = {}

    def messages_in(self, channel: str, thread_ts: str | None = None) -> list[JSON]:
        """Stored messages in ts order: the whole channel, or one thread (parent first)."""
        stored = sorted(self._messages.get(channel, []), key=lambda m: float(m["ts"]))
        if thread_ts is None:
            return stored
        return [m for m in stored if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def find_message(self, channel: str, ts: str) -> JSON | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    def store(self, channel: str, msg: JSON) -> JSON:
        """Append a new message to a channel's history."""
        self._messages.setdefault(channel, []).append(msg)
        return msg

    def add_message(
        self,
        channel: str,
        text: str,
        user: str | None = "U222",
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> JSON:
        """Seed a message as if someone posted it (returns the stored dict)."""
        if ts is None:
            ts = next_ts()
        else:
            observe_ts(ts)
        msg: JSON = {"type": "message", "ts": ts, "text": text, "team": self.team_id}
        if user is not None:
            msg["user"] = user
        if thread_ts is not None and thread_ts != ts:
            msg["thread_ts"] = thread_ts
            parent = self.find_message(channel, thread_ts)
            msg["parent_user_id"] = (parent or {}).get("user", user)
        msg.update(extra)
        existing = self.find_message(channel, ts)
        if existing is not None:
            existing.update(msg)
            return existing
        self._messages.setdefault(channel, []).append(msg)
        return msg

    def ingest_event(self, envelope: JSON) -> None:
        """Mirror an Events API envelope into the stored history (used by ``SlackSender(mirror_to=)``)."""
        event = envelope.get("event") or {}
        channel = event.get("channel")
        if event.get("type") not in ("message", "app_mention") or not isinstance(channel, str):
            return
        subtype = event.get("subtype")
        if subtype == "message_changed":
            inner = event.get("message") or {}
            found = self.find_message(channel, str(inner.get("ts")))
            if found is not None:
                found.update({k: v for k, v in inner.items() if k != "ts"})
            return
        if subtype == "message_deleted":
            deleted = event.get("deleted_ts")
            self._messages[channel] = [m for m in self._messages.get(channel, []) if m["ts"] != deleted]
            return
        if event.get("edited") and (found := self.find_message(channel, str(event.get("ts")))) is not None:
            found["text"] = event.get("text", "")  # an edited app_mention re-sent: the same message
            return
        extra = {
            k: v
            for k, v in event.items()
            if k not in ("type", "ts", "text", "user", "thread_ts", "channel", "event_ts", "channel_type")
        }
        self.add_message(
            channel, event.get("text", ""), event.get("user"), event["ts"], event.get("thread_ts"), **extra
        )

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
        tz: str = "America/Los_Angeles",
        locale: str = "en-US",
    ) -> JSON:
        """Add or replace a ``users.info`` entry."""
        real = real_name or name
        profile: JSON = {"real_name": real, "display_name": name, "image_72": "https://example.invalid/a.png"}
        if email is not None:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_offset": -28800,
            "is_bot": is_bot,
            "is_admin": False,
            "is_app_user": False,
            "updated": 1700000000,
            "profile": profile,
            "_locale": locale,
        }
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False, is_ext_shared: bool = False) -> JSON:
        """Add or replace a ``conversations.info`` entry."""
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_private,
            "is_group": is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": is_private,
            "created": 1700000000,
            "is_archived": False,
            "is_general": False,
            "is_shared": is_ext_shared,
            "is_ext_shared": is_ext_shared,
            "is_org_shared": False,
            "is_member": True,
            "creator": "U333",
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }
        self.channels[channel_id] = channel
        return channel
