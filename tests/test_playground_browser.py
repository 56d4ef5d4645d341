"""The playground in a real headless browser (Debian's chromium, driven by Playwright): a
customer writes, a card appears on the review desk, the agent approves, the reply arrives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.async_api import async_playwright, expect

from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.playground_support import CHROMIUM_FLAGS, need_chromium, playground_bot

SCREENSHOT_TO = "SUPPORTBOT_PLAYGROUND_SCREENSHOT"  # e.g. docs/playground.png, to refresh the README's picture


async def test_a_newcomer_asks_as_a_customer_approves_the_card_and_sees_the_reply_arrive(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    chromium = need_chromium()
    async with playground_bot(tmp_path, kimi) as bot, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []  # a Content-Security-Policy violation is reported here
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"http://127.0.0.1:{bot.port}/")

            await page.click("#orders")
            await expect(page.locator("#flash")).to_contain_text("loaded 4 sample orders")

            kimi.script(
                CallTools([("get_order_status", {"order_id": "#W2611340"})]),
                Reply(
                    "Hi Kim! Your order #W2611340 (2 × Blue mug) shipped with UPS, tracking "
                    "1Z999AA10123456784, and should arrive within two days."
                ),
            )
            await page.fill("#compose textarea", "Hi! Where is my order #W2611340?")
            await page.click("#compose button[type=submit]")

            card = page.locator("#desk .card").first
            await expect(card.locator("button.approve")).to_be_visible(timeout=15_000)
            await expect(card).to_contain_text("get_order_status")
            await expect(card).to_contain_text("Hi! Where is my order #W2611340?")
            await expect(page.locator("#customer")).to_contain_text("reviewing an answer")

            await card.locator("button.approve").click()

            reply = page.locator("#customer .msg.support")
            await expect(reply).to_have_count(1, timeout=15_000)
            await expect(reply).to_contain_text("UPS")
            await expect(card).to_contain_text("sent to the customer")
            await expect(page.locator("#policy-result")).to_contain_text("OK")
            # The file's name, not where the machine keeps it (the README's picture once showed a temp path).
            await expect(page.locator("#policy-side h2 small")).to_have_text("(policy.toml)")

            shot = tmp_path / "playground.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get(SCREENSHOT_TO):
                shutil.copy(shot, os.environ[SCREENSHOT_TO])

            await page.fill("#policy", '[refunds]\nmax_amount = "lots"\n')
            await expect(page.locator("#policy-result")).to_contain_text("line 2: refunds.max_amount")
            csp = [e for e in errors if "Content Security Policy" in e]
            assert not csp, csp
            assert await page.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"
        finally:
            await browser.close()
