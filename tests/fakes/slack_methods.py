"""The Web API methods the Slack fake answers, each a small handler from the call's parameters to
its answer, grouped by what they touch: :class:`ChatMethods` (posting and editing),
:class:`ViewAndReactionMethods` and :class:`ReadMethods` (history and the directory). A handler
refuses with :class:`SlackError`, which the server turns into ``{"ok": false, "error": ...}``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

from tests.fakes.slack_blocks import blocks_text_length, validate_blocks, validate_view
from tests.fakes.slack_payloads import next_ts
from tests.fakes.slack_world import SlackWorkspace, copy_json

__all__ = ["ChatMethods", "Handler", "ReadMethods", "SlackError", "ViewAndReactionMethods"]

JSON: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[JSON], JSON]


class SlackError(Exception):
    """Slack's ``ok: false`` answer: the ``error`` code, ``response_metadata.messages``, the HTTP status."""

    def __init__(self, error: str, messages: list[str] | None = None, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
        self.status = status


def truthy(value: Any) -> bool:
    return value is True or value in ("1", "true", "True", 1)


def channel_of(params: JSON, key: str = "channel") -> str:
    channel = params.get(key)
    if not isinstance(channel, str) or not channel:
        raise SlackError("channel_not_found")
    if channel[0] in "UW":  # posting to a user id opens (or reuses) the DM
        return "D" + channel[1:]
    return channel


def with_block_ids(blocks: list[JSON]) -> list[JSON]:
    return [{"block_id": uuid.uuid4().hex[:5], **block} for block in blocks]


def require_message(world: SlackWorkspace, channel: str, ts: Any) -> JSON:
    msg = world.find_message(channel, ts) if isinstance(ts, str) else None
    if msg is None:
        raise SlackError("message_not_found")
    return msg


class ChatMethods:
    """``auth.test`` and ``chat.postMessage`` / ``chat.update`` / ``chat.postEphemeral``, with
    Slack's checks of text, blocks and metadata."""

    def __init__(self, world: SlackWorkspace) -> None:
        self.world = world
        self.handlers: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.open": self._conversations_open,
        }

    def _auth_test(self, params: JSON) -> JSON:
        return {
            "url": f"https://{self.world.team_domain}.slack.com/",
            "team": self.world.team_domain.capitalize(),
            "user": "supportbot",
            "team_id": self.world.team_id,
            "user_id": self.world.bot_user_id,
            "bot_id": self.world.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: JSON) -> JSON:
        channel = channel_of(params)
        text, blocks, metadata, warnings = self._message_content(params)
        ts = next_ts()
        msg = self._bot_message(ts, text, blocks, metadata, params)
        thread_ts = params.get("thread_ts")
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
            parent = self.world.find_message(channel, str(thread_ts))
            msg["parent_user_id"] = (parent or {}).get("user", self.world.bot_user_id)
            if truthy(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
        self.world.store(channel, msg)
        return self._warn({"channel": channel, "ts": ts, "message": copy_json(msg)}, warnings)

    def _conversations_open(self, params: JSON) -> JSON:
        """A DM with one user (``users``; scope ``im:write``): the same ``D…`` channel every time."""
        if "im:write" not in self.world.scopes:
            raise SlackError("missing_scope")
        user = str(params.get("users") or "")
        if not user:
            raise SlackError("users_list_not_supplied")
        if "," in user or user[0] not in "UW":
            raise SlackError("user_not_found")  # a group DM is not what the bot opens
        if user in self.world.dm_refusals:
            raise SlackError(self.world.dm_refusals[user])
        return {"channel": {"id": channel_of({"channel": user})}}

    def _update(self, params: JSON) -> JSON:
        channel = channel_of(params)
        msg = require_message(self.world, channel, params.get("ts"))
        if msg.get("bot_id") != self.world.bot_id:
            raise SlackError("cant_update_message")
        text, blocks, metadata, warnings = self._message_content(params, require=False)
        if text is None and blocks is None and params.get("attachments") is None:
            raise SlackError("no_text")
        self._set_content(msg, text, blocks, metadata, params.get("attachments"))
        msg["edited"] = {"user": self.world.bot_user_id, "ts": next_ts()}
        return self._warn(
            {
                "channel": channel,
                "ts": msg["ts"],
                "text": msg["text"],
                "message": copy_json(msg),
            },
            warnings,
        )

    def _post_ephemeral(self, params: JSON) -> JSON:
        channel = channel_of(params)
        user = params.get("user")
        if not isinstance(user, str) or not user:
            raise SlackError("user_not_found")
        text, blocks, _, _ = self._message_content(params)
        ts = next_ts()
        msg = self._bot_message(ts, text, blocks, None, params)
        msg.update(channel=channel, recipient=user)
        if params.get("thread_ts"):
            msg["thread_ts"] = str(params["thread_ts"])
        self.world.ephemerals.append(msg)
        return {"message_ts": ts}

    def _message_content(self, params: JSON, require: bool = True) -> tuple[str | None, Any, JSON | None, list[str]]:
        """Validate text/blocks/metadata; returns (text, blocks, metadata, warnings)."""
        text = params.get("text")
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if require and not text and not blocks and not attachments:
            raise SlackError("no_text")
        if text is not None and len(text) > self.world.max_text_length:
            raise SlackError("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise SlackError("invalid_blocks_format")
            errs = validate_blocks(blocks)
            if errs:
                raise SlackError("invalid_blocks", errs)
            if blocks_text_length(blocks) > self.world.max_blocks_text:
                raise SlackError("msg_blocks_too_long")
        warnings: list[str] = []
        metadata = params.get("metadata")
        if metadata is not None:
            if (
                not isinstance(metadata, dict)
                or not isinstance(metadata.get("event_type"), str)
                or not metadata["event_type"]
                or not isinstance(metadata.get("event_payload", {}), dict)
            ):
                raise SlackError("invalid_metadata_format")
            size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
            if size > self.world.max_metadata_bytes:
                if self.world.strict_metadata:
                    raise SlackError("metadata_too_large")
                warnings.append("metadata_too_large")
                metadata = None
        return text, blocks, metadata, warnings

    def _bot_message(self, ts: str, text: str | None, blocks: Any, metadata: JSON | None, params: JSON) -> JSON:
        msg: JSON = {
            "user": self.world.bot_user_id,
            "type": "message",
            "ts": ts,
            "bot_id": self.world.bot_id,
            "app_id": self.world.app_id,
            "text": text or "This content can't be displayed.",
            "team": self.world.team_id,
            "bot_profile": {
                "id": self.world.bot_id,
                "app_id": self.world.app_id,
                "name": "Support Copilot",
                "deleted": False,
                "team_id": self.world.team_id,
            },
        }
        return self._set_content(msg, None, blocks or None, metadata, params.get("attachments") or None)

    def _set_content(self, msg: JSON, text: str | None, blocks: Any, metadata: JSON | None, attachments: Any) -> JSON:
        """Write what a post or an update gave into ``msg`` (None: left as it is; no blocks: removed)."""
        if blocks is not None:
            msg.pop("blocks", None)
            if blocks:
                msg["blocks"] = with_block_ids(blocks)
        if text is not None:
            msg["text"] = text or "This content can't be displayed."
        if attachments is not None:
            msg["attachments"] = attachments
        if metadata is not None:
            msg["metadata"] = {"event_type": metadata["event_type"], "event_payload": metadata.get("event_payload", {})}
        return msg

    @staticmethod
    def _warn(payload: JSON, warnings: list[str]) -> JSON:
        if warnings:
            payload["warning"] = ",".join(warnings)
            payload["response_metadata"] = {"warnings": warnings}
        return payload


class ViewAndReactionMethods:
    """``views.open`` (and ``views.push``), ``views.publish`` (a Home tab) and ``reactions.add`` /
    ``reactions.remove``."""

    def __init__(self, world: SlackWorkspace) -> None:
        self.world = world
        self._view_counter = 0
        self.handlers: dict[str, Handler] = {
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.publish": self._views_publish,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }

    def _check_view(self, view: Any) -> JSON:
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", ["[ERROR] missing required field: view [json-pointer:/view]"])
        if len(json.dumps(view).encode()) > 250_000:
            raise SlackError("view_too_large")
        errs = validate_view(view)
        if errs:
            raise SlackError("invalid_arguments", errs)
        return view

    def _store_view(self, view: JSON, view_id: str, previous: JSON | None) -> JSON:
        stored: JSON = {
            "id": view_id,
            "team_id": self.world.team_id,
            "type": view["type"],
            "blocks": with_block_ids(view.get("blocks") or []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": (previous or {}).get("root_view_id", view_id),
            "app_id": self.world.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.world.team_id,
            "bot_id": self.world.bot_id,
        }
        self.world.views[view_id] = stored
        return copy_json(stored)

    def _views_open(self, params: JSON) -> JSON:
        trigger_id = params.get("trigger_id")
        if not isinstance(trigger_id, str) or not trigger_id:
            raise SlackError("invalid_trigger_id")
        view = self._check_view(params.get("view"))
        self._view_counter += 1
        return {"view": self._store_view(view, f"V{self._view_counter:010d}", None)}

    def _views_publish(self, params: JSON) -> JSON:
        """A user's Home tab: a view of type home, replaced on every publish."""
        if not isinstance(params.get("user_id"), str) or not params["user_id"]:
            raise SlackError("invalid_arguments")
        view = self._check_view(params.get("view"))
        if view.get("type") != "home":
            raise SlackError("invalid_arguments", ["[ERROR] views.publish takes a view of type home"])
        self._view_counter += 1
        return {"view": self._store_view(view, f"V{self._view_counter:010d}", None)}

    def _reaction_target(self, params: JSON) -> tuple[str, str, str, JSON | None]:
        channel = channel_of(params)
        name = params.get("name")
        ts = params.get("timestamp")
        if not isinstance(name, str) or not name:
            raise SlackError("invalid_name")
        if not isinstance(ts, str) or not ts:
            raise SlackError("bad_timestamp")
        msg = self.world.find_message(channel, ts)
        if msg is None and self.world.strict:
            raise SlackError("message_not_found")
        return channel, ts, name.strip(":"), msg

    def _reactions_add(self, params: JSON) -> JSON:
        channel, ts, name, msg = self._reaction_target(params)
        if (channel, ts, name) in self.world.reactions:
            raise SlackError("already_reacted")
        self.world.reactions.append((channel, ts, name))
        if msg is not None:
            msg.setdefault("reactions", []).append({"name": name, "users": [self.world.bot_user_id], "count": 1})
        return {}

    def _reactions_remove(self, params: JSON) -> JSON:
        channel, ts, name, msg = self._reaction_target(params)
        if (channel, ts, name) not in self.world.reactions:
            raise SlackError("no_reaction")
        self.world.reactions.remove((channel, ts, name))
        if msg is not None:
            msg["reactions"] = [r for r in msg.get("reactions", []) if r["name"] != name]
            if not msg["reactions"]:
                del msg["reactions"]
        return {}


class ReadMethods:
    """``conversations.replies`` / ``history`` / ``members`` / ``info``, ``users.info`` and ``usergroups.*``:
    what the bot reads back, paged and filtered as Slack does."""

    def __init__(self, world: SlackWorkspace) -> None:
        self.world = world
        self.handlers: dict[str, Handler] = {
            "conversations.replies": self._replies,
            "conversations.history": self._history,
            "conversations.members": self._conversations_members,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroup_users,
            "usergroups.list": self._usergroups_list,
        }

    def _present(self, msg: JSON, channel: str, include_metadata: bool) -> JSON:
        out = {k: v for k, v in msg.items() if k != "metadata" or include_metadata}
        replies = [m for m in self.world.messages_in(channel) if m.get("thread_ts") == msg["ts"] and m is not msg]
        if replies:
            users = sorted({str(m.get("user") or m.get("bot_id")) for m in replies})
            out.update(
                thread_ts=msg["ts"],
                reply_count=len(replies),
                reply_users_count=len(users),
                latest_reply=max((m["ts"] for m in replies), key=float),
                reply_users=users,
                is_locked=False,
                subscribed=False,
            )
        return copy_json(out)

    @staticmethod
    def _page(items: list[JSON], params: JSON, default_limit: int) -> tuple[list[JSON], JSON]:
        try:
            limit = int(params.get("limit") or default_limit)
            offset = int(params.get("cursor") or 0) if str(params.get("cursor") or "0").isdigit() else 0
        except ValueError as exc:
            raise SlackError("invalid_arguments") from exc
        page = items[offset : offset + max(limit, 1)]
        more = offset + len(page) < len(items)
        return page, {
            "has_more": more,
            "response_metadata": {"next_cursor": str(offset + len(page)) if more else ""},
        }

    @staticmethod
    def _in_range(msgs: list[JSON], params: JSON) -> list[JSON]:
        inclusive = truthy(params.get("inclusive"))
        oldest, latest = params.get("oldest"), params.get("latest")
        out = []
        for m in msgs:
            ts = float(m["ts"])
            if oldest and (ts < float(oldest) or (ts == float(oldest) and not inclusive)):
                continue
            if latest and (ts > float(latest) or (ts == float(latest) and not inclusive)):
                continue
            out.append(m)
        return out

    def _replies(self, params: JSON) -> JSON:
        channel = channel_of(params)
        ts = params.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackError("thread_not_found")
        anchor = self.world.find_message(channel, ts)
        thread_ts = (anchor or {}).get("thread_ts") or ts
        msgs = self.world.messages_in(channel, thread_ts)
        if not msgs:
            raise SlackError("thread_not_found")
        include_metadata = truthy(params.get("include_all_metadata"))
        # The parent is always first; oldest/latest filter only the replies.
        parent, rest = (msgs[0], msgs[1:]) if msgs[0]["ts"] == thread_ts else (None, msgs)
        ordered = ([parent] if parent else []) + self._in_range(rest, params)
        page, extra = self._page(ordered, params, 1000)
        return {"messages": [self._present(m, channel, include_metadata) for m in page], **extra}

    def _history(self, params: JSON) -> JSON:
        channel = channel_of(params)
        include_metadata = truthy(params.get("include_all_metadata"))
        top = [
            m
            for m in self.world.messages_in(channel)
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]
        newest_first = list(reversed(self._in_range(top, params)))
        page, extra = self._page(newest_first, params, 100)
        return {
            "messages": [self._present(m, channel, include_metadata) for m in page],
            "pin_count": 0,
            **extra,
        }

    def _conversations_members(self, params: JSON) -> JSON:
        channel = channel_of(params)
        if "channels:read" not in self.world.scopes and "groups:read" not in self.world.scopes:
            raise SlackError("missing_scope")
        if channel not in self.world.channels:
            raise SlackError("channel_not_found")
        page, extra = self._page([{"id": m} for m in self.world.members.get(channel, [])], params, 100)
        return {"members": [m["id"] for m in page], **extra}

    def _conversations_info(self, params: JSON) -> JSON:
        channel = channel_of(params)
        if channel not in self.world.channels:
            raise SlackError("channel_not_found")
        info = self.world.channels[channel]
        if ("groups:read" if info["is_private"] else "channels:read") not in self.world.scopes:
            raise SlackError("missing_scope")
        return {"channel": copy_json(info)}

    def _user_json(self, user_id: str, include_locale: bool) -> JSON:
        user = copy_json({k: v for k, v in self.world.users[user_id].items() if k != "_locale"})
        if "users:read.email" not in self.world.scopes:
            user["profile"].pop("email", None)
        if include_locale:
            user["locale"] = self.world.users[user_id]["_locale"]
        return copy_json(user)

    def _users_info(self, params: JSON) -> JSON:
        if "users:read" not in self.world.scopes:
            raise SlackError("missing_scope")
        user_id = params.get("user")
        if not isinstance(user_id, str) or not user_id:
            raise SlackError("user_not_found")
        if user_id not in self.world.users:
            if self.world.strict or user_id[0] not in "UW":
                raise SlackError("user_not_found")
            self.world.add_user(user_id, user_id.lower())
        return {"user": self._user_json(user_id, truthy(params.get("include_locale")))}

    def _usergroups_list(self, params: JSON) -> JSON:
        with_users = truthy(params.get("include_users"))
        groups = []
        for group_id, members in sorted(self.world.usergroups.items()):
            group: JSON = {
                "id": group_id,
                "team_id": self.world.team_id,
                "handle": group_id.lower(),
                "is_usergroup": True,
            }
            if with_users:
                group["users"] = list(members)
                group["user_count"] = len(members)
            groups.append(group)
        return {"usergroups": groups}

    def _usergroup_users(self, params: JSON) -> JSON:
        group = params.get("usergroup")
        if not isinstance(group, str) or group not in self.world.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.world.usergroups[group])}
