"""Issue 21 point 5 on the test desk: the reviewer's language. A customer writing another language
than the desk's (``[desk] language``) gets a card with their message and the draft translated,
marked as a translation (one model call per text, kept); the reply goes out in their language;
an edit in the desk's language comes back translated for approval; a failed translation never
holds the card up. Through the real Slack and Discord adapters at the end; the playground's
picture in tests/test_translation_browser.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.translation import UNAVAILABLE
from bot.errors import PolicyError
from bot.policy import parse_policy
from bot.ports import CardState, ReviewCard
from bot.store.schema import Conversation, UsageRecord
from bot.testing import MemoryDriver, TestDesk, until
from tests.desks import DiscordDriver, SlackDriver, open_desk
from tests.fakes.discord import REVIEW_CHANNEL_ID, FakeDiscord
from tests.fakes.kimi import Fail, FakeKimi, Hang, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL

POLICY = '[approvers]\nagents = ["alice"]\n[desk]\nlanguage = "en"\n'
ASKED = "Mein Paket ist immer noch nicht angekommen. Wo bleibt es denn?"
ASKED_EN = "My parcel still has not arrived. Where is it?"
DRAFT = "Es tut uns leid! Ihr Paket ist unterwegs und kommt morgen an."
DRAFT_EN = "We are sorry! Your parcel is on its way and arrives tomorrow."
TRANSLATE = "Translate the user's message into the language"


def translation_calls(kimi: FakeKimi) -> list[dict[str, Any]]:
    """The chat completions that asked for a translation, oldest first."""
    return [
        r.body
        for r in kimi.requests
        if r.path.endswith("/chat/completions") and TRANSLATE in str(r.body["messages"][0]["content"])
    ]


async def ledger(desk: TestDesk) -> list[str]:
    async with desk.bot.engine.connect() as conn:
        return list(await conn.scalars(select(UsageRecord.purpose).order_by(UsageRecord.id)))


async def translated_card(desk: TestDesk, kimi: FakeKimi, *texts: Reply | Fail) -> tuple[ReviewCard, Any]:
    kimi.script(Reply(DRAFT), *texts)
    said = await desk.customer("jonas").says(ASKED)
    return await desk.card_for(said), said


async def test_a_german_customers_card_shows_both_texts_translated_and_the_reply_goes_out_in_german(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        assert card.draft_text == DRAFT, "the draft stays in the customer's language"
        assert card.translation is not None
        assert (card.translation.source, card.translation.target) == ("de", "en")
        assert card.translation.customer_line() == f"Machine translation de → en: {ASKED_EN}"
        assert card.translation.draft_line() == f"Machine translation de → en: {DRAFT_EN}"
        assert [c["messages"][1]["content"] for c in translation_calls(kimi)] == [ASKED, DRAFT]

        await desk.agent("alice").approve(card)
        await desk.settle()
        assert desk.replies_to(said) == [DRAFT], "the customer gets the German draft"
        sent = await desk.latest(card, lambda c: c.state is CardState.SENT)
        assert sent.translation == card.translation, "the refreshed card reads the kept translations"
        assert len(translation_calls(kimi)) == 2, "one call per text: a refresh calls nobody"
        assert (await ledger(desk)).count("translating") == 2, "each call is in the usage ledger"
        async with desk.bot.engine.connect() as conn:
            assert [f.get("language") for f in await conn.scalars(select(Conversation.facts))] == ["de"]


async def test_an_edit_in_english_comes_back_in_german_for_approval_and_only_then_is_sent(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    edit = "We will refund the 20 euros for the shipping today."
    edit_de = "Wir erstatten Ihnen heute die 20 Euro für den Versand."
    read_back = "We will refund you the 20 euros for shipping today."
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        kimi.script(Reply(edit_de), Reply(read_back))
        told = await desk.agent("alice").edit(card, edit)
        assert "being translated into de" in told, "the click is answered before the model call"
        back = await desk.latest(card, lambda c: c.draft_text == edit_de)
        assert back.state is CardState.AWAITING_REVIEW, "the translation waits for approval, nothing was sent"
        assert back.translation is not None
        assert back.translation.draft_text == read_back, "beside it: what the German says, read back"
        assert "machine-translated into de" in back.notice
        assert [c["messages"][1]["content"] for c in translation_calls(kimi)[2:]] == [edit, edit_de]

        await desk.agent("alice").approve(back)
        await desk.settle()
        assert desk.replies_to(said) == [edit_de], "the customer gets the approved translation only"
        assert (await ledger(desk)).count("translating") == 4


async def test_an_edit_written_in_the_customers_language_is_sent_as_written(tmp_path: Path, kimi: FakeKimi) -> None:
    own = "Ihr Paket kommt morgen. Wir melden uns, falls nicht."
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        await desk.agent("alice").edit(card, own)
        await desk.settle()
        assert desk.replies_to(said) == [own]
        assert len(translation_calls(kimi)) == 2, "nothing to translate back"


async def test_a_failed_translation_says_so_and_never_holds_the_card_up(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        card, said = await translated_card(desk, kimi, Fail.content_filter(), Reply(DRAFT_EN))
        assert card.state is CardState.AWAITING_REVIEW and card.translation is not None
        assert card.translation.customer_line() == f"Machine translation de → en: {UNAVAILABLE}"
        assert card.translation.draft_text == DRAFT_EN
        await desk.agent("alice").approve(card)
        await desk.settle()
        assert desk.replies_to(said) == [DRAFT]


async def test_an_edit_that_cannot_be_translated_says_so_on_the_card_and_the_card_waits(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        kimi.script(Fail.content_filter())
        told = await desk.agent("alice").edit(card, "We will refund the shipping today.")
        assert "being translated into de" in told
        failed = await desk.latest(card, lambda c: "could not be translated" in c.notice)
        assert "could not be translated into de: nothing was sent" in failed.notice
        assert failed.state is CardState.AWAITING_REVIEW and failed.draft_text == DRAFT, "the card waits as it was"
        await desk.agent("alice").approve(failed)
        await desk.settle()
        assert desk.replies_to(said) == [DRAFT], "the draft the agent could read, never the untranslated edit"


async def test_a_slow_translation_never_holds_the_click_up_and_a_newer_edit_wins(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    second_de = "Wir erstatten heute den Versand und schicken einen Gutschein."
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        # The first edit's translation takes 3 s: longer than a click may wait for its ack.
        kimi.script(Hang(3.0))
        told = await asyncio.wait_for(desk.agent("alice").edit(card, "We will refund the shipping today."), 1.5)
        assert "being translated into de" in told
        translating = await desk.latest(card, lambda c: "translating the edit into de" in c.notice)
        assert translating.draft_text == DRAFT and translating.state is CardState.AWAITING_REVIEW
        await until(lambda: len(translation_calls(kimi)) == 3, "the first edit's translation call made")
        # The agent thinks again before the first translation is back: the newer edit wins.
        kimi.script(Reply(second_de), Reply("We refund the shipping today and send a voucher."))
        await desk.agent("alice").edit(translating, "We will refund the shipping today and send a voucher.")
        back = await desk.latest(card, lambda c: c.draft_text == second_de)
        await desk.settle()
        assert (await desk.latest(card)).draft_text == second_de, "the slower, older edit is dropped"
        await desk.agent("alice").approve(back)
        await desk.settle()
        assert desk.replies_to(said) == [second_de]


async def test_an_edit_held_for_translation_survives_a_crash_and_is_translated_after_the_restart(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    edit_de = "Wir erstatten heute den Versand."
    # A short work lease: the restarted bot takes the held edit over once the first run's ran out.
    quick = {"work_lease_seconds": 2.0, "shutdown_grace_seconds": 0.2}
    driver = MemoryDriver()  # the desk outlives the bot
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url, driver=driver, **quick) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        kimi.script(Hang(60.0))  # the translation call never comes back: the bot stops meanwhile
        told = await desk.agent("alice").edit(card, "We will refund the shipping today.")
        assert "being translated into de" in told
        await until(lambda: len(translation_calls(kimi)) == 3, "the translation call made")
        board = desk.board
    kimi.script(Reply(edit_de), Reply("We refund the shipping today."))
    async with open_desk(
        tmp_path, kimi, policy=POLICY, database_url=database_url, driver=driver, board=board, **quick
    ) as desk:
        back = await desk.latest(card, lambda c: c.draft_text == edit_de)
        assert back.state is CardState.AWAITING_REVIEW and "machine-translated into de" in back.notice
        await desk.agent("alice").approve(back)
        await desk.settle()
        assert desk.replies_to(said) == [edit_de]


async def test_without_a_desk_language_or_for_the_desks_own_language_nothing_is_translated(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy='[approvers]\nagents = ["alice"]\n[desk]\nlanguage = "off"\n') as desk:
        kimi.script(Reply(DRAFT))
        card = await desk.card_for(await desk.customer("jonas").says(ASKED))
        assert card.translation is None
    (tmp_path / "en").mkdir()
    async with open_desk(tmp_path / "en", kimi, policy=POLICY) as desk:
        kimi.script(Reply("It ships today."))
        card = await desk.card_for(await desk.customer("ana").says("Where is my parcel? It has not arrived yet."))
        assert card.translation is None
    assert translation_calls(kimi) == []


def test_the_desk_language_is_a_language_code() -> None:
    assert parse_policy('[desk]\nlanguage = "EN"\n').desk.language == "en"
    assert parse_policy('[desk]\nlanguage = "off"\n').desk.language == ""
    with pytest.raises(PolicyError) as caught:
        parse_policy('[desk]\nlanguage = "English"\n', "policy.toml")
    assert any("'english' is not a lower-case language code" in p for p in caught.value.problems)


async def test_through_slack_the_cards_blocks_show_the_translation_and_the_edit_form_opens_in_english(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    edit_de = "Ihr Paket kommt morgen an; wir schreiben Ihnen die Sendungsnummer."
    policy = '[approvers]\nagents = ["UALICE"]\n[desk]\nlanguage = "en"\n'
    async with open_desk(tmp_path, kimi, policy=policy, driver=SlackDriver(slack, kimi)) as desk:
        card, said = await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        [posted] = [m for m in slack.messages_in(REVIEW_CHANNEL) if m.get("blocks")]
        contexts = [e["text"] for b in posted["blocks"] if b["type"] == "context" for e in b["elements"]]
        assert f":globe_with_meridians: Machine translation de → en: {ASKED_EN}" in contexts
        assert f":globe_with_meridians: Machine translation de → en: {DRAFT_EN}" in contexts
        assert DRAFT in json.dumps(posted["blocks"], ensure_ascii=False), "the draft itself, in German"

        assert isinstance(desk.driver, SlackDriver)
        await desk.driver.harness.click("edit_draft", card.draft_id, user="UALICE")
        [opened] = await slack.wait_for("views.open")
        assert opened.params["view"]["blocks"][0]["element"]["initial_value"] == DRAFT_EN, "edited in English"

        # The translation takes 3 s, past the 2 s a submission may wait before Slack's 3 s ack
        # deadline: the form is still acked at once, and the card shows the translation after.
        kimi.script(
            Hang(3.0), Reply(edit_de), Reply("Your parcel arrives tomorrow; we will write you the tracking number.")
        )
        told = await desk.agent("alice").edit(card, "Your parcel arrives tomorrow; we will send the tracking number.")
        assert "being translated into de" in told

        def updated() -> list[str]:
            return [
                json.dumps(c.params["blocks"], ensure_ascii=False)
                for c in slack.calls_to("chat.update")
                if edit_de in json.dumps(c.params.get("blocks"), ensure_ascii=False)
            ]

        [blocks] = (await until(updated, "the card with the translated edit"))[-1:]
        assert "Machine translation de → en: Your parcel arrives tomorrow; we will write you" in blocks
        assert "approve_draft" in blocks, "back on the desk for approval"
        await desk.agent("alice").approve(await desk.latest(card, lambda c: c.draft_text == edit_de))
        await desk.settle()
        assert desk.replies_to(said) == [edit_de]


async def test_through_discord_the_staff_cards_embed_shows_the_translation(tmp_path: Path, kimi: FakeKimi) -> None:
    async with (
        FakeDiscord() as discord,
        open_desk(tmp_path, kimi, policy=POLICY, driver=DiscordDriver(discord)) as desk,
    ):
        await translated_card(desk, kimi, Reply(ASKED_EN), Reply(DRAFT_EN))
        [posted] = [m for m in discord.messages_in(REVIEW_CHANNEL_ID) if m.get("embeds")]
        fields = {f["name"]: f["value"] for f in posted["embeds"][0]["fields"]}
        assert fields["🌐 Their message, translated"] == f"Machine translation de → en: {ASKED_EN}"
        translated = fields["🌐 The draft, translated (the reply goes out as drafted)"]
        assert translated == f"Machine translation de → en: {DRAFT_EN}"
        assert DRAFT in posted["embeds"][0]["description"], "the draft itself, in German"
