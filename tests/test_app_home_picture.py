"""The Slack Home tab as an agent sees it on a busy morning (issue 21, point 3, and the README's
picture): cards waiting from several customers (one overdue, one past the first-response time),
a conversation the agent claimed, a reply sent today and a customer's 👍, published by the real
Slack adapter on ``app_home_opened``; the view the fake Slack recorded is drawn by the tests'
Block Kit preview (:mod:`tests.block_kit_preview`) in headless chromium and checked as a reader
would. ``SUPPORTBOT_HOME_SCREENSHOTS=docs`` refreshes docs/app-home.png."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright, expect
from sqlalchemy import update

from adapters.slack import cards
from bot.domain.feedback import Feedback, FeedbackKind
from bot.events import DecisionAction
from bot.store import Draft, utcnow
from bot.store import feedback as feedback_rows
from bot.store.schema import table_of
from tests.block_kit_preview import preview
from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_blocks import validate_view
from tests.harness import Harness, draft_id_of, running_bot, until
from tests.playground_support import CHROMIUM_FLAGS, need_chromium, take_picture
from tests.test_app_home import homes, open_home

SCREENSHOTS_TO = "SUPPORTBOT_HOME_SCREENSHOTS"  # e.g. docs: refreshes the README's picture
POLICY = '[approvers]\nagents = ["U333"]\n\n[desk]\nfirst_response_minutes = 15\n'
STATUS = CallTools([("get_order_status", {"order_id": "#W2611340"})])
CUSTOMERS = {"U401": "Dana Diaz", "U402": "Emil Berg", "U403": "Farah Khan"}
#: What Slack shows for the mentions and the channel link (the preview cannot ask Slack).
NAMES = {**CUSTOMERS, "U222": "Carol Customer", "U333": "Alice Agent", "C111": "help"}


async def ask(harness: Harness, user: str, text: str, *steps: CallTools | Reply) -> str:
    """``user`` mentions the bot in a new thread; the draft id of the card that follows."""
    before = len(harness.cards())
    harness.kimi.script(*steps)
    await harness.mention(text, user=user)
    found = await harness.wait_cards(before + 1)
    return draft_id_of(found[before])


async def came_in(harness: Harness, draft_id: str, minutes_ago: float) -> None:
    """The desk's clock: the card was posted ``minutes_ago`` (a test cannot wait 40 minutes)."""
    assert harness.bot.core is not None
    drafts = table_of(Draft)
    async with harness.bot.core.db.write() as conn:
        await conn.execute(
            update(drafts).where(drafts.c.id == draft_id).values(created_at=utcnow() - timedelta(minutes=minutes_ago))
        )


async def a_busy_morning(harness: Harness) -> None:
    for user, name in CUSTOMERS.items():
        harness.slack.add_user(user, name.lower().replace(" ", "."), real_name=name)
    # Carol's question was answered and she liked the answer.
    answered = await ask(
        harness, "U222", "where is my order #W2611340?", STATUS, Reply("Your order #W2611340 ships today with UPS.")
    )
    await harness.click(cards.APPROVE, answered)
    await harness.wait_replies(None, 1)
    assert harness.bot.core is not None
    async with harness.bot.core.db.write() as conn:
        assert await feedback_rows.record(conn, Feedback(answered, FeedbackKind.REPLY, 1, "U222"), utcnow())
    # Four cards wait: Dana's for 42 minutes, Emil's for 21, Farah's for 6 (Alice claimed it), and a new one.
    dana = await ask(
        harness, "U401", "My parcel arrived damaged. Can I get a refund?", Reply("I'm sorry! Let me check.")
    )
    emil = await ask(harness, "U402", "Do you ship to Norway?", Reply("Yes, we ship to Norway in 5–7 days."))
    farah = await ask(
        harness, "U403", "Can I change the address on #W2611340?", Reply("Yes: reply with the new address.")
    )
    await ask(harness, "U222", "and can I add a gift note?", Reply("Of course, tell me what it should say."))
    for draft_id, minutes in ((dana, 42), (emil, 21), (farah, 6)):
        await came_in(harness, draft_id, minutes)
    claim_id, _ = cards.CONVERSATION_BUTTONS[DecisionAction.CLAIM]
    await harness.click(claim_id, farah, user="U333")
    await until(lambda: harness.card_updates(farah), "the card showing Alice's claim")


def published_home(slack: FakeSlack) -> dict[str, Any]:
    [*_, latest] = homes(slack, "U333")
    view: dict[str, Any] = json.loads(latest)
    assert validate_view(view) == [], "Slack would take the view"
    return view


async def test_the_home_tab_shows_the_oldest_card_first_the_overdue_one_claim_buttons_and_today(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    chromium = need_chromium()
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        await a_busy_morning(harness)
        await harness.settle()
        before = len(homes(slack, "U333"))
        await open_home(harness, "U333")
        await until(lambda: len(homes(slack, "U333")) > before, "the agent's Home")
        view = published_home(slack)

    page_file = tmp_path / "home.html"
    page_file.write_text(preview(view, NAMES, "supportbot: Home"))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 700, "height": 600})
            await page.goto(page_file.as_uri())
            await expect(page.locator("h2").first).to_have_text("Waiting for review: 4")
            queue = page.locator("section.section", has=page.locator("button"))
            await expect(queue).to_have_count(4)
            await expect(queue.nth(0)).to_contain_text("Dana Diaz")
            await expect(queue.nth(0)).to_contain_text("waiting 42 min")
            await expect(queue.nth(0).locator(".emoji.alarm")).to_be_visible()
            await expect(queue.nth(0).locator("b", has_text="overdue")).to_be_visible()
            await expect(queue.nth(1)).to_contain_text("Emil Berg")
            await expect(queue.nth(1)).to_contain_text("past the first-response time")
            await expect(queue.nth(2)).to_contain_text("Farah Khan")
            await expect(queue.nth(2)).to_contain_text("assigned to @Alice Agent")
            await expect(queue.nth(3)).not_to_contain_text("overdue")
            await expect(queue.locator("blockquote").nth(0)).to_have_text(
                "My parcel arrived damaged. Can I get a refund?"
            )
            claim_id, claim_label = cards.CONVERSATION_BUTTONS[DecisionAction.CLAIM]
            buttons = page.locator(f'button[data-action-id="{claim_id}"]')
            await expect(buttons).to_have_count(4)
            await expect(buttons.first).to_have_text(claim_label)
            mine = page.locator("h2", has_text="My conversations").locator("xpath=following-sibling::section[1]")
            await expect(mine).to_contain_text("Farah Khan")
            await expect(mine.locator("b")).to_have_text("@Farah Khan")
            await expect(mine).to_contain_text("open · the bot drafts")
            today = page.locator("section.section").last
            await expect(today.locator("b")).to_have_text(["1", "0", "4"])  # sent, resolved, waiting
            await expect(today).to_contain_text("Replies sent: 1")
            await expect(page.locator(".unsupported")).to_have_count(0)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 700, "nothing runs off the side"
            await take_picture(page.locator("main"), tmp_path, "app-home.png", SCREENSHOTS_TO)
        finally:
            await browser.close()


def test_the_preview_escapes_every_text_and_draws_mrkdwn() -> None:
    said = "*late* _again_ <https://shop.example/?a=1&b=2|the order> &lt;script&gt;alert(1)&lt;/script&gt; <@U1>"
    page = preview(
        {
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "<img src=x>"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": said}},
                {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "<b>"}}]},
                {"type": "video"},
            ]
        },
        {"U1": "Ann"},
    )
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x&gt;" in page and ">&lt;b&gt;</button>" in page
    assert "<b>late</b>" in page and "<i>again</i>" in page
    assert '<a href="https://shop.example/?a=1&amp;b=2">the order</a>' in page
    assert '<span class="mention">@Ann</span>' in page
    assert "unsupported block: video" in page, "a block the preview cannot draw is shown, not dropped"
