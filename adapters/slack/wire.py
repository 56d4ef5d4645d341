"""Slack's payloads as they arrive on the wire: TypedDicts of the fields the adapter reads,
and small parsers that check them (the way discord.py keeps ``types/`` apart from models).

Everything from Slack passes one of these parsers before the adapter reads it, so a signed
but malformed payload (``ts`` not a number, ``files`` not a list, ``private_metadata`` not
JSON, an ``event`` that is a string...) becomes one :class:`MalformedPayload` naming the
field, never an ``AttributeError`` deep in a listener. The adapter answers it with 200
("ignored", so Slack does not redeliver) or, for a body that is not a Slack request at all,
400 (:class:`NotASlackRequest`).
"""

from __future__ import annotations

import math
import urllib.parse
from typing import Any, NotRequired, TypedDict

from bot.events import Vote
from tools.json_input import NestedTooDeeply, loads

#: Seconds since 1970 a ``ts`` may carry (the year 5138): larger is no Slack timestamp.
MAX_TIMESTAMP = 1e11


class MalformedPayload(ValueError):
    """A Slack payload that parsed as JSON but does not have the shape Slack documents.
    ``reason`` names the field, e.g. ``"event.ts is not a number"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotASlackRequest(MalformedPayload):
    """A body that is no Slack request at all (not a JSON object nor a ``payload=`` form)."""


class FileObject(TypedDict):
    """One entry of a message's ``files`` (only what the adapter reads)."""

    name: str
    mimetype: str
    size: int
    url_private: str
    url_private_download: str
    #: ``is_external`` or ``mode`` ``external`` / ``remote``: a link to a file kept elsewhere.
    external: bool


class MessageEvent(TypedDict):
    """A ``message`` or ``app_mention`` event (``event`` of an ``event_callback``)."""

    type: str
    channel: str
    ts: str
    user: str
    text: str
    files: list[FileObject]
    thread_ts: NotRequired[str]
    team: NotRequired[str]
    user_team: NotRequired[str]
    channel_type: NotRequired[str]
    subtype: NotRequired[str]
    bot_id: NotRequired[str]


class DeletedMessage(TypedDict):
    """A ``message_deleted`` event: which message went (``deleted_ts``), and the thread it was in
    when ``previous_message`` tells (Slack includes it for thread replies)."""

    channel: str
    ts: str
    thread_ts: NotRequired[str]
    channel_type: NotRequired[str]


class EventCallback(TypedDict):
    """The Events API envelope."""

    type: str
    event_id: str
    team_id: str
    is_ext_shared_channel: bool
    event: dict[str, Any]


class UserRef(TypedDict):
    """``user`` of an interactivity payload."""

    id: str


class BlockAction(TypedDict):
    """One element of ``actions`` in a ``block_actions`` payload (a button)."""

    action_id: str
    value: str


class BlockActions(TypedDict):
    """A button click on a card."""

    type: str
    user: UserRef
    actions: list[BlockAction]
    trigger_id: str
    channel_id: str


class ModalMetadata(TypedDict):
    """What our modals carry in ``private_metadata``."""

    draft_id: str
    channel: str


class ViewSubmission(TypedDict):
    """A modal submitted: the inputs by ``block_id`` → ``action_id`` → value."""

    type: str
    user: UserRef
    callback_id: str
    metadata: ModalMetadata
    values: dict[str, dict[str, str | None]]


class MessageShortcut(TypedDict):
    """A message shortcut (``message_action``): who used it, on which message, where, and the
    ``response_url`` that answers the user alone."""

    callback_id: str
    user: UserRef
    user_team: str
    team_id: str
    channel: str
    message: dict[str, Any]
    response_url: str


class SlashCommand(TypedDict):
    """A slash command (a form post): who typed what, where."""

    command: str
    text: str
    user_id: str
    team_id: str
    channel_id: str


class UserInfo(TypedDict):
    """What ``users.info`` tells about a user (only what the adapter reads)."""

    id: str
    email: str


# -- the front door -------------------------------------------------------------------------


def parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """The request body as Bolt will read it; :class:`NotASlackRequest` for anything Slack never
    sends (a JSON array or ``null``, undecodable bytes, a ``payload=`` that is not a JSON object).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotASlackRequest("the body is not UTF-8") from None
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
        if "payload" not in form:
            return dict(form)
        try:
            payload = loads(form["payload"])
        except NestedTooDeeply as exc:
            raise NotASlackRequest(f"the form's payload is {exc}") from None
        except ValueError:
            raise NotASlackRequest("the form's payload is not JSON") from None
        if not isinstance(payload, dict):
            raise NotASlackRequest(f"the form's payload is {_json_kind(payload)}, not an object")
        return payload
    try:
        body = loads(text)
    except NestedTooDeeply as exc:
        raise NotASlackRequest(f"the body is {exc}") from None
    except ValueError:
        raise NotASlackRequest("the body is neither JSON nor a form") from None
    if not isinstance(body, dict):
        raise NotASlackRequest(f"the body is {_json_kind(body)}, not an object")
    return body


def check_envelope(body: dict[str, Any]) -> None:
    """Check the outer shape Bolt's own middleware relies on, before Bolt sees the body."""
    kind = body.get("type")
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict):
            raise MalformedPayload(f"event is {_kind(event)}, not an object")
        if not isinstance(event.get("type"), str):
            raise MalformedPayload("event.type is missing")
        for key in ("user", "channel"):  # an id, or an object in events such as channel_created
            value = event.get(key)
            if value is not None and not isinstance(value, str | dict):
                raise MalformedPayload(f"event.{key} is {_kind(value)}")
        _optional_str(event, "bot_id", "event.bot_id")
        _optional_str(event, "subtype", "event.subtype")
    elif kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
            raise MalformedPayload("actions is missing or not a list of objects")
        _user(body)
    elif kind == "message_action":
        if not isinstance(body.get("message"), dict):
            raise MalformedPayload("message is missing or not an object")
        _user(body)
    elif kind in ("view_submission", "view_closed"):
        if not isinstance(body.get("view"), dict):
            raise MalformedPayload("view is missing or not an object")
        _user(body)
    for key in ("team", "user", "channel", "container", "enterprise"):
        value = body.get(key)
        if value is not None and not isinstance(value, dict | str):
            raise MalformedPayload(f"{key} is {_kind(value)}")


# -- events ---------------------------------------------------------------------------------


def parse_event_callback(body: dict[str, Any]) -> EventCallback:
    event = body.get("event")
    if not isinstance(event, dict):
        raise MalformedPayload(f"event is {_kind(event)}, not an object")
    return EventCallback(
        type=str(body.get("type") or ""),
        event_id=_str(body, "event_id", "event_id"),
        team_id=_str(body, "team_id", "team_id"),
        is_ext_shared_channel=bool(body.get("is_ext_shared_channel")),
        event=event,
    )


def parse_message_event(event: dict[str, Any]) -> MessageEvent:
    """A customer's ``message`` / ``app_mention`` event, checked field by field."""
    ts = _timestamp(event, "ts", "event.ts", required=True)
    files_raw = event.get("files")
    if files_raw is None:
        files_raw = []
    if not isinstance(files_raw, list):
        raise MalformedPayload(f"event.files is {_kind(files_raw)}, not a list")
    parsed: MessageEvent = MessageEvent(
        type=_str(event, "type", "event.type"),
        channel=_str(event, "channel", "event.channel"),
        ts=ts,
        user=_str(event, "user", "event.user"),
        text=_str(event, "text", "event.text"),
        files=[_file(item, index) for index, item in enumerate(files_raw)],
    )
    thread_ts = _timestamp(event, "thread_ts", "event.thread_ts")
    if thread_ts:
        parsed["thread_ts"] = thread_ts
    for key in ("team", "user_team", "channel_type", "subtype", "bot_id"):
        value = _str(event, key, f"event.{key}")
        if value:
            parsed[key] = value
    return parsed


def parse_changed_message(event: dict[str, Any]) -> MessageEvent:
    """The message as edited, from a ``message_changed`` event: its nested ``message`` (which
    keeps the original ``ts``, else ``previous_message`` tells it), with the channel the outer
    event names."""
    inner = event.get("message")
    if not isinstance(inner, dict):
        raise MalformedPayload(f"event.message is {_kind(inner)}, not an object")
    previous = event.get("previous_message")
    outer = {
        "channel": _str(event, "channel", "event.channel"),
        "channel_type": _str(event, "channel_type", "event.channel_type"),
    }
    if not inner.get("ts") and isinstance(previous, dict):
        outer["ts"] = _timestamp(previous, "ts", "event.previous_message.ts")
    return parse_message_event({"type": "message", **inner, **outer})


def parse_deleted_message(event: dict[str, Any]) -> DeletedMessage:
    """A ``message_deleted`` event (or a ``message_changed`` that leaves a ``tombstone``: a thread's
    first message deleted while it has replies)."""
    previous = event.get("previous_message") or event.get("message") or {}
    if not isinstance(previous, dict):
        raise MalformedPayload(f"event.previous_message is {_kind(previous)}, not an object")
    ts = _timestamp(event, "deleted_ts", "event.deleted_ts") or _timestamp(
        previous, "ts", "event.message.ts", required=True
    )
    parsed = DeletedMessage(channel=_str(event, "channel", "event.channel"), ts=ts)
    thread_ts = _timestamp(previous, "thread_ts", "event.previous_message.thread_ts")
    if thread_ts:
        parsed["thread_ts"] = thread_ts
    channel_type = _str(event, "channel_type", "event.channel_type")
    if channel_type:
        parsed["channel_type"] = channel_type
    return parsed


def _file(item: Any, index: int) -> FileObject:
    where = f"event.files[{index}]"
    if not isinstance(item, dict):
        raise MalformedPayload(f"{where} is {_kind(item)}, not an object")
    size = item.get("size", 0)
    if size is None:
        size = 0
    if isinstance(size, bool) or not isinstance(size, int | float) or not math.isfinite(size) or size < 0:
        raise MalformedPayload(f"{where}.size is not a size")
    return FileObject(
        name=_str(item, "name", f"{where}.name") or "file",
        mimetype=_str(item, "mimetype", f"{where}.mimetype") or "application/octet-stream",
        size=int(size),
        url_private=_str(item, "url_private", f"{where}.url_private"),
        url_private_download=_str(item, "url_private_download", f"{where}.url_private_download"),
        external=item.get("is_external") is True or _str(item, "mode", f"{where}.mode") in ("external", "remote"),
    )


# -- interactivity --------------------------------------------------------------------------


def parse_block_actions(body: dict[str, Any]) -> BlockActions:
    """A click: the first action must carry the draft id as its ``value``."""
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise MalformedPayload("actions is missing or not a list of objects")
    first = actions[0]
    value = _str(first, "value", "actions[0].value")
    if not value:
        raise MalformedPayload("actions[0].value (the draft id) is empty")
    container = body.get("container")
    channel = ""
    if isinstance(container, dict):
        channel = _str(container, "channel_id", "container.channel_id")
    return BlockActions(
        type="block_actions",
        user=_user(body),
        actions=[BlockAction(action_id=_str(first, "action_id", "actions[0].action_id"), value=value)],
        trigger_id=_str(body, "trigger_id", "trigger_id"),
        channel_id=channel,
    )


def parse_vote(value: str) -> tuple[Vote, str]:
    """A feedback button's value ("up:<draft id>" / "down:<draft id>"): the vote and the draft."""
    vote, _, draft_id = value.partition(":")
    if vote not in (Vote.UP, Vote.DOWN) or not draft_id:
        raise MalformedPayload(f"actions[0].value {value[:40]!r} is not a vote on a reply")
    return Vote(vote), draft_id


def parse_message_shortcut(body: dict[str, Any]) -> MessageShortcut:
    """A ``message_action``: the message is checked later as a message event
    (:func:`parse_message_event`), with its channel from the payload."""
    message = body.get("message")
    if not isinstance(message, dict):
        raise MalformedPayload("message is missing or not an object")
    team, channel, user = body.get("team"), body.get("channel"), body.get("user")
    if not isinstance(team, dict) or not isinstance(channel, dict) or not isinstance(user, dict):
        raise MalformedPayload("team, channel or user is missing or not an object")
    channel_id = _str(channel, "id", "channel.id")
    if not channel_id:
        raise MalformedPayload("channel.id is empty")
    return MessageShortcut(
        callback_id=_str(body, "callback_id", "callback_id"),
        user=_user(body),
        user_team=_str(user, "team_id", "user.team_id"),
        team_id=_str(team, "id", "team.id"),
        channel=channel_id,
        message=message,
        response_url=_str(body, "response_url", "response_url"),
    )


def parse_slash_command(body: dict[str, Any]) -> SlashCommand:
    """A slash command's form fields; the user must be named."""
    command = SlashCommand(
        command=_str(body, "command", "command"),
        text=_str(body, "text", "text"),
        user_id=_str(body, "user_id", "user_id"),
        team_id=_str(body, "team_id", "team_id"),
        channel_id=_str(body, "channel_id", "channel_id"),
    )
    if not command["user_id"]:
        raise MalformedPayload("user_id is empty")
    return command


def parse_view_submission(body: dict[str, Any]) -> ViewSubmission:
    """A modal submitted: ``private_metadata`` must be our JSON object with a draft id."""
    view = body.get("view")
    if not isinstance(view, dict):
        raise MalformedPayload("view is missing or not an object")
    raw_meta = view.get("private_metadata")
    if raw_meta is None:
        raise MalformedPayload("view.private_metadata is missing")
    if not isinstance(raw_meta, str):
        raise MalformedPayload(f"view.private_metadata is {_kind(raw_meta)}, not a string")
    try:
        meta = loads(raw_meta)
    except NestedTooDeeply as exc:
        raise MalformedPayload(f"view.private_metadata is not JSON we wrote ({exc})") from None
    except ValueError:
        raise MalformedPayload("view.private_metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise MalformedPayload(f"view.private_metadata is {_json_kind(meta)}, not an object")
    draft_id = _str(meta, "draft_id", "view.private_metadata.draft_id")
    if not draft_id:
        raise MalformedPayload("view.private_metadata carries no draft_id")
    values: dict[str, dict[str, str | None]] = {}
    state = view.get("state")
    if state is not None and not isinstance(state, dict):
        raise MalformedPayload(f"view.state is {_kind(state)}, not an object")
    raw_values = state.get("values") if isinstance(state, dict) else None
    if raw_values is not None and not isinstance(raw_values, dict):
        raise MalformedPayload("view.state.values is not an object")
    for block_id, actions in (raw_values or {}).items():
        if not isinstance(actions, dict):
            raise MalformedPayload(f"view.state.values.{block_id} is not an object")
        values[str(block_id)] = {}
        for action_id, state_value in actions.items():
            if not isinstance(state_value, dict):
                raise MalformedPayload(f"view.state.values.{block_id}.{action_id} is not an object")
            value = state_value.get("value")
            if value is not None and not isinstance(value, str):
                raise MalformedPayload(f"view.state.values.{block_id}.{action_id}.value is not text")
            values[str(block_id)][str(action_id)] = value
    return ViewSubmission(
        type="view_submission",
        user=_user(body),
        callback_id=_str(view, "callback_id", "view.callback_id"),
        metadata=ModalMetadata(draft_id=draft_id, channel=_str(meta, "channel", "view.private_metadata.channel")),
        values=values,
    )


# -- Web API answers ------------------------------------------------------------------------


def parse_user_info(response: Any) -> UserInfo:
    """``users.info``: the e-mail is empty when Slack does not share it (no ``users:read.email``)."""
    user = response.get("user") if isinstance(response, dict) else None
    if not isinstance(user, dict):
        raise MalformedPayload("users.info answered without a user")
    profile = user.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else None
    return UserInfo(id=_str(user, "id", "user.id"), email=email if isinstance(email, str) else "")


def parse_channel_privacy(response: Any) -> bool:
    """``conversations.info``: whether the conversation is private (a DM, a group DM, a private
    channel) and not shared with another organisation (``is_ext_shared``)."""
    channel = response.get("channel") if isinstance(response, dict) else None
    if not isinstance(channel, dict):
        raise MalformedPayload("conversations.info answered without a channel")
    if channel.get("is_ext_shared") is True:
        return False
    return any(channel.get(flag) is True for flag in ("is_im", "is_mpim", "is_private"))


def metadata_key_of(message: Any, event_type: str) -> str | None:
    """The key in a history message's metadata, when it carries our ``event_type``."""
    if not isinstance(message, dict):
        return None
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != event_type:
        return None
    payload = metadata.get("event_payload")
    key = payload.get("key") if isinstance(payload, dict) else None
    return key if isinstance(key, str) else None


# -- helpers --------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """What a JSON value is, with its article: "an array", "null", "a string"..."""
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _json_kind(value: Any) -> str:
    """The same, as a JSON document: "a JSON array", "JSON null"..."""
    if value is None:
        return "JSON null"
    return "a JSON " + _kind(value).split(" ", 1)[1]


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedPayload(f"{where} is {_kind(value)}, not a string")
    return value


def _optional_str(obj: dict[str, Any], key: str, where: str) -> None:
    _str(obj, key, where)


def _timestamp(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    """A Slack ``ts``: a string such as ``"1712345678.000100"``."""
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise MalformedPayload(f"{where} is missing")
        return ""
    if not isinstance(value, str):
        raise MalformedPayload(f"{where} is {_kind(value)}, not a timestamp string")
    try:
        number = float(value)
    except ValueError:
        raise MalformedPayload(f"{where} is not a number") from None
    if not math.isfinite(number) or not 0 <= number < MAX_TIMESTAMP:
        raise MalformedPayload(f"{where} is not a timestamp")
    return value


def _user(body: dict[str, Any]) -> UserRef:
    user = body.get("user")
    if not isinstance(user, dict):
        raise MalformedPayload("user is missing or not an object")
    user_id = _str(user, "id", "user.id")
    if not user_id:
        raise MalformedPayload("user.id is empty")
    return UserRef(id=user_id)
