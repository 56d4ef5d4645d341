"""Builders for the HTTP requests Slack sends to an app, plus request signing.

Shapes follow ``/work/shared/reference/slack.md`` §3.2 (checked there against a real bolt
``AsyncApp``).  Events go out as ``application/json``; interactivity as
``application/x-www-form-urlencoded`` with a single ``payload=<urlencoded JSON>`` field.

Usage::

    sender = SlackSender(f"{bot_url}/slack/events", signing_secret, mirror_to=slack)
    resp = await sender.event(app_mention("<@UBOT> where is order #W2611340?"))
    assert resp.status_code == 200

Message timestamps come from :func:`next_ts`, a process-wide monotonic clock that
:class:`tests.fakes.slack.FakeSlack` shares, so events built here and messages posted by the bot
sort in creation order.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

if TYPE_CHECKING:
    from tests.fakes.slack import FakeSlack

__all__ = [
    "SlackSender", "action_body", "app_mention", "block_actions", "event_body", "message", "message_changed",
    "message_deleted", "message_tombstoned", "next_event_id", "next_ts", "observe_ts", "rich_text_blocks", "sign",
    "url_verification", "view_submission",
]  # fmt: skip

JSON: TypeAlias = dict[str, Any]

API_APP_ID = "A111"
BOT_USER_ID = "UBOT"
VERIFICATION_TOKEN = "verification_token"  # the legacy token field Slack still sends
#: Default ``response_url``: a dead loopback port, so a payload built without
#: ``response_url=slack.response_url(...)`` can never reach the internet.
DEAD_RESPONSE_URL = "http://127.0.0.1:9/webhook/unset"

_lock = threading.Lock()
_last_ts_us = 0
_event_counter = itertools.count(1)
_trigger_counter = itertools.count(1)


def next_ts() -> str:
    """A fresh, strictly increasing Slack ``ts`` (``"<unix seconds>.<6 digits>"``), near wall time."""
    global _last_ts_us  # noqa: PLW0603 - one process-wide clock on purpose
    with _lock:
        _last_ts_us = max(int(time.time() * 1_000_000), _last_ts_us + 100)
        return f"{_last_ts_us // 1_000_000}.{_last_ts_us % 1_000_000:06d}"


def observe_ts(ts: str) -> None:
    """Make :func:`next_ts` return values after ``ts`` (used when tests supply their own ts)."""
    global _last_ts_us  # noqa: PLW0603
    try:
        seconds, _, micros = ts.partition(".")
        value = int(seconds) * 1_000_000 + int((micros or "0").ljust(6, "0")[:6])
    except ValueError:
        return
    with _lock:
        _last_ts_us = max(_last_ts_us, value)


def next_event_id() -> str:
    """A fresh Events API ``event_id`` such as ``Ev0000000001``."""
    return f"Ev{next(_event_counter):010d}"


def _trigger_id() -> str:
    return f"4916855695380.{next(_trigger_counter)}.{uuid.uuid4().hex[:32]}"


# --------------------------------------------------------------------------------------------------
# Signing and bodies
# --------------------------------------------------------------------------------------------------


def sign(body: str, secret: str, timestamp: int | None = None, content_type: str | None = None) -> dict[str, str]:
    """Headers Slack would send with ``body``: timestamp, ``v0=`` HMAC-SHA256 signature, Content-Type.

    The content type defaults to form-encoded for ``payload=...`` bodies and JSON otherwise.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    if content_type is None:
        content_type = "application/x-www-form-urlencoded" if body.startswith("payload=") else "application/json"
    return {
        "Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
    }  # fmt: skip


def event_body(envelope: JSON) -> str:
    """The exact JSON text of an Events API request."""
    return json.dumps(envelope)


def action_body(payload: JSON) -> str:
    """The exact form-encoded text of an interactivity request: ``payload=<urlencoded JSON>``."""
    return "payload=" + urllib.parse.quote(json.dumps(payload))


# --------------------------------------------------------------------------------------------------
# Events API
# --------------------------------------------------------------------------------------------------


_MENTION_RE = re.compile(r"<@([A-Z0-9]+)>")


def rich_text_blocks(text: str) -> list[JSON]:
    """The ``rich_text`` block Slack attaches to a user's message (mentions become user elements)."""
    elements: list[JSON] = []
    pos = 0
    for match in _MENTION_RE.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        pos = match.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    return [
        {
            "type": "rich_text",
            "block_id": uuid.uuid4().hex[:5],
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def _envelope(event: JSON, event_id: str | None, team: str, ext_shared: bool) -> JSON:
    ts = str(event.get("event_ts") or event.get("ts") or next_ts())
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team,
        "context_team_id": team,
        "context_enterprise_id": None,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or next_event_id(),
        "event_time": int(float(ts)),
        "authorizations": [
            {"enterprise_id": None, "team_id": team, "user_id": BOT_USER_ID, "is_bot": True}
            | {"is_enterprise_install": False}
        ],
        "is_ext_shared_channel": ext_shared,
        "event_context": "4-" + uuid.uuid4().hex,
    }


def _ts(ts: str | None) -> str:
    if ts is None:
        return next_ts()
    observe_ts(ts)
    return ts


def app_mention(
    text: str,
    user: str = "U222",
    channel: str = "C111",
    ts: str | None = None,
    event_id: str | None = None,
    team: str = "T111",
    thread_ts: str | None = None,
    ext_shared: bool = False,
    files: list[JSON] | None = None,
    edited: bool = False,
) -> JSON:
    """An ``event_callback`` envelope carrying an ``app_mention`` event (with ``files``, the
    message's file objects). ``edited`` builds what Slack sends when the author edits a message
    that mentions the app: the same ``ts`` (pass the original's), a new ``event_id`` and
    ``event_ts``, and an ``edited`` object naming who edited it and when."""
    if edited and ts is None:
        raise ValueError("an edited app_mention keeps the original message's ts: pass ts=")
    ts = _ts(ts)
    event: JSON = {
        "client_msg_id": str(uuid.uuid4()), "type": "app_mention", "text": text, "user": user, "ts": ts,
        "blocks": rich_text_blocks(text), "team": team, "channel": channel, "event_ts": ts,
    }  # fmt: skip
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if files is not None:
        event["files"] = files
    if edited:
        event["event_ts"] = next_ts()
        event["edited"] = {"user": user, "ts": event["event_ts"]}
    return _envelope(event, event_id, team, ext_shared)


def message(
    text: str,
    user: str | None = "U222",
    channel: str = "C111",
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    event_id: str | None = None,
    subtype: str | None = None,
    bot_id: str | None = None,
    edited: JSON | None = None,
    team: str = "T111",
    parent_user_id: str | None = None,
    ext_shared: bool = False,
) -> JSON:
    """An ``event_callback`` envelope carrying a ``message`` event.

    A thread reply has ``thread_ts`` different from ``ts`` (``parent_user_id`` defaults to ``user``).
    ``channel_type`` is ``channel``, ``group``, ``im`` or ``mpim``.  Bot posts carry ``bot_id``
    (and ``subtype="bot_message"`` for non-app bots).  ``edited`` is ``{"user": ..., "ts": ...}``.
    """
    ts = _ts(ts)
    event: JSON = {"type": "message", "text": text, "ts": ts, "team": team}
    if subtype is not None:
        event["subtype"] = subtype
    if user is not None:
        event["user"] = user
    if bot_id is not None:
        event["bot_id"] = bot_id
        event["app_id"] = "A" + bot_id[1:]
    else:
        event["client_msg_id"] = str(uuid.uuid4())
        event["blocks"] = rich_text_blocks(text)
    if edited is not None:
        event["edited"] = edited
    _in_thread(event, ts, thread_ts, parent_user_id or user)
    event.update(channel=channel, event_ts=ts, channel_type=channel_type)
    return _envelope(event, event_id, team, ext_shared)


def _in_thread(message: JSON, ts: str, thread_ts: str | None, parent_user_id: str | None) -> JSON:
    """``message`` with Slack's thread fields: ``thread_ts``, and ``parent_user_id`` on a reply."""
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
        if thread_ts != ts:
            message["parent_user_id"] = parent_user_id
    return message


def _hidden_change(
    subtype: str, channel: str, channel_type: str, team: str, event_id: str | None, event_ts: str = "", **fields: Any
) -> JSON:
    """The envelope of a hidden ``message_changed`` / ``message_deleted`` event (its own fresh ``ts``)."""
    event_ts = event_ts or next_ts()
    event: JSON = {"type": "message", "subtype": subtype, **fields, "channel": channel, "hidden": True}
    event.update(ts=event_ts, event_ts=event_ts, channel_type=channel_type)
    return _envelope(event, event_id, team, False)


def message_changed(
    channel: str,
    ts: str,
    text: str,
    previous_text: str,
    user: str = "U222",
    thread_ts: str | None = None,
    channel_type: str = "channel",
    event_id: str | None = None,
    team: str = "T111",
) -> JSON:
    """An envelope for an edit: ``subtype: message_changed`` with nested ``message`` (the new text,
    the original ``ts``, an ``edited`` object) and ``previous_message``, as Slack sends it when a
    user edits a message (unfurls and a bot's own ``chat.update`` arrive the same way)."""
    client_msg_id = str(uuid.uuid4())

    def shown(body: str) -> JSON:
        nested: JSON = {"client_msg_id": client_msg_id, "type": "message", "text": body, "user": user, "ts": ts}
        nested.update(blocks=rich_text_blocks(body), team=team, source_team=team, user_team=team)
        return _in_thread(nested, ts, thread_ts, user)

    event_ts = next_ts()
    inner = {**shown(text), "edited": {"user": user, "ts": event_ts}}
    return _hidden_change(
        "message_changed", channel, channel_type, team, event_id, event_ts,
        message=inner, previous_message=shown(previous_text),
    )  # fmt: skip


def message_deleted(
    channel: str,
    ts: str,
    previous_text: str = "",
    user: str = "U222",
    channel_type: str = "channel",
    event_id: str | None = None,
    team: str = "T111",
    thread_ts: str | None = None,
) -> JSON:
    """An envelope for a deletion: ``subtype: message_deleted`` with ``deleted_ts`` and the
    ``previous_message`` (carrying ``thread_ts`` for a message in a thread)."""
    previous: JSON = {"type": "message", "text": previous_text, "user": user, "ts": ts, "team": team}
    return _hidden_change(
        "message_deleted", channel, channel_type, team, event_id,
        previous_message=_in_thread(previous, ts, thread_ts, user), deleted_ts=ts,
    )  # fmt: skip


def message_tombstoned(
    channel: str, ts: str, previous_text: str, user: str = "U222", reply_count: int = 1, team: str = "T111"
) -> JSON:
    """An envelope for a thread's first message deleted while it has replies: no
    ``message_deleted`` but a ``message_changed`` whose ``message`` is a ``tombstone``."""
    thread = {"ts": ts, "thread_ts": ts, "reply_count": reply_count}
    previous: JSON = {"type": "message", "text": previous_text, "user": user, **thread, "team": team}
    tombstone: JSON = {"type": "message", "subtype": "tombstone", "text": "This message was deleted."}
    tombstone.update(user="USLACKBOT", hidden=True, **thread)
    return _hidden_change(
        "message_changed", channel, "channel", team, None, message=tombstone, previous_message=previous
    )


def url_verification(challenge: str) -> JSON:
    """The ``url_verification`` handshake body."""
    return {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}


# --------------------------------------------------------------------------------------------------
# Interactivity
# --------------------------------------------------------------------------------------------------


def _user(user: str, team: str) -> JSON:
    name = f"agent.{user.lower()}"
    return {"id": user, "username": name, "name": name, "team_id": team}


def block_actions(
    action_id: str,
    value: str,
    user: str = "U333",
    channel: str = "C999",
    message_ts: str | None = None,
    block_id: str = "draft_actions",
    response_url: str = DEAD_RESPONSE_URL,
    trigger_id: str | None = None,
    thread_ts: str | None = None,
    message: JSON | None = None,
    team: str = "T111",
    button_text: str = "Button",
    style: str | None = None,
    is_ephemeral: bool = False,
) -> JSON:
    """A ``block_actions`` payload for a button click.

    ``message`` is the clicked message as Slack shows it (e.g. one from ``slack.messages_in(...)``);
    by default a bot message holding just the clicked button.  Pass
    ``response_url=slack.response_url("name")`` to capture ``respond()`` calls.
    """
    message_ts = message_ts or (message or {}).get("ts") or next_ts()
    button: JSON = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": button_text}}
    button["value"] = value
    if style is not None:
        button["style"] = style
    if message is None:
        message = {"type": "message", "text": "draft ready", "user": BOT_USER_ID, "ts": message_ts, "bot_id": "BBOT"}
        actions = {"type": "actions", "block_id": block_id, "elements": [button]}
        message.update(app_id=API_APP_ID, team=team, blocks=[actions])
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
    container: JSON = {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": is_ephemeral}
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
    action = {**button, "block_id": block_id, "action_ts": next_ts()}
    return {
        "type": "block_actions", "user": _user(user, team), "api_app_id": API_APP_ID, "token": VERIFICATION_TOKEN,
        "container": container, "trigger_id": trigger_id or _trigger_id(), "team": {"id": team, "domain": "acme"},
        "enterprise": None, "is_enterprise_install": False, "channel": {"id": channel, "name": "support-drafts"},
        "message": message, "state": {"values": {}}, "response_url": response_url, "actions": [action],
    }  # fmt: skip


def view_submission(
    callback_id: str,
    private_metadata: str,
    values: dict[str, dict[str, Any]],
    user: str = "U333",
    view_id: str = "V111",
    team: str = "T111",
    title: str = "Edit draft",
    submit: str = "Send",
    trigger_id: str | None = None,
) -> JSON:
    """A ``view_submission`` payload.

    ``values`` maps ``block_id -> action_id -> value``; a str value becomes a ``plain_text_input``
    state, a dict is used as the state object verbatim (e.g. for selects).
    """
    state: JSON = {}
    blocks: list[JSON] = []
    for block_id, actions in values.items():
        state[block_id] = {}
        for action_id, value in actions.items():
            if isinstance(value, dict):
                state[block_id][action_id] = value
                element_type = value.get("type", "plain_text_input")
            else:
                state[block_id][action_id] = {"type": "plain_text_input", "value": value}
                element_type = "plain_text_input"
            label = {"type": "plain_text", "text": block_id}
            element = {"type": element_type, "action_id": action_id}
            blocks.append({"type": "input", "block_id": block_id, "label": label, "optional": False})
            blocks[-1].update(dispatch_action=False, element=element)
    return {
        "type": "view_submission",
        "team": {"id": team, "domain": "acme"},
        "user": _user(user, team),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or _trigger_id(),
        "view": {
            "id": view_id, "team_id": team, "type": "modal", "callback_id": callback_id,
            "private_metadata": private_metadata, "blocks": blocks, "state": {"values": state},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}", "title": {"type": "plain_text", "text": title},
            "clear_on_close": False, "notify_on_close": False, "close": None,
            "submit": {"type": "plain_text", "text": submit}, "previous_view_id": None, "root_view_id": view_id,
            "app_id": API_APP_ID, "external_id": "", "app_installed_team_id": team, "bot_id": "BBOT",
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def message_shortcut(
    message: JSON,
    callback_id: str = "draft_reply",
    user: str = "U333",
    channel: str = "C111",
    team: str = "T111",
    response_url: str = DEAD_RESPONSE_URL,
) -> JSON:
    """A message shortcut (``message_action``) on ``message`` (a message event as Slack stored
    it, e.g. ``message(...)["event"]``), in bolt-python's tests' shape."""
    shown = {k: v for k, v in message.items() if k not in ("channel", "channel_type", "event_ts")}
    return {
        "type": "message_action", "token": VERIFICATION_TOKEN, "action_ts": next_ts(),
        "team": {"id": team, "domain": "acme"}, "user": {"id": user, "name": f"agent.{user.lower()}", "team_id": team},
        "channel": {"id": channel, "name": "support"}, "callback_id": callback_id, "trigger_id": _trigger_id(),
        "message_ts": message["ts"], "message": shown, "response_url": response_url,
    }  # fmt: skip


def slash_command(
    text: str,
    user: str = "U333",
    channel: str = "C111",
    command: str = "/supportbot",
    team: str = "T111",
    response_url: str = DEAD_RESPONSE_URL,
) -> dict[str, str]:
    """A slash command's form fields, as Slack posts them (bolt-python's tests' shape)."""
    return {
        "token": VERIFICATION_TOKEN, "team_id": team, "team_domain": "acme", "channel_id": channel,
        "channel_name": "support", "user_id": user, "user_name": f"agent.{user.lower()}", "command": command,
        "text": text, "api_app_id": API_APP_ID, "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": _trigger_id(),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------------


class SlackSender:
    """Posts signed requests to an app's ``/slack/events`` URL, the way Slack does.

    With ``mirror_to=<FakeSlack>`` every event sent is also stored in that fake (so the bot's
    ``conversations.replies``/``reactions.add`` find the customer's messages).
    """

    def __init__(
        self, url: str, signing_secret: str, *, mirror_to: FakeSlack | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.mirror_to = mirror_to
        self.timeout = timeout

    async def event(
        self,
        envelope: JSON,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
    ) -> httpx.Response:
        """POST an Events API envelope (a retry when ``retry_num`` is set: same body, retry headers)."""
        if self.mirror_to is not None and retry_num is None:
            self.mirror_to.ingest_event(envelope)
        body = event_body(envelope)
        headers = sign(body, self.signing_secret, timestamp, "application/json")
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return await self.raw(body, headers)

    async def action(self, payload: JSON, timestamp: int | None = None) -> httpx.Response:
        """POST an interactivity payload (``block_actions``, ``view_submission``, ...)."""
        body = action_body(payload)
        return await self.raw(body, sign(body, self.signing_secret, timestamp, "application/x-www-form-urlencoded"))

    async def command(self, fields: dict[str, str], timestamp: int | None = None) -> httpx.Response:
        """POST a slash command's form."""
        body = urllib.parse.urlencode(fields)
        return await self.raw(body, sign(body, self.signing_secret, timestamp, "application/x-www-form-urlencoded"))

    async def raw(self, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
        """POST exactly these bytes with these headers."""
        content = body.encode() if isinstance(body, str) else body
        merged = {"User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)", **headers}
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return await client.post(self.url, content=content, headers=merged)
