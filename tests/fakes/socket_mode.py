"""A fake Slack Socket Mode endpoint on loopback, on top of :class:`tests.fakes.slack.FakeSlack`.

Socket Mode, as ``slack_sdk.socket_mode.aiohttp.SocketModeClient`` (used by bolt's
``AsyncSocketModeHandler``) speaks it:

1. The app calls ``apps.connections.open`` on the Web API with its **app-level** token
   (``Authorization: Bearer xapp-...``) through the ``AsyncWebClient`` it was given. Bolt's handler
   passes ``app.client``, so the call goes to the same ``base_url`` as every other Web API call
   (the bot's ``SLACK_API_URL``). The answer is ``{"ok": true, "url": "wss://..."}``.
2. The app opens a WebSocket to that URL. Slack sends ``{"type": "hello", ...}`` first, then
   envelopes: ``{"envelope_id", "payload", "type": "events_api" | "interactive" | ...,
   "accepts_response_payload", "retry_attempt", "retry_reason"}``.
3. The app acks each envelope by sending ``{"envelope_id": "..."}`` (plus ``payload`` when it has
   a response body) back over the socket.
4. Slack may send ``{"type": "disconnect", "reason": "refresh_requested"}``; the app then asks for a
   new URL and reconnects.

Usage::

    async with SocketModeSlack(bot_token="xoxb-test", app_token="xapp-test") as slack:
        ...  # start the bot with SLACK_API_URL=slack.base_url, SLACK_APP_TOKEN=xapp-test
        await slack.wait_connected()
        envelope_id = await slack.send_event(app_mention("<@UBOT> hi"))
        await slack.wait_ack(envelope_id)

The Web API (``chat.postMessage`` ...) is FakeSlack's; an app-level token is refused there with
``not_allowed_token_type`` as Slack does, and a bot token is refused by ``apps.connections.open``.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiohttp import WSMsgType, web

from bot.evaluation.simulator import LoopbackServer
from tests.fakes.common import at_least
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_methods import SlackError

__all__ = ["SocketConnection", "SocketModeSlack", "events_api_envelope", "interactive_envelope"]

JSON: TypeAlias = dict[str, Any]


def _envelope_id() -> str:
    return str(uuid.uuid4())


def events_api_envelope(
    body: JSON, *, retry_attempt: int = 0, retry_reason: str = "", envelope_id: str | None = None
) -> JSON:
    """A Socket Mode ``events_api`` envelope carrying an Events API body (``event_callback``)."""
    return {
        "envelope_id": envelope_id or _envelope_id(),
        "payload": body,
        "type": "events_api",
        "accepts_response_payload": False,
        "retry_attempt": retry_attempt,
        "retry_reason": retry_reason,
    }


def interactive_envelope(payload: JSON, *, envelope_id: str | None = None) -> JSON:
    """A Socket Mode ``interactive`` envelope (``block_actions``, ``view_submission`` ...)."""
    return {
        "envelope_id": envelope_id or _envelope_id(),
        "payload": payload,
        "type": "interactive",
        "accepts_response_payload": payload.get("type") == "view_submission",
    }


@dataclass
class SocketConnection:
    """One WebSocket the app opened; ``received`` holds every JSON message it sent."""

    ticket: str
    ws: web.WebSocketResponse
    received: list[JSON] = field(default_factory=list)
    closed: bool = False


class SocketModeSlack(FakeSlack):
    """FakeSlack plus ``apps.connections.open`` and a Socket Mode WebSocket server.

    Public state:

    * ``app_token`` – the only token ``apps.connections.open`` accepts.
    * ``connections`` – every :class:`SocketConnection`, oldest first (``connection`` is the newest
      open one).
    * ``acks`` – every ``{"envelope_id": ...}`` message received from the app, in order.
    * ``sent`` – every envelope sent to the app.
    * ``ws_port`` – the WebSocket server's port (URLs look like ``ws://127.0.0.1:PORT/link/?ticket=...``).
    """

    def __init__(self, bot_token: str = "xoxb-test", app_token: str = "xapp-test", **kwargs: Any) -> None:
        super().__init__(bot_token, **kwargs)
        self.app_token = app_token
        self.connections: list[SocketConnection] = []
        self.acks: list[JSON] = []
        self.sent: list[JSON] = []
        self.ws_port = 0
        self._tickets: set[str] = set()
        self._ws_server: LoopbackServer | None = None
        self.handlers["apps.connections.open"] = self._connections_open

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await super().start()
        app = web.Application()
        app.router.add_get("/link/", self._link)
        app.router.add_get("/link", self._link)
        self._ws_server = LoopbackServer(app)
        await self._ws_server.start()
        self.ws_port = self._ws_server.port

    async def close(self) -> None:
        for connection in self.connections:
            if not connection.closed:
                with contextlib.suppress(Exception):
                    await connection.ws.close()
        if self._ws_server is not None:
            await self._ws_server.stop()
        await super().close()

    # ------------------------------------------------------------------ Web API side

    def _check_auth(self, request: web.Request, params: JSON) -> None:
        token = self._token(request, params)
        if request.match_info.get("method", "") == "apps.connections.open":
            if not token:
                raise SlackError("not_authed")
            if token == self.bot_token:
                raise SlackError("not_allowed_token_type")
            if token != self.app_token:
                raise SlackError("invalid_auth")
            return
        if token and token == self.app_token:
            raise SlackError("not_allowed_token_type")
        super()._check_auth(request, params)

    def _connections_open(self, params: JSON) -> JSON:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.ws_port}/link/?ticket={ticket}&app_id={self.app_id}"}

    # ------------------------------------------------------------------ WebSocket side

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)  # a URL is good for one connection
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = SocketConnection(ticket, ws)
        self.connections.append(connection)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": sum(1 for c in self.connections if not c.closed),
                "debug_info": {
                    "host": "applink-fake-1",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    connection.received.append(data)
                    if "envelope_id" in data:
                        self.acks.append(data)
        finally:
            connection.closed = True
        return ws

    @property
    def connection(self) -> SocketConnection | None:
        """The newest connection that is still open."""
        return next((c for c in reversed(self.connections) if not c.closed and not c.ws.closed), None)

    async def wait_connected(self, count: int = 1, timeout: float = 5.0) -> SocketConnection:
        """Wait until the app has opened ``count`` connections in all; return the newest open one."""
        failure = f"expected {count} socket connection(s), got {{}} within {timeout}s"
        opened = await at_least(count, lambda: self.connections if self.connection else [], timeout, failure.format)
        return self.connection or opened[-1]

    async def send(self, envelope: JSON) -> str:
        """Send one envelope over the newest open connection; return its ``envelope_id``."""
        connection = self.connection
        if connection is None:
            raise AssertionError("the app has no open Socket Mode connection")
        self.sent.append(envelope)
        await connection.ws.send_json(envelope)
        return str(envelope.get("envelope_id", ""))

    async def send_event(self, body: JSON, *, retry_attempt: int = 0, retry_reason: str = "") -> str:
        """Deliver an Events API body (e.g. ``app_mention(...)``) as an ``events_api`` envelope, and
        mirror the message into the stored history the first time (as :class:`SlackSender` does)."""
        if retry_attempt == 0:
            self.ingest_event(body)
        return await self.send(events_api_envelope(body, retry_attempt=retry_attempt, retry_reason=retry_reason))

    async def send_interactive(self, payload: JSON) -> str:
        """Deliver a ``block_actions`` / ``view_submission`` payload as an ``interactive`` envelope."""
        return await self.send(interactive_envelope(payload))

    async def request_refresh(self) -> None:
        """Tell the app its connection is about to be refreshed (it should reconnect)."""
        connection = self.connection
        if connection is None:
            raise AssertionError("the app has no open Socket Mode connection")
        await connection.ws.send_json(
            {
                "type": "disconnect",
                "reason": "refresh_requested",
                "debug_info": {"host": "applink-fake-1"},
            }
        )

    async def drop_connections(self) -> None:
        """Close every open socket from Slack's side (a network cut, a Slack restart)."""
        for connection in self.connections:
            if not connection.ws.closed:
                await connection.ws.close()

    def acked(self, envelope_id: str) -> list[JSON]:
        return [a for a in self.acks if a.get("envelope_id") == envelope_id]

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> JSON:
        """Wait for the app's ack of one envelope; return it."""
        failure = f"envelope {envelope_id} was not acked within {timeout}s; acks: {self.acks}"
        [ack, *_] = await at_least(1, lambda: self.acked(envelope_id), timeout, lambda _: failure)
        return ack
