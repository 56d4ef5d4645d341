"""Issue 19, point 6 on the test desk: an escalation hands the conversation to a human and the
customer is told so in the policy's fixed hand-off text, once per opening of the conversation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from bot.domain.states import ConversationOwner, ConversationStatus
from bot.policy import PolicyError, parse_policy
from bot.store.schema import Conversation
from tests.desks import open_desk
from tests.fakes.kimi import FakeKimi

AGENTS = '[approvers]\nagents = ["alice"]\n'
HANDOFF = "Thanks, a person from our team takes it from here."
GERMAN = "Danke, ein Mensch aus unserem Team übernimmt."
WITH_HANDOFF = f'[desk]\nhandoff = "{HANDOFF}"\n[desk.handoff_texts]\nde = "{GERMAN}"\n'


async def test_an_escalation_tells_the_customer_once_per_opening(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, policy=AGENTS + WITH_HANDOFF, database_url=database_url) as desk:
        kim = desk.customer("kim")
        said = await kim.says("my parcel is broken, I want to talk to a human")
        card = await desk.card_for(said)
        assert "asks for a human" in card.escalation
        assert card.conversation.owner is ConversationOwner.HUMAN
        assert await desk.reply_to(said) == HANDOFF
        await desk.settle()
        assert desk.replies_to(said) == [HANDOFF]

        # Handed back, the same message escalates again: the same opening, nothing more is said.
        await desk.agent("alice").hand_back(card)
        again = await desk.card(1)
        assert "asks for a human" in again.escalation and again.conversation.owner is ConversationOwner.HUMAN
        await desk.settle()
        assert desk.replies_to(said) == [HANDOFF]

        # Resolved, then reopened by the customer and handed back: a new opening, told once more.
        assert await desk.agent("alice").resolve(again) == "Resolved; the customer writing again reopens it."
        await desk.latest(again, lambda c: c.conversation.status is ConversationStatus.RESOLVED)
        await kim.says("still broken, talk to a human please", after=said)
        await desk.latest(again, lambda c: c.conversation.status is ConversationStatus.OPEN)
        await desk.agent("alice").hand_back(again)
        reopened = await desk.card(2)
        assert "asks for a human" in reopened.escalation and reopened.conversation.owner is ConversationOwner.HUMAN
        await desk.settle()
        assert desk.replies_to(said) == [HANDOFF, HANDOFF]


async def test_no_hand_off_text_by_default(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=AGENTS) as desk:
        said = await desk.customer("kim").says("I want to talk to a human")
        card = await desk.card_for(said)
        assert card.conversation.owner is ConversationOwner.HUMAN
        await desk.settle()
        assert desk.replies_to(said) == []


async def test_the_hand_off_text_in_the_conversations_language(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=AGENTS + WITH_HANDOFF) as desk:
        kim = desk.customer("kim")
        said = await kim.says("Wo ist meine Bestellung #W2611340?")
        first = await desk.card_for(said)
        assert first.escalation == ""
        async with desk.bot.engine.begin() as conn:  # the language a conversation's facts name
            await conn.execute(update(Conversation.__table__).values(facts={"language": "de"}))
        await desk.card_for(await kim.says("Ich will mit einem Menschen sprechen: talk to a human", after=said))
        await desk.settle()
        assert desk.replies_to(said) == [GERMAN]


def test_a_hand_off_text_names_a_language_code() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy('[desk.handoff_texts]\nGerman = "Danke."\n', "policy.toml")
    assert len(caught.value.problems) == 1 and "'German' is not a lower-case language code" in caught.value.problems[0]
    assert parse_policy('[desk.handoff_texts]\npt-br = "Obrigado."\n', "policy.toml").desk.handoff_texts == {
        "pt-br": "Obrigado."
    }
