"""The playground as a support agent uses it, in a real headless browser (Debian's chromium,
driven by Playwright), at desktop (1400 px) and phone (390 px) width: progress while drafting,
every card state and every refund path of the sample orders, no dead ends (Retry, reply by
hand, the customer told what happened), what is typed survives updates, long messages folded,
image thumbnails, Enter sends, the policy editor's defaults, the bot going down and coming back
with its cards rebuilt from the database. Any Content-Security-Policy violation, console error
or horizontal overflow fails the walk.

With ``SUPPORTBOT_PLAYGROUND_SCREENSHOTS=docs`` the walk writes the README's pictures there:
``playground.png`` (desktop), ``playground-phone.png`` and ``cards/<state>.png``."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Locator, Page, async_playwright, expect

from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.playground_support import CHROMIUM_FLAGS, need_chromium, playground_bot
from tests.processes import free_port

SCREENSHOTS_TO = "SUPPORTBOT_PLAYGROUND_SCREENSHOTS"  # e.g. docs: refreshes the README's pictures
DESKTOP, PHONE = 1400, 390
WAIT = 15_000
#: A 1×1 PNG: the image a customer attaches.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Walk:
    """One browser page on the playground, failing on console errors, CSP reports and overflow."""

    def __init__(self, page: Page, shots: Path, width: int) -> None:
        self.page = page
        self.shots = shots
        self.width = width
        self.errors: list[str] = []
        self.bot_down = False  # while the bot is stopped on purpose, failed requests are expected
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if self.bot_down and "ERR_CONNECTION_REFUSED" in message.text:
            return
        self.errors.append(message.text)

    async def check(self) -> None:
        """No console error (a CSP violation is one) and nothing wider than the window."""
        assert not self.errors, self.errors
        wide = await self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"the page overflows by {wide} px at {self.width} px"

    async def send(self, text: str) -> None:
        await self.page.fill("#compose textarea", text)
        await self.page.press("#compose textarea", "Enter")  # Enter sends
        await expect(self.page.locator("#compose textarea")).to_have_value("", timeout=WAIT)

    def card(self, text: str) -> Locator:
        """The newest card whose customer message contains ``text``."""
        return self.page.locator("#desk article.card", has_text=text).first

    async def shoot(self, locator: Locator, name: str) -> None:
        path = self.shots / name
        path.parent.mkdir(parents=True, exist_ok=True)
        await locator.screenshot(path=str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    async def new_conversation(self) -> None:
        where = await self.page.locator("#where").text_content()
        await self.page.click("#new-thread")
        await expect(self.page.locator("#where")).not_to_have_text(where or "", timeout=WAIT)


def copy_pictures(shots: Path) -> None:
    target = os.environ.get(SCREENSHOTS_TO)
    if target:
        shutil.copytree(shots, target, dirs_exist_ok=True)


@pytest.mark.parametrize("width", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_an_agent_walks_every_card_state_and_refund_path_without_a_dead_end(
    tmp_path: Path, kimi: FakeKimi, width: int
) -> None:
    chromium = need_chromium()
    shots = tmp_path / "shots"
    kimi.latency = 0.4  # each model call takes a moment: the steps show as they happen
    settings = {"stream_drafts_to_card": True, "stream_update_seconds": 0.1}
    async with playground_bot(tmp_path, kimi, **settings) as bot, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": 900})
            walk = Walk(page, shots, width)
            await page.goto(f"http://127.0.0.1:{bot.port}/")
            # No policy file yet: the editor shows the built-in defaults in force, and they check.
            await expect(page.locator("#policy")).to_have_value(
                re.compile(r"built-in defaults in force[\s\S]*manager_threshold = \"100.00\"")
            )
            await expect(page.locator("#policy-result")).to_contain_text("OK")
            await walk.check()

            # Before the sample orders: an order nobody has is "no such order".
            kimi.script(
                CallTools([("get_order_status", {"order_id": "#W2611341"})]),
                Reply("I could not find that order; could you check its number?"),
            )
            await walk.send("Where is #W2611341?")
            early = walk.card("Where is #W2611341?")
            await expect(early.locator("button.approve")).to_be_visible(timeout=WAIT)
            await expect(early).to_contain_text("get_order_status failed: not_found")
            await expect(early).not_to_contain_text("verification needed")
            await early.locator("button.reject").click()
            await expect(page.locator("#customer .note")).to_contain_text("nothing was sent")
            await expect(early).to_contain_text("Nothing was sent")
            await expect(page.locator("#desk article.card.state-drafting")).to_have_count(0)  # no card left forming
            await walk.shoot(early, "cards/rejected.png")
            await walk.check()

            await page.click("#orders")
            await expect(page.locator("#flash")).to_contain_text("loaded 8 sample orders")
            await page.click("#samples summary")
            await expect(page.locator("#samples")).to_contain_text("two different approvers")
            await page.click("#samples summary")

            # Allowed refund: steps while drafting, the customer told a person reviews, then Approve.
            await walk.new_conversation()
            kimi.script(
                CallTools([("get_order_status", {"order_id": "#W2611341"})]),
                CallTools(
                    [("propose_refund", {"order_id": "#W2611341", "amount": "39.00", "reason": "arrived chipped"})]
                ),
                Reply("I'm sorry the tea set arrived chipped. I've proposed a full refund of 39.00."),
            )
            await walk.send("My tea set #W2611341 arrived chipped, can I get a refund?")
            allowed = walk.card("tea set #W2611341")
            await expect(page.locator("#customer .note")).to_contain_text("a person reviews it", timeout=WAIT)
            await expect(allowed.locator(".progress")).to_contain_text("looking up order #W2611341", timeout=WAIT)
            await expect(allowed.locator(".progress")).to_contain_text("refund proposal for order #W2611341")
            await expect(allowed.locator("button.approve")).to_be_visible(timeout=WAIT)
            await expect(allowed).to_contain_text("Proposed refund")
            await expect(allowed.locator("button.retry")).to_have_count(0)
            await expect(page.locator("#customer .note")).to_contain_text("reviewing an answer")
            await walk.shoot(allowed, "cards/pending.png")
            await allowed.locator("button.approve").click()
            await expect(page.locator("#customer .msg.support")).to_contain_text("full refund", timeout=WAIT)
            await expect(allowed).to_contain_text("sent to the customer", timeout=WAIT)
            await expect(page.locator("#customer .note")).to_have_count(0)
            await walk.shoot(allowed, "cards/approved-sent.png")
            await walk.check()

            # Needs a manager: the playground agent is none, so Approve is refused with the reason.
            await walk.new_conversation()
            kimi.script(
                CallTools(
                    [("propose_refund", {"order_id": "#W2611342", "amount": "180.00", "reason": "arrived broken"})]
                ),
                Reply("I've asked for a refund of 180.00; a manager will confirm."),
            )
            await walk.send("The chair #W2611342 arrived broken, please refund it.")
            manager = walk.card("chair #W2611342")
            await expect(manager.locator("button.approve")).to_be_visible(timeout=WAIT)
            await expect(manager.locator(".proposal")).to_contain_text("manager")
            # The README's picture: a conversation, its pending card with the policy's verdict.
            name = "playground.png" if width == DESKTOP else "playground-phone.png"
            await page.screenshot(path=str(shots / name))
            await manager.locator("button.approve").click()
            await expect(page.locator("#flash")).to_contain_text("manager", timeout=WAIT)
            await expect(manager.locator("button.approve")).to_be_visible()

            # What is typed survives updates: an instruction being typed (focused) and a half-written
            # Edit stay while the card is redrawn (Claim, clicked elsewhere, changes the card).
            instruction = manager.locator("input.instruction")
            await manager.locator("button.edit").click()
            await manager.locator(".edit-form textarea").fill("Half-written edit")
            await instruction.fill("mention the 5-day return label")
            await instruction.focus()
            draft_id = await manager.locator("button.approve").get_attribute("data-draft")
            await page.evaluate(
                """(draft) => { const f = new FormData(); f.set('draft_id', draft); f.set('action', 'claim');
                   const headers = {'X-Playground': '1'};
                   return fetch('/playground/api/decide', {method: 'POST', headers, body: f}); }""",
                draft_id,
            )
            await expect(manager.locator("p.conversation")).to_contain_text("assigned to", timeout=WAIT)
            await expect(instruction).to_have_value("mention the 5-day return label")
            await expect(instruction).to_be_focused()
            await expect(manager.locator(".edit-form textarea")).to_have_value("Half-written edit")

            # Edited and approved: a reply the agent rewrote (no refund: Edit sends the text).
            await walk.new_conversation()
            kimi.script(
                CallTools([("get_order_status", {"order_id": "#W2611340"})]),
                Reply("Your order shipped with UPS."),
            )
            await walk.send("Where is my order #W2611340?")
            edited = walk.card("my order #W2611340")
            await expect(edited.locator("button.edit")).to_be_visible(timeout=WAIT)
            await edited.locator("button.edit").click()
            await edited.locator(".edit-form textarea").fill("Hi Kim! Your mugs shipped with UPS (1Z999AA10123456784).")
            await edited.locator(".edit-form button[type=submit]").click()
            await expect(page.locator("#customer .msg.support")).to_contain_text("Your mugs shipped", timeout=WAIT)
            await expect(edited).to_contain_text("Edited and approved", timeout=WAIT)
            await expect(edited).to_contain_text("sent to the customer", timeout=WAIT)
            await walk.shoot(edited, "cards/edited.png")

            # Two approvers, and refused (outside the window): the verdicts are on the cards.
            await walk.new_conversation()
            kimi.script(
                CallTools([("propose_refund", {"order_id": "#W2611343", "amount": "420.00", "reason": "wrong size"})]),
                Reply("I've asked for a refund of 420.00."),
            )
            await walk.send("Refund the desk #W2611343 please, wrong size.")
            two = walk.card("desk #W2611343")
            await expect(two.locator(".proposal")).to_contain_text("needs two different approvers", timeout=WAIT)
            await walk.new_conversation()
            kimi.script(
                CallTools(
                    [("propose_refund", {"order_id": "#W2611344", "amount": "60.00", "reason": "stopped working"})]
                ),
                Reply("I've passed your refund request on."),
            )
            await walk.send("My lamp #W2611344 stopped working, refund please.")
            refused = walk.card("lamp #W2611344")
            await expect(refused.locator(".proposal")).to_contain_text("refused", timeout=WAIT)
            await walk.check()

            # A failed draft: Retry drafts it again; then the agent replies by hand and resolves.
            await walk.new_conversation()
            kimi.script(Reply(""))  # an empty answer: the draft fails
            await walk.send("Do you ship to Canada?")
            failed = walk.card("ship to Canada")
            await expect(failed.locator("button.retry")).to_be_visible(timeout=WAIT)
            await expect(page.locator("#customer .note")).to_contain_text("a person will answer")
            await walk.shoot(failed, "cards/failed.png")
            failed = page.locator(f"#{await failed.get_attribute('id')}")  # this card, not the newest
            kimi.script(Reply("Yes, we ship to Canada within 5-8 days."))
            await failed.locator("button.retry").click()
            retried = page.locator("#desk article.card.state-awaiting_review", has_text="ship to Canada")
            await expect(retried.locator("button.approve")).to_be_visible(timeout=WAIT)
            await expect(failed).to_contain_text("Retried by")
            await retried.locator(".by-hand summary").click()
            await retried.locator(".hand-form textarea").fill("Yes! Canada takes 5-8 days; I'll send you the rates.")
            await retried.locator(".hand-form button[type=submit]").click()
            await expect(page.locator("#customer .msg.support")).to_contain_text("by hand", timeout=WAIT)
            taken = page.locator("#desk article.card", has_text="ship to Canada").first
            await expect(taken).to_contain_text("taken over", timeout=WAIT)
            await expect(taken.locator(".hand-reply")).to_contain_text("Canada takes 5-8 days")
            await walk.shoot(taken, "cards/taken-over.png")
            await taken.locator("button[data-action=resolve]").click()
            await expect(taken.locator("p.conversation")).to_contain_text("resolved", timeout=WAIT)
            await walk.shoot(taken, "cards/resolved.png")
            await walk.check()

            # Long messages fold (and never repeat in full in a later revision); images show.
            await walk.new_conversation()
            kimi.script(Reply("Thanks for the details; a colleague will look at the photo."))
            long_text = "The box was crushed and " + "the mug inside is cracked. " * 200
            await page.fill("#compose textarea", long_text + "\nSecond line")
            await page.set_input_files(
                "#compose input[type=file]", files=[{"name": "mug.png", "mimeType": "image/png", "buffer": PNG}]
            )
            await page.click("#compose button[type=submit]")
            folded = page.locator("#desk article.card", has_text="The box was crushed")
            await expect(folded.first.locator("button.approve")).to_be_visible(timeout=WAIT)
            thumb = page.locator("#customer img.thumb")
            await expect(thumb).to_have_count(1)
            assert await thumb.evaluate("img => img.complete && img.naturalWidth > 0")
            await expect(folded.first.locator("img.thumb")).to_have_count(1)  # on the card too
            kimi.script(Reply("Sorry about the mug! A replacement is on its way."))
            await folded.first.locator("button.regenerate").click()
            await expect(folded).to_have_count(2, timeout=WAIT)
            await expect(folded.first.locator("button.approve")).to_be_visible(timeout=WAIT)
            for n in range(2):  # each revision shows the 5.4k message folded, not again in full
                card = folded.nth(n)
                await expect(card.locator("details.long")).to_have_count(1)
                assert not await card.locator("details.long").evaluate("d => d.open")
                assert (await card.bounding_box() or {"height": 0})["height"] < 700
            message = page.locator("#customer .msg.customer", has_text="The box was crushed")
            assert (await message.bounding_box() or {"height": 0})["height"] < 400
            await expect(page.locator("header")).to_be_in_viewport()  # sticky: feedback stays in sight
            await page.mouse.wheel(0, 2000)
            await expect(page.locator("header")).to_be_in_viewport()

            # Shift+Enter is a new line, not a send.
            await page.fill("#compose textarea", "first line")
            await page.press("#compose textarea", "Shift+Enter")
            await page.keyboard.type("second line")
            await expect(page.locator("#compose textarea")).to_have_value("first line\nsecond line")
            await page.fill("#compose textarea", "")
            await walk.check()

            await expect(page.locator("#desk article.card.state-drafting")).to_have_count(0)
            if width != DESKTOP:  # the cards' pictures come from the desktop walk
                shutil.rmtree(shots / "cards")
            copy_pictures(shots)
        finally:
            await browser.close()


async def test_the_page_says_when_the_bot_is_down_and_rebuilds_its_cards_after_a_restart(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    chromium = need_chromium()
    port = free_port()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": PHONE, "height": 800})
            walk = Walk(page, tmp_path, PHONE)
            async with playground_bot(tmp_path, kimi, port=port) as bot:
                await page.goto(f"http://127.0.0.1:{bot.port}/")
                kimi.script(Reply("Our store opens at 9."))
                kimi.latency = 1.0
                await walk.send("When do you open?")
                # Without streamed cards the desk still shows the draft being written, at once.
                await expect(page.locator("#desk article.placeholder")).to_contain_text("When do you open?")
                await expect(page.locator("#customer .note")).to_contain_text("a person reviews it")
                await expect(walk.card("When do you open?").locator("button.approve")).to_be_visible(timeout=WAIT)
                await walk.check()
                walk.bot_down = True
            # The bot stopped: the page says so, and Send keeps the text and says it was not sent.
            await expect(page.locator("#connection")).to_contain_text("not answering", timeout=WAIT)
            await page.fill("#compose textarea", "Hello?")
            await page.press("#compose textarea", "Enter")
            await expect(page.locator("#flash")).to_contain_text("not sent", timeout=WAIT)
            await expect(page.locator("#compose textarea")).to_have_value("Hello?")
            await walk.check()
            async with playground_bot(tmp_path, kimi, port=port):
                await expect(page.locator("#connection")).to_be_hidden(timeout=WAIT)
                walk.bot_down = False
                # The pending draft's card is rebuilt from the database, and still works.
                card = walk.card("When do you open?")
                await expect(card.locator("button.approve")).to_be_visible(timeout=WAIT)
                await card.locator("button.approve").click()
                await expect(card).to_contain_text("sent to the customer", timeout=WAIT)
                await walk.check()
        finally:
            await browser.close()
