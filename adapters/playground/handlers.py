"""The playground's page and API handlers (:class:`PageHandlers`) and its policy editor
(:class:`PolicyEditor`); :mod:`adapters.playground.platform` routes to them through the gate."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from adapters.playground import page
from adapters.playground.state import ChatLine, Image, now
from bot.errors import ImportFailed, PolicyError
from bot.events import Attachment, Author, DecisionAction, InboundMessage, MessageKind, Place, ReviewDecision
from bot.policy import check_policy
from bot.policy_defaults import defaults_text
from bot.samples import load_sample_orders

if TYPE_CHECKING:
    from adapters.playground.platform import PlaygroundPlatform

log = logging.getLogger(__name__)

SAMPLE_ORDERS = Path(__file__).with_name("sample_orders.jsonl")
STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
THUMBNAIL_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
LONG_POLL_SECONDS = 20.0
CUSTOMER = Author("playground-customer", "Playground customer")


class PageHandlers:
    """The page, its static files, the long-polled state, and what a click or a message does."""

    def __init__(self, platform: PlaygroundPlatform) -> None:
        self._platform = platform

    async def page(self, _request: web.Request) -> web.Response:
        path = Path(self._platform.settings.policy_file)
        text = await asyncio.to_thread(read_policy, path)
        html = page.page(
            has_desk=self._platform.with_desk,
            can_apply=self._platform.can_apply_policy,
            policy_text=text,
            policy_path=str(path),
        )
        return web.Response(text=html, content_type="text/html")

    async def image(self, request: web.Request) -> web.Response:
        """An uploaded image, for its thumbnail (only the image types a browser shows)."""
        image = self._platform.state.images.get(request.match_info["image_id"])
        if image is None:
            raise web.HTTPNotFound(text="no such image")
        return web.Response(body=image.data, content_type=image.content_type)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_TYPES.get(Path(name).suffix)
        path = STATIC / name
        if kind is None or path.parent != STATIC or not path.is_file():
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=await asyncio.to_thread(path.read_bytes), content_type=kind, charset="utf-8")

    async def state(self, request: web.Request) -> web.Response:
        """The panes, once they changed since ``since`` (long-polled). A page that saw another run
        of the bot (its ``boot`` differs) gets them at once: its counter means nothing here."""
        state = self._platform.state
        try:
            since = int(request.query.get("since", "-1"))
        except ValueError:
            since = -1
        boot = request.query.get("boot")
        if boot is not None and boot != state.boot:
            since = -1
        version = await state.wait_change(since, LONG_POLL_SECONDS) if since >= 0 else state.version
        if version == since:
            return web.json_response({"version": version, "boot": state.boot})
        return web.json_response(
            {
                "version": version,
                "boot": state.boot,
                "customer": page.customer_pane(state),
                "desk": page.desk_pane(state, has_desk=self._platform.with_desk),
            }
        )

    async def message(self, request: web.Request) -> web.Response:
        form = await request.post()
        text = str(form.get("text") or "").strip()
        attachments: list[Attachment] = []
        image = form.get("image")
        if isinstance(image, web.FileField) and image.filename:
            data = image.file.read(MAX_IMAGE_BYTES + 1)
            if len(data) > MAX_IMAGE_BYTES:
                return answer(False, "images up to 5 MB, please", status=413)
            attachments.append(Attachment(image.filename, image.content_type, len(data), data=data))
        if not text and not attachments:
            return answer(False, "write something (or attach an image)", status=400)
        state = self._platform.state
        thread = state.current
        thumbnails = tuple(
            state.keep_image(Image(a.content_type, a.data))
            for a in attachments
            if a.data is not None and a.content_type in THUMBNAIL_TYPES
        )
        names = tuple(a.filename for a in attachments)
        line = ChatLine(uuid.uuid4().hex, "customer", text, now(), names, images=thumbnails)
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
            place=Place.PRIVATE,  # one customer's chat with the shop, as in a direct message
        )
        thread.lines.append(line)
        thread.drafting = text or ", ".join(names)
        await state.changed()
        try:
            await self._platform.core.receive(message)
        except Exception as exc:  # the database is down: the message is not kept, so it is not shown
            log.exception("the playground could not hand a message to the bot")
            thread.lines.remove(line)
            thread.drafting = ""
            await state.changed()
            return answer(False, f"not sent: the bot could not store it ({type(exc).__name__}); try again", status=503)
        return answer(True, "")

    async def reply(self, request: web.Request) -> web.Response:
        """An agent's reply written by hand: posted in the customer's thread as the agent's, and
        heard by the core as an agent writing there (it takes the conversation over, as on Slack)."""
        form = await request.post()
        text = str(form.get("text") or "").strip()
        card = self._platform.state.card_of(str(form.get("draft_id", "")))
        if not text:
            return answer(False, "write the reply first", status=400)
        if card is None or card.thread is None:
            return answer(False, "this card's conversation is not in the playground any more", status=404)
        state, actor = self._platform.state, self._platform.actor
        thread = state.thread(card.thread)
        line = ChatLine(uuid.uuid4().hex, "support", text, now(), by_hand=True)
        thread.lines.append(line)
        thread.drafting = ""
        await state.changed()
        await self._platform.core.receive(
            InboundMessage(
                event_id=f"playground:{line.id}",
                thread=thread.ref,
                message_id=line.id,
                author=Author(actor.id, actor.display_name, review_member=True),
                text=text,
                kind=MessageKind.FOLLOW_UP,
                sent_at=line.at,
                location=thread.location,
            )
        )
        return answer(True, "sent as your answer; the conversation is yours now (Hand back gives it to the bot)")

    async def thread(self, _request: web.Request) -> web.Response:
        self._platform.state.new_thread()
        await self._platform.state.changed()
        return answer(True, "")

    async def decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            action = DecisionAction(str(form.get("action", "")))
        except ValueError:
            return answer(False, "unknown action", status=400)
        decision = ReviewDecision(
            draft_id=str(form.get("draft_id", "")),
            action=action,
            actor=self._platform.actor,
            edited_text=form_text(form.get("edited_text")),
            instruction=form_text(form.get("instruction")),
            refund_amount=form_text(form.get("refund_amount")),
        )
        outcome = await self._platform.core.decide(decision)
        card = self._platform.state.card_of(decision.draft_id)
        if outcome.ok and action is DecisionAction.REGENERATE and card is not None and card.thread is not None:
            self._platform.state.thread(card.thread).drafting = card.customer_text or "…"
            await self._platform.state.changed()
        return answer(outcome.ok, outcome.message)

    async def edit(self, request: web.Request) -> web.Response:
        form = await self._platform.core.edit_form(request.match_info["draft_id"])
        if form is None:
            raise web.HTTPNotFound(text="no such draft")
        return web.Response(text=page.edit_form(form), content_type="text/html")

    async def orders(self, _request: web.Request) -> web.Response:
        if self._platform.settings.orders_backend != "sql":
            return answer(False, "orders come from ORDERS_API_URL here; sample orders are for the SQL store")
        try:
            count = await load_sample_orders(self._platform.settings, SAMPLE_ORDERS)
        except ImportFailed as exc:
            return answer(False, str(exc), status=500)
        return answer(True, f"loaded {count} sample orders: “Sample orders” above the chat says what each one shows")


class PolicyEditor:
    """Checks the edited policy with the bot's own checks and, in a playground of its own,
    saves it (the file goes back as it was when the bot refuses it) and drafts the pending
    conversation again."""

    def __init__(self, platform: PlaygroundPlatform) -> None:
        self._platform = platform

    @property
    def _path(self) -> Path:
        return Path(self._platform.settings.policy_file)

    async def check(self, request: web.Request) -> web.Response:
        form = await request.post()
        ok, version, problems = await self._check(str(form.get("policy", "")))
        html = page.policy_result(ok, version, problems)
        return web.Response(text=html, content_type="text/html", status=200 if ok else 400)

    async def _check(self, text: str) -> tuple[bool, str, list[str]]:
        """The bot's own checks (:func:`bot.policy.check_policy`), knowledge files included."""
        try:
            policy = await asyncio.to_thread(check_policy, text, self._path, self._platform.secrets)
        except PolicyError as exc:
            return False, "", exc.problems
        return True, policy.version, []

    async def apply(self, request: web.Request) -> web.Response:
        if not self._platform.can_apply_policy:
            return answer(False, "next to a live platform the playground does not save the policy", status=403)
        form = await request.post()
        text = str(form.get("policy", ""))
        ok, version, problems = await self._check(text)
        if not ok:
            return answer(False, "not saved: " + "; ".join(problems), status=400)
        path = self._path
        before = await asyncio.to_thread(_read_exactly, path)
        await asyncio.to_thread(_write_atomically, path, text.encode("utf-8"))
        refused = await self._platform.core.reload_policy()
        if refused is not None:  # the bot would not take it: the file goes back as it was
            await asyncio.to_thread(_restore, path, before)
            await self._platform.core.reload_policy()
            return answer(False, "refused by the bot, not saved: " + "; ".join(refused.problems), status=400)
        pending = self._platform.state.pending_card()
        if pending is None:
            return answer(True, f"policy {version} saved; no conversation is waiting for review")
        outcome = await self._platform.core.decide(
            ReviewDecision(
                pending.draft_id,
                DecisionAction.REGENERATE,
                self._platform.actor,
                instruction="run again under the edited policy",
            )
        )
        if not outcome.ok:
            return answer(False, f"policy {version} saved, but: {outcome.message}")
        return answer(True, f"policy {version} saved; drafting the pending conversation again")


def form_text(value: object) -> str | None:
    return str(value) if isinstance(value, str) and value.strip() else None


def answer(ok: bool, message: str, *, status: int = 200) -> web.Response:
    return web.json_response({"ok": ok, "message": message}, status=status)


def read_policy(path: Path) -> str:
    """The policy file, or the built-in defaults in force while there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return defaults_text()


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
