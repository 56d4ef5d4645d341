"""The Slack adapter's lifecycle: Bolt (AsyncApp) in HTTP mode at ``/slack/events``, or Socket
Mode when ``SLACK_APP_TOKEN`` is set.

Each job has its own module: :mod:`~adapters.slack.wire` (payload types and parsers),
:mod:`~adapters.slack.intake` (customer messages, the ignore middleware),
:mod:`~adapters.slack.review` (clicks, modals, ``app.error``), :mod:`~adapters.slack.outbound`
(replies and cards), :mod:`~adapters.slack.cards` (Block Kit). This module builds them, checks
each request at the door, and starts, watches and stops the connection.

At the door (HTTP): a forged or stale signature is 401; a body that is no Slack request (a JSON
array or ``null``, not JSON at all) is 400; a signed request whose envelope is malformed (an
``event`` that is not an object, a click without ``actions``) is 200 and ignored, logged once
with the reason, so Slack does not send it again. Socket Mode envelopes pass the same check.
A request no listener takes (a reaction, another app's slash command or button) is 200 as well,
over HTTP and the socket alike (``app.error`` in :mod:`~adapters.slack.review`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import wire
from adapters.slack.directory import SlackDirectory
from adapters.slack.home import SlackHome
from adapters.slack.intake import SlackIntake
from adapters.slack.lazy import SupervisedLazyListenerRunner
from adapters.slack.on_demand import SlackOnDemand
from adapters.slack.outbound import SlackOutbound
from adapters.slack.review import SlackReview, describe
from adapters.slack.settings import SlackSettings
from bot.downloads import FileHost
from bot.errors import ConfigError
from bot.ports import Core
from bot.settings import Settings

log = logging.getLogger(__name__)

#: How long ``stop`` waits for work after an ack (an ephemeral, a modal) still in flight.
LAZY_DRAIN_SECONDS = 5.0


class CheckedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler with the same door check as HTTP mode: a malformed envelope
    is acknowledged (so Slack does not resend it), logged once, and goes no further."""

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        started = time.time()
        try:
            if not isinstance(req.payload, dict):
                raise wire.MalformedPayload("the envelope's payload is not an object")
            wire.check_envelope(req.payload)
            bolt_request = AsyncBoltRequest(mode="socket_mode", body=req.payload, headers=build_headers(req))
        except wire.MalformedPayload as exc:
            log.warning("ignored a malformed Slack %s over the socket: %s", describe(req.payload), exc.reason)
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        except Exception as exc:  # Bolt reads more than the check covers (authorizations, response_urls...)
            log.warning("ignored a malformed Slack %s over the socket: %s", describe(req.payload), unreadable(exc))
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        # What Bolt's own handle does with the request it builds.
        await send_async_response(client, req, await self.app.async_dispatch(bolt_request), started)


def unreadable(error: Exception) -> str:
    """Why Bolt could not build its request from a signed payload (it reads fields such as
    ``authorizations`` and ``response_urls`` with indexing, so a wrong type is a TypeError)."""
    return f"Bolt cannot read it ({type(error).__name__}: {str(error)[:120]})"


class SlackPlatform:
    """Slack as a customer channel and (with ``SLACK_REVIEW_CHANNEL``) the review desk."""

    name = "slack"

    def __init__(self, settings: SlackSettings | Settings) -> None:
        if isinstance(settings, Settings):
            own = SlackSettings.from_settings(settings)
            if own is None:
                raise ConfigError("Slack is not configured: set SLACK_BOT_TOKEN and friends")
            settings = own
        self.settings = settings
        self._token = settings.bot_token
        # Files are fetched with the bot token, so only from Slack's own file host.
        self._files = FileHost.at(
            "Slack's file host",
            [settings.files_url],
            setting="SLACK_FILES_URL",
            headers={"Authorization": f"Bearer {self._token.get_secret_value()}"},
        )
        # One connection pool for every Web API call (Bolt's per-request clients share it too).
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.client = AsyncWebClient(
            token=self._token.get_secret_value(), base_url=settings.api_url, session=self._http
        )
        self.client.retry_handlers.extend(
            [
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
                AsyncServerErrorRetryHandler(max_retry_count=2),
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
            ]
        )
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
        self._verifier = SignatureVerifier(secret) if secret and not settings.socket_mode else None
        # Slack gets its 200 only once a customer message is stored, so a failure (say the
        # database is down) is a 500 that Slack retries instead of a lost message. A click is
        # decided before its ack (adapters.slack.review).
        # Bolt's own client (auth.test once, and the per-request clients it builds and
        # deep-copies for lazy listeners) has no shared session: an aiohttp session cannot be
        # copied. Every call the adapter makes goes through ``self.client``.
        self.app = AsyncApp(
            client=AsyncWebClient(token=self._token.get_secret_value(), base_url=settings.api_url),
            signing_secret=secret,
            request_verification_enabled=not settings.socket_mode,
            process_before_response=True,
            # A request no listener takes goes to ``app.error`` (adapters.slack.review), which
            # answers it 200: Bolt's own answer is a 404 that Slack retries and shows users.
            raise_error_for_unhandled_request=True,
        )
        self._lazy = SupervisedLazyListenerRunner(log)
        self.app.listener_runner.lazy_listener_runner = self._lazy
        self.review_channel = settings.review_channel
        self.bot_user_id = ""
        self._core: Core | None = None
        self._authenticated = False
        self._socket: CheckedSocketModeHandler | None = None
        self.directory = SlackDirectory(self.client)
        self._outbound = SlackOutbound(self.client, self.review_channel)
        self._intake = SlackIntake(
            core=self._require_core,
            directory=self.directory,
            bot_user_id=lambda: self.bot_user_id,
            review_channel=self.review_channel,
        )
        self._review = SlackReview(
            core=self._require_core, client=self.client, directory=self.directory, review_channel=self.review_channel
        )
        self._home = SlackHome(
            core=self._require_core, client=self.client, directory=self.directory, review_channel=self.review_channel
        )
        self._outbound.desk_changed = self._home.desk_changed
        self._on_demand = SlackOnDemand(
            core=self._require_core,
            client=self.client,
            intake=self._intake,
            directory=self.directory,
            review_channel=self.review_channel,
        )
        self._intake.register(self.app, self.review_channel)
        self._on_demand.register(self.app)
        self._review.register(self.app)
        self._home.register(self.app)

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackPlatform | None:
        """None when Slack is not configured; ConfigError naming what is missing when half is."""
        own = SlackSettings.from_settings(settings)
        return None if own is None else cls(own)

    # -- PlatformAdapter ------------------------------------------------------------------

    @property
    def customer_channel(self) -> SlackOutbound:
        return self._outbound

    @property
    def review_desk(self) -> SlackOutbound | None:
        return self._outbound if self.review_channel else None

    @property
    def home(self) -> SlackHome:
        """The agents' App Home."""
        return self._home

    @property
    def desk_preferred(self) -> bool:
        return False

    @property
    def files(self) -> FileHost:
        return self._files

    @property
    def socket_mode(self) -> bool:
        return self.settings.socket_mode

    @property
    def connected(self) -> bool:
        """HTTP mode: started and ``auth.test`` passed. Socket Mode: the socket is open."""
        if self._core is None or not self._authenticated:
            return False
        if not self.socket_mode:
            return True
        socket = self._socket.client if self._socket is not None else None
        return bool(
            socket is not None
            and not socket.closed
            and not socket.stale
            and socket.current_session is not None
            and not socket.current_session.closed
        )

    def routes(self) -> Sequence[web.RouteDef]:
        if self.socket_mode:
            return []
        return [web.post("/slack/events", self._handle_http)]

    async def start(self, core: Core) -> None:
        self._core = core
        await self._authenticate()
        if self.socket_mode:
            await self._open_socket()

    async def reconnect(self) -> None:
        """Check the token again and, in Socket Mode, open a fresh socket."""
        if self._core is None:
            raise RuntimeError("the Slack adapter is not started")
        if not self._authenticated:
            await self._authenticate()
        if self.socket_mode and not self.connected:
            await self._close_socket()
            await self._open_socket()

    async def stop(self) -> None:
        self._authenticated = False
        await self._close_socket()
        await self._lazy.drain(LAZY_DRAIN_SECONDS)  # ephemerals and modals still on their way
        await self._home.close()
        self._core = None
        await self._http.close()

    async def _authenticate(self) -> None:
        self._authenticated = False
        try:
            identity = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN: {exc.response.get('error')}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"cannot reach the Slack API at {self.settings.api_url} ({type(exc).__name__})") from None
        self.bot_user_id = str(identity.get("user_id", ""))
        self.directory.grant(identity.headers.get("x-oauth-scopes") if identity.headers else None)
        self._authenticated = True

    async def _open_socket(self) -> None:
        assert self.settings.app_token is not None
        socket = CheckedSocketModeHandler(self.app, self.settings.app_token.get_secret_value())
        self._socket = socket
        client: Any = socket.client  # slack_sdk's Socket Mode client is not typed
        await client.connect()

    async def _close_socket(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            client: Any = socket.client
            await client.close()

    def _require_core(self) -> Core:
        if self._core is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._core

    # -- the door ---------------------------------------------------------------------------

    def _signed(self, raw: bytes, request: web.Request) -> bool:
        """Slack's ``v0`` signature over the exact body, within the 5-minute window."""
        assert self._verifier is not None
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not timestamp.isdigit() or not signature:
            return False
        return self._verifier.is_valid(raw, timestamp, signature)

    async def _handle_http(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self._verifier is not None and not self._signed(raw, request):
            return web.json_response({"error": "invalid request"}, status=401)
        body: dict[str, Any] | None = None
        try:
            body = wire.parse_body(raw, request.content_type)
            wire.check_envelope(body)
        except wire.NotASlackRequest as exc:
            log.warning("refused a Slack request: %s", exc.reason)
            return web.json_response({"error": "malformed request"}, status=400)
        except wire.MalformedPayload as exc:
            log.warning("ignored a malformed Slack %s: %s", describe(body), exc.reason)
            return web.Response(status=200, text="")
        try:
            bolt_request = await to_bolt_request(request)
        except Exception as exc:  # Bolt reads more than the check covers (authorizations, response_urls...)
            log.warning("ignored a malformed Slack %s: %s", describe(body), unreadable(exc))
            return web.Response(status=200, text="")
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)
