"""The reviewer's language in the playground, in headless chromium: a German customer's card on an
English desk shows their message and the draft machine-translated; an edit typed in English comes
back in German, with that German read back in English, for approval. With
``SUPPORTBOT_PLAYGROUND_SCREENSHOTS=docs`` it writes the README's pictures ``cards/translated.png``
and ``cards/translated-edit.png``."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import async_playwright, expect

from tests.fakes.kimi import FakeKimi, Reply
from tests.playground_support import CHROMIUM_FLAGS, need_chromium, playground_bot
from tests.test_playground_browser import DESKTOP, WAIT, Walk, copy_pictures
from tests.test_translation import ASKED, ASKED_EN, DRAFT, DRAFT_EN

EDIT = "We are sorry! Your parcel left our warehouse today; you will get the tracking number by e-mail."
EDIT_DE = "Es tut uns leid! Ihr Paket hat heute unser Lager verlassen; die Sendungsnummer erhalten Sie per E-Mail."
READ_BACK = "We are sorry! Your parcel left our warehouse today; you will receive the tracking number by e-mail."


async def test_a_translated_card_and_an_edit_translated_back_in_the_playground(tmp_path: Path, kimi: FakeKimi) -> None:
    chromium = need_chromium()
    shots = tmp_path / "shots"
    async with playground_bot(tmp_path, kimi, policy='[desk]\nlanguage = "en"\n') as bot, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": DESKTOP, "height": 900})
            walk = Walk(page, shots, DESKTOP)
            await page.goto(f"http://127.0.0.1:{bot.port}/")
            kimi.script(Reply(DRAFT), Reply(ASKED_EN), Reply(DRAFT_EN))
            await walk.send(ASKED)
            card = walk.card(ASKED)
            await expect(card.locator("button.approve")).to_be_visible(timeout=WAIT)
            marks = card.locator(".translation")
            await expect(marks).to_have_count(2)
            await expect(marks.nth(0)).to_have_text(f"Machine translation de → en: {ASKED_EN}")
            await expect(marks.nth(1)).to_have_text(f"Machine translation de → en: {DRAFT_EN}")
            await expect(card.locator(".draft")).to_have_text(DRAFT)
            await walk.shoot(card, "cards/translated.png")
            await walk.check()

            # Edit opens in English; the English edit comes back in German, still to approve.
            await card.locator("button.edit").click()
            area = card.locator(".edit-form textarea")
            await expect(area).to_have_value(DRAFT_EN)
            await area.fill(EDIT)
            kimi.script(Reply(EDIT_DE), Reply(READ_BACK))
            await card.locator(".edit-form button[type=submit]").click()
            await expect(page.locator("#flash")).to_contain_text("translated into de", timeout=WAIT)
            await expect(card.locator(".draft")).to_have_text(EDIT_DE, timeout=WAIT)
            await expect(card.locator(".translation").nth(1)).to_have_text(f"Machine translation de → en: {READ_BACK}")
            await expect(card).to_contain_text("machine-translated into de")
            await expect(card.locator("button.approve")).to_be_visible()
            await expect(page.locator("#customer .msg.support")).to_have_count(0)
            await walk.shoot(card, "cards/translated-edit.png")

            await card.locator("button.approve").click()
            await expect(page.locator("#customer .msg.support")).to_contain_text(EDIT_DE, timeout=WAIT)
            await walk.check()
            copy_pictures(shots)
        finally:
            await browser.close()
