"""``/report`` on the running bot (issue 21, point 2): the report page behind the playground's
access rule, drawn without a script (the playground's CSP holds), looked at in headless chromium
at desktop and phone widths; and ``supportbot report``'s text for the scripted week, as a
terminal shows it. ``SUPPORTBOT_REPORT_SCREENSHOTS=docs`` refreshes docs/report.png,
docs/report-phone.png and docs/report-text.png."""

from __future__ import annotations

import asyncio
import html
import os
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from adapters.playground.guard import SECURITY_HEADERS
from bot.app import Supportbot
from bot.cli_ops import EXIT_OK
from bot.domain.feedback import Feedback, FeedbackKind
from bot.events import Actor, DecisionAction, ReviewDecision
from bot.store import feedback as feedback_rows
from bot.store import utcnow
from tests.desks import open_desk
from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import running_bot
from tests.playground_support import CHROMIUM_FLAGS, need_chromium, playground_bot, take_picture
from tests.processes import supportbot
from tests.test_insight import POLICY, a_week, customers_answer, draft_rows, shop
from tests.test_playground import client_for, playground_of, state_when

SCREENSHOTS_TO = "SUPPORTBOT_REPORT_SCREENSHOTS"
#: A terminal window around the text report, for its picture (the report itself is plain text).
TERMINAL = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>supportbot report</title>
<style>
body {{ margin: 0; background: #fff; }}
figure {{ display: inline-block; margin: 16px; border-radius: 8px; overflow: hidden;
  box-shadow: 0 2px 10px rgba(0, 0, 0, .25); }}
figcaption {{ background: #3a3d41; color: #c8c8c8; font: 12px "DejaVu Sans", sans-serif; padding: 6px 12px; }}
pre {{ margin: 0; padding: 14px 18px; background: #1e1f22; color: #e6e6e6;
  font: 13px/1.4 "DejaVu Sans Mono", monospace; }}
</style></head><body><figure><figcaption>$ supportbot report --since 7d</figcaption>
<pre>{text}</pre></figure></body></html>"""
STATUS = CallTools([("get_order_status", {"order_id": "#W2611340"})])


async def converse(
    bot: Supportbot,
    client: httpx.AsyncClient,
    kimi: FakeKimi,
    text: str,
    steps: list[CallTools | Reply],
    decisions: list[tuple[DecisionAction, str, str | None]],
) -> str:
    """A new customer thread on the playground: ``text``, drafted by ``steps``, then each decision
    (action, agent, edited text or instruction) taken on the card pending at the time."""
    playground = playground_of(bot)
    # The cards of earlier threads are done, even when their last update is still on its way.
    decided = {card.draft_id for card in playground.state.cards.values()}
    await client.post("/playground/api/thread")
    kimi.script(*steps)
    await client.post("/playground/api/message", data={"text": text})

    def waiting() -> str | None:
        card = playground.state.pending_card()
        return card.draft_id if card is not None and card.draft_id not in decided else None

    for action, agent, extra in decisions:
        await state_when(client, lambda _s: waiting() is not None)
        card = playground.state.pending_card()
        assert card is not None and bot.core is not None
        decided.add(card.draft_id)
        outcome = await bot.core.decide(
            ReviewDecision(
                card.draft_id,
                action,
                Actor("playground", agent.lower(), agent),
                edited_text=extra if action is DecisionAction.EDIT else None,
                instruction=extra if action is DecisionAction.REGENERATE else None,
            )
        )
        assert outcome.ok, outcome.message
    await state_when(client, lambda _s: waiting() is None)
    return card.draft_id  # the last one decided


async def a_few_conversations(bot: Supportbot, client: httpx.AsyncClient, kimi: FakeKimi) -> None:
    await client.post("/playground/api/orders")
    approve, edit, reject, regenerate = (
        DecisionAction.APPROVE,
        DecisionAction.EDIT,
        DecisionAction.REJECT,
        DecisionAction.REGENERATE,
    )
    shipped = Reply("Your order #W2611340 shipped with UPS and arrives within two days.")
    first = await converse(bot, client, kimi, "Where is #W2611340?", [STATUS, shipped], [(approve, "Ana", None)])
    # The answer is in the chat as soon as it is posted, and recorded as sent a moment later (the
    # card turns "sent"): a "thanks!" in between would follow an answer the bot has not recorded.
    await state_when(client, lambda s: 'class="msg support"' in s["customer"] and "state-sent" in s["desk"])
    await client.post("/playground/api/message", data={"text": "thanks!"})  # no reply needed: resolved
    await state_when(client, lambda s: "thanks!" in s["customer"])
    second = await converse(bot, client, kimi, "Has #W2611340 shipped?", [STATUS, shipped], [(approve, "Ben", None)])
    await converse(
        bot,
        client,
        kimi,
        "When will #W2611340 arrive?",
        [STATUS, shipped],
        [(edit, "Ana", "Your order #W2611340 shipped with UPS; it arrives on Thursday.")],
    )
    await converse(bot, client, kimi, "Are you open on Sundays?", [Reply("Yes, every day.")], [(reject, "Ben", None)])
    await converse(
        bot,
        client,
        kimi,
        "hello?",
        [Reply("Hello."), Reply("Hello! How can I help you today?")],
        [(regenerate, "Cleo", "greet warmly"), (approve, "Cleo", None)],
    )
    await converse(
        bot,
        client,
        kimi,
        "Can I change my address?",
        [Reply("Yes, reply with the new address.")],
        [(edit, "Ben", "Of course: reply here with the new address and we will update the order before it ships.")],
    )
    assert bot.core is not None
    async with bot.core.db.write() as conn:  # what the customers answered (point 4's storage; no buttons yet)
        for answer in (
            Feedback(first, FeedbackKind.REPLY, 1, "kim"),
            Feedback(second, FeedbackKind.REPLY, -1, "lee"),
            Feedback(first, FeedbackKind.CSAT, 5, "kim"),
        ):
            await feedback_rows.record(conn, answer, utcnow())
    await converse(
        bot, client, kimi, "I was charged twice!", [Reply("Let me look.")], [(DecisionAction.TAKE_OVER, "Ana", None)]
    )


async def test_the_report_page_is_behind_the_playground_s_access_rule(tmp_path: Path, kimi: FakeKimi) -> None:
    async with playground_bot(tmp_path, kimi) as bot, httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot.port}") as web:
        page = await web.get("/report")
        assert page.status_code == 200 and "No decisions." in page.text
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name] == value
        assert "<script" not in page.text and "style=" not in page.text
        css = await web.get("/report/report.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        rebound = await web.get("/report", headers={"Host": "evil.example"})
        assert rebound.status_code == 403, "a DNS-rebinding page cannot read the figures"
        wrong = await web.get("/report", params={"since": "a week"})
        assert wrong.status_code == 400 and "'a week' is not a period" in wrong.text
        month = await web.get("/report", params={"since": "30d"})
        assert "(30 days)" in month.text


async def test_next_to_slack_the_report_needs_the_playground_token(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAYGROUND_TOKEN", "pg-token-4242")
    async with running_bot(tmp_path, kimi, slack) as harness, httpx.AsyncClient(base_url=harness.url) as web:
        assert (await web.get("/report")).status_code == 403
        assert (await web.get("/report/report.css")).status_code == 403
        opened = await web.get("/report", params={"token": "pg-token-4242"}, follow_redirects=True)
        assert opened.status_code == 200 and "supportbot report" in opened.text
        assert "token" not in str(opened.url)


async def test_an_operator_opens_the_report_on_a_desktop_and_on_a_phone(tmp_path: Path, kimi: FakeKimi) -> None:
    chromium = need_chromium()
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client, async_playwright() as pw:
        await a_few_conversations(bot, client, kimi)
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            for name, viewport in (
                ("report.png", {"width": 1280, "height": 900}),
                ("report-phone.png", {"width": 390, "height": 844}),
            ):
                page = await browser.new_page(viewport=viewport)
                errors: list[str] = []  # a Content-Security-Policy violation, a stylesheet not found
                page.on("console", lambda m, errors=errors: errors.append(m.text) if "Security" in m.text else None)
                page.on(
                    "response",
                    lambda r, errors=errors: (
                        errors.append(f"{r.status} {r.url}")
                        if r.status >= 400 and not r.url.endswith("/favicon.ico")
                        else None
                    ),
                )
                await page.goto(f"http://127.0.0.1:{bot.port}/report")
                await expect(page.locator(".tile strong").first).to_have_text("7")
                await expect(page.locator(".panel").last).to_contain_text("no reply needed (no card)1")
                await expect(page.locator("section.rates")).to_contain_text("status")
                assert await page.evaluate("getComputedStyle(document.querySelector('.grid')).display") == "grid"
                bar = page.locator("svg.bar rect.approve").first
                assert (await bar.bounding_box() or {}).get("width", 0) > 10, "the bars are drawn"
                scroll = await page.evaluate("document.documentElement.scrollWidth")
                assert scroll <= viewport["width"], "nothing runs off the side of the screen"
                shot = tmp_path / name
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                if os.environ.get(SCREENSHOTS_TO):
                    shutil.copy(shot, Path(os.environ[SCREENSHOTS_TO]) / name)
                assert not errors, errors
                await page.close()
        finally:
            await browser.close()


async def test_the_text_report_of_a_scripted_week_as_a_terminal_shows_it(tmp_path: Path, kimi: FakeKimi) -> None:
    chromium = need_chromium()
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        await desk.import_orders(shop(desk))
        await a_week(desk, kimi)
        await customers_answer(desk, await draft_rows(desk))
        url = desk.bot.settings.database_url
    done = await asyncio.to_thread(supportbot, tmp_path, "report", "--since", "7d", DATABASE_URL=url)
    assert done.returncode == EXIT_OK, done.stderr
    page_file = tmp_path / "report-text.html"
    page_file.write_text(TERMINAL.format(text=html.escape(done.stdout.rstrip())))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 800})
            await page.goto(page_file.as_uri())
            terminal = page.locator("pre")
            await expect(terminal).to_contain_text("supportbot report: ")
            for heading in (
                "6 drafts decided: approved 50%, edited 17%, rejected 17%, regenerated 17%",
                "by category",
                "by agent",
                "by model",
                "by policy version",
                "time to first response",
                "time to decision",
                "edit distance of sent replies",
                "cost per resolved conversation",
                "customer feedback: thumbs up 2, down 1",
            ):
                await expect(terminal).to_contain_text(heading)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1000, "the longest line fits a 1000 px window"
            await take_picture(page.locator("figure"), tmp_path, "report-text.png", SCREENSHOTS_TO)
        finally:
            await browser.close()
