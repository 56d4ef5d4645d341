"""The playground over HTTP, as the page's script drives it: the policy editor, edits and
rejections, images, and the guards (the token next to a live platform, the header that keeps
other web sites out)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import ExifTags, Image

from adapters.playground import PlaygroundPlatform
from adapters.playground.gate import is_local
from bot.app import Supportbot
from bot.core.images import MAX_SIDE
from tests.fakes.files import photo, sent_image_bytes, sent_images
from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL, running_bot, settings_for, until, wait_until
from tests.playground_support import HEADER, playground_bot


def playground_of(bot: Supportbot) -> PlaygroundPlatform:
    return next(p for p in bot.platforms if isinstance(p, PlaygroundPlatform))


def client_for(bot: Supportbot) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot.port}", headers=HEADER, timeout=30)


@contextlib.asynccontextmanager
async def client_for_stopping(tmp_path: Path, kimi: FakeKimi) -> AsyncIterator[tuple[Supportbot, httpx.AsyncClient]]:
    """A playground bot the test stops itself."""
    bot = Supportbot(settings_for(tmp_path, kimi, None))
    await bot.start()
    async with client_for(bot) as client:
        yield bot, client


async def state_when(client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Long-poll the page's state until ``check`` holds (what the page's script does)."""
    version = -1
    latest: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get("/playground/api/state", params={"since": version})
        data = response.json()
        if "customer" in data:
            latest = data
            if check(data):
                return data
        version = data["version"]
    raise AssertionError(f"the page never showed it: {json.dumps(latest)[:2000]}")


async def test_a_manager_fixes_a_policy_mistake_and_runs_the_pending_conversation_again(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)
        await client.post("/playground/api/message", data={"text": "Where is my order #W2611340?"})
        await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        first = playground.state.pending_card()
        assert first is not None

        bad = '[refunds]\nmax_amount = "lots"\n'
        check = await client.post("/playground/api/policy/check", data={"policy": bad})
        assert "line 2" in check.text and "refunds.max_amount" in check.text
        refused = await client.post("/playground/api/policy/apply", data={"policy": bad})
        assert refused.status_code == 400 and not refused.json()["ok"]
        assert not (tmp_path / "policy.toml").exists(), "a bad policy is never saved"

        good = '[assistant]\ninstructions = "Always sign your replies as Robin."\n'
        check = await client.post("/playground/api/policy/check", data={"policy": good})
        assert "OK (policy version" in check.text
        applied = await client.post("/playground/api/policy/apply", data={"policy": good})
        assert applied.json()["ok"], applied.text
        assert (tmp_path / "policy.toml").read_text() == good

        await state_when(
            client,
            lambda s: (
                "Superseded" in s["desk"]
                and any(c.actionable and c.draft_id != first.draft_id for c in playground.state.cards.values())
            ),
        )
        assert "Always sign your replies as Robin." in json.dumps(kimi.completions[-1]["messages"])
        assert "Always sign your replies as Robin." not in json.dumps(kimi.completions[0]["messages"])


async def test_an_agent_edits_a_draft_and_the_customer_gets_the_edited_text(tmp_path: Path, kimi: FakeKimi) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)
        await client.post("/playground/api/message", data={"text": "Can I change my address?"})
        await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        card = playground.state.pending_card()
        assert card is not None

        form = await client.get(f"/playground/api/edit/{card.draft_id}")
        assert "<textarea" in form.text and "Thanks for reaching out" in form.text
        decided = await client.post(
            "/playground/api/decide",
            data={"draft_id": card.draft_id, "action": "edit", "edited_text": "Yes: reply with the new address."},
        )
        assert decided.json()["ok"], decided.text

        state = await state_when(client, lambda s: 'class="msg support"' in s["customer"])
        assert "Yes: reply with the new address." in state["customer"]
        assert "Thanks for reaching out" not in state["customer"]


async def test_a_rejected_draft_never_reaches_the_customer_pane(tmp_path: Path, kimi: FakeKimi) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)
        await client.post("/playground/api/message", data={"text": "Hello?"})
        await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        card = playground.state.pending_card()
        assert card is not None
        decided = await client.post("/playground/api/decide", data={"draft_id": card.draft_id, "action": "reject"})
        assert decided.json()["ok"]

        state = await state_when(client, lambda s: "Nothing was sent" in s["desk"])
        assert 'class="msg support"' not in state["customer"]
        again = await client.post("/playground/api/decide", data={"draft_id": card.draft_id, "action": "approve"})
        assert not again.json()["ok"], "the first decision wins"


async def test_a_customer_attaches_a_photo_and_it_reaches_kimi_small_upright_and_without_its_exif(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    """The playground hands the bot the bytes at the ack; they are shrunk as a download is
    (issue 20), and the database keeps only the small version."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Acme Phone"
    exif[ExifTags.Base.Orientation] = 6  # taken sideways: shown turned 90°
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 22.0, 1.0)}
    upload = photo(2400, 1600, quality=80, exif=exif.tobytes())  # under the server's 2 MB body limit
    kimi.script(Reply("Sorry about the broken mug! A teammate will look at the photo."))
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        sent = await client.post(
            "/playground/api/message",
            data={"text": "It arrived broken"},
            files={"image": ("broken-mug.jpg", upload, "image/jpeg")},
        )
        assert sent.json()["ok"], sent.text
        state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        assert "broken-mug.jpg" in state["desk"] and "broken-mug.jpg" in state["customer"]
        assert "broken-mug.jpg: not" not in state["desk"]
    [image] = sent_images(kimi.completions[0])
    assert image.size == (1045, MAX_SIDE), "the model saw the photo upright (portrait), 1568 px at most"
    assert not image.getexif(), "no EXIF: no GPS position, no phone model"
    with sqlite3.connect(tmp_path / "supportbot.db") as db:
        stored = db.execute("SELECT length(data) FROM attachments").fetchall()
    [sent_bytes] = sent_image_bytes(kimi.completions[0])
    assert stored == [(len(sent_bytes),)], "only the small version is kept, not the upload"
    assert len(sent_bytes) < len(upload) // 2


async def test_customer_and_model_text_is_shown_as_text_never_as_markup(tmp_path: Path, kimi: FakeKimi) -> None:
    kimi.script(CallTools([("get_order_status", {"order_id": "40021"})]), Reply("<img src=x onerror=alert(2)>"))
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        await client.post("/playground/api/message", data={"text": "<script>alert(1)</script> order 40021"})
        state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        page = state["customer"] + state["desk"]
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
        assert "<img src=x" not in page and "&lt;img src=x" in page


async def test_another_web_site_cannot_drive_a_local_playground(tmp_path: Path, kimi: FakeKimi) -> None:
    async with (
        playground_bot(tmp_path, kimi) as bot,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot.port}") as plain,
    ):
        page = await plain.get("/")
        assert page.status_code == 200 and "supportbot playground" in page.text
        forged = await plain.post("/playground/api/message", data={"text": "from evil.example"})
        assert forged.status_code == 403
        assert not playground_of(bot).state.current.lines, "nothing was recorded"


async def test_next_to_slack_the_playground_needs_the_token_and_its_cards_go_to_slack(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAYGROUND_TOKEN", "pg-token-4242")
    async with running_bot(tmp_path, kimi, slack) as harness:
        playground = playground_of(harness.bot)
        assert playground.review_desk is None
        async with httpx.AsyncClient(base_url=harness.url, headers=HEADER) as client:
            assert (await client.get("/")).status_code == 403
            assert (await client.get("/", params={"token": "wrong"})).status_code == 403
            opened = await client.get("/", params={"token": "pg-token-4242"}, follow_redirects=True)
            assert opened.status_code == 200 and "Review desk" not in opened.text
            assert "token" not in str(opened.url), "the token left the address bar"
            sent = await client.post("/playground/api/message", data={"text": "Where is #W2611340?"})
            assert sent.json()["ok"], "the cookie set with the page lets the page's script in"
            refused = await client.post("/playground/api/policy/apply", data={"policy": ""})
            assert refused.status_code == 403, "next to live customers the policy file is not rewritten"
        cards = await harness.wait_cards(1)
        assert cards[0].params["channel"] == REVIEW_CHANNEL


async def test_with_a_platform_and_no_token_there_is_no_playground(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        assert not any(isinstance(p, PlaygroundPlatform) for p in harness.bot.platforms)
        async with httpx.AsyncClient(base_url=harness.url) as client:
            assert (await client.get("/")).status_code == 404


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        (None, False),
    ],
)
def test_without_a_token_only_this_machine_is_answered(remote: str | None, local: bool) -> None:
    assert is_local(remote) is local


async def test_a_page_waiting_for_news_is_let_go_when_the_bot_stops(tmp_path: Path, kimi: FakeKimi) -> None:
    async with client_for_stopping(tmp_path, kimi) as (bot, client):
        version = (await client.get("/playground/api/state")).json()["version"]
        waiting = asyncio.create_task(client.get("/playground/api/state", params={"since": version}))
        await wait_until(lambda: [1] if playground_of(bot).state.waiting else [], 1, 10)
        started = asyncio.get_running_loop().time()
        await bot.stop()
        response = await asyncio.wait_for(waiting, 10)
        assert response.status_code == 200
        assert asyncio.get_running_loop().time() - started < 5, "the 20 s long poll did not hold the shutdown"


async def test_an_undecided_card_shows_its_reminder_and_then_overdue(tmp_path: Path, kimi: FakeKimi) -> None:
    # Issue 19 point 7 on the playground's desk: the reminder under the card, then the overdue mark.
    policy = '[escalation.playground]\non_call = "oncall"\n[desk]\nfirst_response_minutes = 0.02\n'
    async with playground_bot(tmp_path, kimi, policy, sweep_seconds=0.1) as bot, client_for(bot) as client:
        await client.post("/playground/api/message", data={"text": "Is anyone there?"})
        state = await state_when(client, lambda s: "This card has waited" in s["desk"])
        assert "↳ @oncall This card has waited" in state["desk"]
        state = await state_when(client, lambda s: "⚑ Overdue: waiting" in s["desk"])
        assert state["desk"].count("This card has waited") == 1 and "Approve &amp; send" in state["desk"]


async def test_retry_on_a_failed_card_is_refused_once_a_newer_draft_answers_or_a_human_does(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)

        async def failed_card(text: str) -> str:
            kimi.script(Reply(""))  # an empty answer: the draft fails
            await client.post("/playground/api/message", data={"text": text})
            # The card may show first while its draft is still being written: wait for the failure.
            card = await until(
                lambda: next(
                    (c for c in playground.state.cards.values() if c.customer_text == text and c.retryable), None
                ),
                "the failed card",
            )
            assert (
                f'data-action="regenerate" data-draft="{card.draft_id}">Retry'
                in (await client.get("/playground/api/state")).json()["desk"]
            )
            return card.draft_id

        async def decide(draft_id: str, action: str) -> dict[str, Any]:
            answered = await client.post("/playground/api/decide", data={"draft_id": draft_id, "action": action})
            return dict(answered.json())

        # The customer wrote again: a newer draft answers, so the failed one is not drafted twice.
        first = await failed_card("Do you ship to Canada?")
        kimi.script(Reply("Yes, we ship to Canada."))
        await client.post("/playground/api/message", data={"text": "Hello? Canada?"})
        await state_when(client, lambda s: "Yes, we ship to Canada." in s["desk"])
        assert await decide(first, "regenerate") == {
            "ok": False,
            "message": "A newer draft for this conversation is already on its way.",
        }

        # A human took the conversation over: the bot does not draft until it is handed back.
        await client.post("/playground/api/thread")
        second = await failed_card("Where is my parcel?")
        assert (await decide(second, "take_over"))["ok"]
        assert await decide(second, "regenerate") == {
            "ok": False,
            "message": "A human answers this conversation; Hand back to the bot first.",
        }
        # The card's refresh after the take-over tells the customer side (in the background).
        await state_when(client, lambda s: "A person is answering this conversation." in s["customer"])
