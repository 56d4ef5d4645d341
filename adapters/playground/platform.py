"""The playground: a customer channel and a review desk kept in memory, served as one local
web page on the bot's own HTTP server.

It drives the real core through :class:`bot.ports.Core` like any platform: a message typed in
the customer pane becomes an :class:`bot.events.InboundMessage`, a click on a card a
:class:`bot.events.ReviewDecision`; the core's replies and cards land back here. With no chat
platform configured it opens by itself (``supportbot run`` with only ``MOONSHOT_API_KEY``);
next to Slack or Discord it is there only with ``PLAYGROUND_TOKEN`` (cards then go to that
platform's review desk, the policy editor checks without saving, and decisions are taken as
``PLAYGROUND_APPROVER``, whom the core accepts only from the policy's approver lists). Without a
token it answers only requests from this machine (loopback), whatever ``HOST`` it listens on.

Every API request must carry the ``X-Playground`` header, which a cross-site form cannot send;
:mod:`adapters.playground.guard` checks ``Host`` and ``Origin`` (DNS rebinding), keeps the
token out of the cookie and the address bar, and adds the security headers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from adapters.playground import page
from adapters.playground.guard import (
    SESSION_COOKIE,
    HostGuard,
    same_secret,
    scheme_of,
    session_value,
    with_security_headers,
    without_token,
)
from adapters.playground.settings import PlaygroundSettings
from adapters.playground.state import PLATFORM, ChatLine, PlaygroundState, now
from bot.errors import ImportFailed, PolicyError
from bot.events import Actor, Attachment, Author, DecisionAction, InboundMessage, MessageKind, ReviewDecision, ThreadRef
from bot.policy import check_policy
from bot.ports import Core, ReviewCard
from bot.samples import load_sample_orders
from bot.secret_values import configured_secrets
from bot.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_ORDERS = Path(__file__).with_name("sample_orders.jsonl")
STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
LONG_POLL_SECONDS = 20.0
CUSTOMER = Author("playground-customer", "Playground customer")
AGENT = Actor(PLATFORM, "playground-agent", "You (playground)")
_OTHER_PLATFORMS = ("slack_bot_token", "slack_signing_secret", "slack_app_token", "discord_bot_token")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create(settings: object) -> PlaygroundPlatform | None:
    """The ``supportbot.platforms`` entry point. Open when no chat platform is configured (and
    ``PLAYGROUND_ENABLED`` is not false); behind ``PLAYGROUND_TOKEN`` next to one; else None."""
    assert isinstance(settings, Settings)
    own = PlaygroundSettings()
    token = own.token.get_secret_value() if own.token else ""
    if token:
        return PlaygroundPlatform(settings, own, token=token, with_desk=not _other_platform(settings))
    if own.enabled and not _other_platform(settings):
        return PlaygroundPlatform(settings, own)
    return None


def _other_platform(settings: Settings) -> bool:
    return any(getattr(settings, name, None) for name in _OTHER_PLATFORMS)


class PlaygroundPlatform:
    """Customer channel, review desk and web page in one object (the state lives in memory:
    the conversations themselves are in the database like any other)."""

    name = PLATFORM
    platform = PLATFORM

    def __init__(
        self, settings: Settings, own: PlaygroundSettings | None = None, *, token: str = "", with_desk: bool = True
    ) -> None:
        own = own if own is not None else PlaygroundSettings()
        self.settings = settings
        self.token = token
        self._session = session_value(token) if token else ""
        self._hosts = HostGuard(settings.host, own.allowed_hosts)
        approver = own.approver.strip()
        self.actor = Actor(PLATFORM, approver, f"{approver} (playground)") if approver else AGENT
        self._secrets = {**configured_secrets(settings), **({"PLAYGROUND_TOKEN": token} if token else {})}
        self.state = PlaygroundState()
        self._with_desk = with_desk
        self._core: Core | None = None
        self._keys: dict[str, str] = {}
        self._card_keys: dict[str, str] = {}

    # -- PlatformAdapter ------------------------------------------------------------------

    @property
    def customer_channel(self) -> PlaygroundPlatform:
        return self

    @property
    def review_desk(self) -> PlaygroundPlatform | None:
        return self if self._with_desk else None

    @property
    def desk_preferred(self) -> bool:
        return False

    @property
    def files(self) -> None:
        """None: the page uploads an image's bytes with the message, nothing is downloaded."""
        return None

    @property
    def can_apply_policy(self) -> bool:
        """Saving the policy file is for a playground of its own, not one next to live customers."""
        return self._with_desk and not self.token

    def routes(self) -> Sequence[web.RouteDef]:
        guard = self._guarded
        return [
            web.get("/", guard(self._page)),
            web.get("/playground/static/{name}", guard(self._static)),
            web.get("/playground/api/state", guard(self._state)),
            web.get("/playground/api/edit/{draft_id}", guard(self._edit)),
            web.post("/playground/api/message", guard(self._message)),
            web.post("/playground/api/thread", guard(self._thread)),
            web.post("/playground/api/decide", guard(self._decide)),
            web.post("/playground/api/orders", guard(self._orders)),
            web.post("/playground/api/policy/check", guard(self._policy_check)),
            web.post("/playground/api/policy/apply", guard(self._policy_apply)),
        ]

    async def start(self, core: Core) -> None:
        self._core = core
        where = f"http://localhost:{self.settings.port}/"
        if self.token:
            log.info("the playground is at %s?token=… (PLAYGROUND_TOKEN)", where)
        else:
            log.info("no chat platform is configured: the playground is open at %s", where)

    @property
    def connected(self) -> bool:
        """Nothing to connect to: live once started."""
        return self._core is not None

    async def reconnect(self) -> None:
        """Nothing can die here; the app's watchdog may still ask."""

    async def stop(self) -> None:
        self._core = None
        await self.state.close()

    # -- CustomerChannel ------------------------------------------------------------------

    async def post_reply(self, thread: ThreadRef, text: str, *, idempotency_key: str) -> str:
        existing = self._keys.get(idempotency_key)
        if existing is not None:
            return existing
        chat = self.state.thread(thread)
        line = ChatLine(uuid.uuid4().hex, "support", text, now(), key=idempotency_key)
        chat.lines.append(line)
        chat.pending = False
        self._keys[idempotency_key] = line.id
        await self.state.changed()
        return line.id

    async def find_reply(self, thread: ThreadRef, idempotency_key: str) -> str | None:
        return self._keys.get(idempotency_key)

    async def show_pending(self, thread: ThreadRef) -> None:
        self.state.thread(thread).pending = True
        await self.state.changed()

    # -- ReviewDesk -----------------------------------------------------------------------

    async def post_card(self, card: ReviewCard, *, idempotency_key: str = "") -> str:
        existing = self._card_keys.get(idempotency_key) if idempotency_key else None
        if existing is not None:
            return existing
        ref = f"card-{len(self.state.cards) + 1}-{card.draft_id[:8]}"
        self.state.cards[ref] = card
        if idempotency_key:
            self._card_keys[idempotency_key] = ref
        await self.state.changed()
        return ref

    async def find_card(self, idempotency_key: str) -> str | None:
        """A card already posted with this key (the rebuilt core's crash recovery asks)."""
        return self._card_keys.get(idempotency_key)

    async def update_card(self, ref: str, card: ReviewCard) -> None:
        self.state.cards[ref] = card
        await self.state.changed()

    async def post_notice(self, text: str) -> None:
        self.state.notices.append(text)
        await self.state.changed()

    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        tag = f"@{on_call} " if on_call else ""
        self.state.card_threads.setdefault(ref, []).append(f"{tag}{text}")
        await self.state.changed()

    # -- HTTP -----------------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return with_security_headers(await self._admit(request, handler))
            except web.HTTPException as exc:
                with_security_headers(exc)
                raise

        return guarded

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._core is None:
            raise web.HTTPServiceUnavailable(text="the bot is starting")
        refusal = self._hosts.host_refusal(request)
        if refusal is not None:
            raise web.HTTPForbidden(text=refusal)
        from_url = bool(self.token and request.query.get("token"))
        if self.token and not self._authorised(request):
            raise web.HTTPForbidden(text="the playground needs ?token=PLAYGROUND_TOKEN")
        if not self.token and not is_local(request.remote):
            raise web.HTTPForbidden(
                text="without PLAYGROUND_TOKEN the playground answers only on this machine (localhost)"
            )
        if from_url and request.method == "GET":  # the token leaves the address bar (and history)
            response: web.StreamResponse = web.Response(status=303, headers={"Location": without_token(request)})
            self._set_session(request, response)
            return response
        refusal = self._hosts.origin_refusal(request)
        if refusal is not None:
            raise web.HTTPForbidden(text=refusal)
        if request.path.startswith("/playground/api/") and request.headers.get("X-Playground") != "1":
            raise web.HTTPForbidden(text="missing X-Playground header")
        response = await handler(request)
        if from_url:
            self._set_session(request, response)
        return response

    def _authorised(self, request: web.Request) -> bool:
        offered = request.query.get("token")
        if offered:
            return same_secret(offered, self.token)
        return same_secret(request.cookies.get(SESSION_COOKIE, ""), self._session)

    def _set_session(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._session,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=scheme_of(request) == "https",
        )

    @property
    def core(self) -> Core:
        assert self._core is not None
        return self._core

    def _policy_path(self) -> Path:
        return Path(self.settings.policy_file)

    async def _page(self, _request: web.Request) -> web.Response:
        path = self._policy_path()
        text = await asyncio.to_thread(_read_policy, path)
        html = page.page(
            has_desk=self._with_desk, can_apply=self.can_apply_policy, policy_text=text, policy_path=str(path)
        )
        return web.Response(text=html, content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_TYPES.get(Path(name).suffix)
        path = STATIC / name
        if kind is None or path.parent != STATIC or not path.is_file():
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=await asyncio.to_thread(path.read_bytes), content_type=kind, charset="utf-8")

    async def _state(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "-1"))
        except ValueError:
            since = -1
        version = await self.state.wait_change(since, LONG_POLL_SECONDS) if since >= 0 else self.state.version
        if version == since:
            return web.json_response({"version": version})
        return web.json_response(
            {
                "version": version,
                "customer": page.customer_pane(self.state),
                "desk": page.desk_pane(self.state, has_desk=self._with_desk),
            }
        )

    async def _message(self, request: web.Request) -> web.Response:
        form = await request.post()
        text = str(form.get("text") or "").strip()
        attachments: list[Attachment] = []
        image = form.get("image")
        if isinstance(image, web.FileField) and image.filename:
            data = image.file.read(MAX_IMAGE_BYTES + 1)
            if len(data) > MAX_IMAGE_BYTES:
                return _answer(False, "images up to 5 MB, please", status=413)
            attachments.append(Attachment(image.filename, image.content_type, len(data), data=data))
        if not text and not attachments:
            return _answer(False, "write something (or attach an image)", status=400)
        thread = self.state.current
        line = ChatLine(uuid.uuid4().hex, "customer", text, now(), tuple(a.filename for a in attachments))
        message = InboundMessage(
            event_id=f"playground:{line.id}",
            thread=thread.ref,
            message_id=line.id,
            author=CUSTOMER,
            text=text,
            kind=MessageKind.DIRECT,
            sent_at=line.at,
            attachments=tuple(attachments),
            location=thread.location,
        )
        thread.lines.append(line)
        await self.state.changed()
        await self.core.receive(message)
        return _answer(True, "")

    async def _thread(self, _request: web.Request) -> web.Response:
        self.state.new_thread()
        await self.state.changed()
        return _answer(True, "")

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            action = DecisionAction(str(form.get("action", "")))
        except ValueError:
            return _answer(False, "unknown action", status=400)
        decision = ReviewDecision(
            draft_id=str(form.get("draft_id", "")),
            action=action,
            actor=self.actor,
            edited_text=_text(form.get("edited_text")),
            instruction=_text(form.get("instruction")),
            refund_amount=_text(form.get("refund_amount")),
        )
        outcome = await self.core.decide(decision)
        return _answer(outcome.ok, outcome.message)

    async def _edit(self, request: web.Request) -> web.Response:
        form = await self.core.edit_form(request.match_info["draft_id"])
        if form is None:
            raise web.HTTPNotFound(text="no such draft")
        return web.Response(text=page.edit_form(form), content_type="text/html")

    async def _orders(self, _request: web.Request) -> web.Response:
        if self.settings.orders_backend != "sql":
            return _answer(False, "orders come from ORDERS_API_URL here; sample orders are for the SQL store")
        try:
            count = await load_sample_orders(self.settings, SAMPLE_ORDERS)
        except ImportFailed as exc:
            return _answer(False, str(exc), status=500)
        ids = "#W2611340 (shipped), 40021 and 40022 (delivered), ORD-77 (delivered long ago)"
        return _answer(True, f"loaded {count} sample orders: {ids}")

    async def _policy_check(self, request: web.Request) -> web.Response:
        form = await request.post()
        ok, version, problems = await self._check(str(form.get("policy", "")))
        html = page.policy_result(ok, version, problems)
        return web.Response(text=html, content_type="text/html", status=200 if ok else 400)

    async def _check(self, text: str) -> tuple[bool, str, list[str]]:
        """The bot's own checks (:func:`bot.policy.check_policy`), knowledge files included."""
        try:
            policy = await asyncio.to_thread(check_policy, text, self._policy_path(), self._secrets)
        except PolicyError as exc:
            return False, "", exc.problems
        return True, policy.version, []

    async def _policy_apply(self, request: web.Request) -> web.Response:
        if not self.can_apply_policy:
            return _answer(False, "next to a live platform the playground does not save the policy", status=403)
        form = await request.post()
        text = str(form.get("policy", ""))
        ok, version, problems = await self._check(text)
        if not ok:
            return _answer(False, "not saved: " + "; ".join(problems), status=400)
        path = self._policy_path()
        before = await asyncio.to_thread(_read_exactly, path)
        await asyncio.to_thread(_write_atomically, path, text.encode("utf-8"))
        refused = await self.core.reload_policy()
        if refused is not None:  # the bot would not take it: the file goes back as it was
            await asyncio.to_thread(_restore, path, before)
            await self.core.reload_policy()
            return _answer(False, "refused by the bot, not saved: " + "; ".join(refused.problems), status=400)
        pending = self.state.pending_card()
        if pending is None:
            return _answer(True, f"policy {version} saved; no conversation is waiting for review")
        outcome = await self.core.decide(
            ReviewDecision(
                pending.draft_id, DecisionAction.REGENERATE, self.actor, instruction="run again under the edited policy"
            )
        )
        if not outcome.ok:
            return _answer(False, f"policy {version} saved, but: {outcome.message}")
        return _answer(True, f"policy {version} saved; drafting the pending conversation again")


def is_local(remote: str | None) -> bool:
    """A request from this machine (the open playground answers no one else)."""
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, str) and value.strip() else None


def _answer(ok: bool, message: str, *, status: int = 200) -> web.Response:
    return web.json_response({"ok": ok, "message": message}, status=status)


def _read_policy(path: Path) -> str:
    for candidate in (path, Path("policy.example.toml")):
        try:
            return candidate.read_text(encoding="utf-8")
        except OSError:
            continue
    return ""


def _read_exactly(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(path: Path, before: bytes | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        _write_atomically(path, before)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
