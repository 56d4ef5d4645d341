"""Issue 19 point 6 on the test desk: the policy's fixed texts in the customer's language
(detected when the conversation names none, and then recorded), the default text for a message
too short or too unsure to tell; ``{expected_minutes}`` from the median wait of the last 7 days.
The kill -9 case is in tests/test_crash_recovery.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from bot.core.expected_wait import median_wait_minutes
from bot.domain.states import ConversationOwner, ConversationStatus, OutboxStatus
from bot.policy import parse_policy
from bot.store.schema import Conversation, Draft, Message, OutboxItem
from bot.testing import TestDesk
from tests.desks import SlackDriver, open_desk
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack

ACK = "Thanks! A person will answer within {expected_minutes} minutes."
ACK_DE = "Danke! Ein Mensch antwortet in {expected_minutes} Minuten."
HANDOFF = "Thanks, a person from our team takes it from here."
HANDOFF_DE = "Danke, ein Mensch aus unserem Team übernimmt."
POLICY = f"""
[approvers]
agents = ["alice"]

[escalation]
human_request_phrases = ["talk to a human", "mit einem menschen sprechen"]

[desk]
first_response_minutes = 30
acknowledgement = "{ACK}"
handoff = "{HANDOFF}"

[desk.acknowledgement_texts]
de = "{ACK_DE}"

[desk.handoff_texts]
de = "{HANDOFF_DE}"
"""


async def facts(desk: TestDesk) -> list[dict[str, Any]]:
    async with desk.bot.engine.connect() as conn:
        return [dict(f) for f in (await conn.scalars(select(Conversation.facts).order_by(Conversation.created_at)))]


async def test_a_german_customer_is_acknowledged_and_handed_over_in_german(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        said = await desk.customer("jonas").says("Mein Paket ist kaputt. Ich will mit einem Menschen sprechen, bitte.")
        assert await desk.reply_to(said) == ACK_DE.format(expected_minutes=30)
        card = await desk.card_for(said)
        assert card.conversation.owner is ConversationOwner.HUMAN, "escalated: a human takes over"
        await desk.settle()
        assert desk.replies_to(said) == [ACK_DE.format(expected_minutes=30), HANDOFF_DE]
        languages = [f.get("language") for f in await facts(desk)]
        assert languages == ["de"], "the detected language is the conversation's fact (drafting keeps it)"


async def test_a_short_or_unsure_message_gets_the_default_texts(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        # An order number alone ("ok" alone gets no answer, so no acknowledgement either).
        short = await desk.customer("ana").says("#W2611340")
        unsure = await desk.customer("zoe").says("Où est ma commande #W2611340 ?")
        assert await desk.reply_to(short) == ACK.format(expected_minutes=30), "'#W2611340' is no language"
        assert await desk.reply_to(unsure) == ACK.format(expected_minutes=30), "a guess is not taken"
        human = await desk.customer("zoe").says("fraud!!", after=unsure)
        card = await desk.card_for(human)
        assert card.conversation.owner is ConversationOwner.HUMAN
        await desk.settle()
        assert desk.replies_to(unsure) == [ACK.format(expected_minutes=30), HANDOFF]
        assert all("language" not in f for f in await facts(desk))


CLOSED_POLICY = f"""
[desk]
first_response_minutes = 30
acknowledgement = "{ACK}"

[desk.hours]
days = []
out_of_hours = "We are closed; we answer when we open."

[desk.hours.out_of_hours_texts]
de = "Wir haben geschlossen und antworten, sobald wir öffnen."
"""


async def test_a_german_customer_writing_while_the_desk_is_closed_is_told_so_in_german(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=CLOSED_POLICY) as desk:
        jonas = await desk.customer("jonas").says("Mein Paket ist kaputt angekommen, was kann ich jetzt tun?")
        ana = await desk.customer("ana").says("#W2611340")
        assert await desk.reply_to(jonas) == "Wir haben geschlossen und antworten, sobald wir öffnen."
        assert await desk.reply_to(ana) == "We are closed; we answer when we open.", "too short to tell"


async def answered_at(desk: TestDesk, waits: list[tuple[datetime, datetime]]) -> None:
    """Move the clock of the replies sent so far: the n-th customer asked and got the answer at
    ``waits[n]`` (the rows the real flow wrote, their times rewritten)."""
    o, d, m = OutboxItem.__table__.c, Draft.__table__.c, Message.__table__.c
    async with desk.bot.engine.begin() as conn:
        sent = (
            await conn.execute(
                select(o.id, d.message_id)
                .join(Draft.__table__, d.id == o.draft_id)
                .where(o.status == OutboxStatus.SENT)
                .order_by(o.id)
            )
        ).all()
        assert len(sent) == len(waits)
        for (outbox_id, message_id), (asked, answered) in zip(sent, waits, strict=True):
            await conn.execute(update(OutboxItem.__table__).where(o.id == outbox_id).values(sent_at=answered))
            await conn.execute(update(Message.__table__).where(m.id == message_id).values(created_at=asked))


async def test_the_expected_wait_is_the_median_wait_of_the_last_seven_days(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database_url: str
) -> None:
    # Through Slack: two runs on one database (the in-memory desk's ids start over with each run).
    policy = f'[approvers]\nagents = ["UALICE"]\n[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
    kimi.script(*(Reply("It ships today.") for _ in range(5)))
    async with open_desk(
        tmp_path, kimi, policy=policy, database_url=database_url, driver=SlackDriver(slack, kimi)
    ) as desk:
        for name in ("ana", "bo", "cy", "di", "ed"):
            said = await desk.customer(name).says("When does my order ship?")
            assert await desk.reply_to(said) == ACK.format(expected_minutes=30), "too few replies: the policy's time"
            await desk.agent("alice").approve(await desk.card_for(said))
            await desk.settle()
            assert desk.replies_to(said) == [ACK.format(expected_minutes=30), "It ships today."]

        # Customer to reply posted: 10 and 12 minutes on a Monday morning; three who wrote on
        # Friday just before 17:00 and were answered on Monday morning (20, 25, 30 business minutes).
        friday, monday = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
        at = timedelta(hours=1)
        await answered_at(
            desk,
            [
                (monday + 10 * at, monday + 10 * at + timedelta(minutes=10)),
                (monday + 11 * at, monday + 11 * at + timedelta(minutes=12)),
                (friday + 17 * at - timedelta(minutes=5), monday + 9 * at + timedelta(minutes=15)),
                (friday + 17 * at - timedelta(minutes=10), monday + 9 * at + timedelta(minutes=15)),
                (friday + 17 * at - timedelta(minutes=10), monday + 9 * at + timedelta(minutes=20)),
            ],
        )
        hours = parse_policy('[desk.hours]\nstart = "09:00"\nend = "17:00"\n').desk.hours
        assert hours is not None
        office = hours.business_hours()
        async with desk.bot.engine.connect() as conn:
            tuesday = monday + timedelta(days=1)
            assert await median_wait_minutes(conn, office, tuesday) == 20, "in business time"
            assert await median_wait_minutes(conn, None, tuesday) == (3 * 24 - 8) * 60 + 20, "around the clock"
            assert await median_wait_minutes(conn, office, monday + 10 * at) is None, "before most were answered"
            assert await median_wait_minutes(conn, office, monday + timedelta(days=7, hours=10)) is None, (
                "a week later too few are left: the policy's time again"
            )

        # Today: the same waits, the next run's acknowledgement counts them (its own cache).
        now = datetime.now(UTC)
        minutes = [10, 12, 16, 40, 300]
        await answered_at(desk, [(now - timedelta(minutes=m + 1), now - timedelta(minutes=1)) for m in minutes])
    async with open_desk(
        tmp_path, kimi, policy=policy, database_url=database_url, driver=SlackDriver(slack, kimi)
    ) as desk:
        said = await desk.customer("fay").says("When does my order ship?")
        assert await desk.reply_to(said) == ACK.format(expected_minutes=16)


async def test_a_reopened_conversation_is_acknowledged_once_more(tmp_path: Path, kimi: FakeKimi) -> None:
    policy = f'[approvers]\nagents = ["alice"]\n[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
    told = ACK.format(expected_minutes=30)
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        kim = desk.customer("kim")
        said = await kim.says("When does my order ship?")
        card = await desk.card_for(said)
        await desk.card_for(await kim.says("It is order #W2611340.", after=said))
        await desk.settle()
        assert desk.replies_to(said) == [told], "once per opening, not per message"
        await desk.agent("alice").resolve(card)
        await desk.latest(card, lambda c: c.conversation.status is ConversationStatus.RESOLVED)
        await desk.card_for(await kim.says("It has still not arrived, where is it?", after=said))
        await desk.settle()
        assert desk.replies_to(said) == [told, told], "writing after Resolve opens it again"


async def test_a_message_that_gets_no_answer_is_promised_none(tmp_path: Path, kimi: FakeKimi) -> None:
    policy = f'[approvers]\nagents = ["alice"]\n[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
    told = ACK.format(expected_minutes=30)
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        kim = desk.customer("kim")
        kimi.script(Reply("It ships today."))
        said = await kim.says("When does my order ship?")
        card = await desk.card_for(said)
        await desk.agent("alice").approve(card)
        await desk.settle()  # the answer is in the thread
        await desk.agent("alice").resolve(card)
        await desk.latest(card, lambda c: c.conversation.status is ConversationStatus.RESOLVED)

        # "thanks!" after Resolve opens the conversation again, but nobody will answer it: no
        # acknowledgement promising an answer within 30 minutes, no card.
        await kim.says("thanks!", after=said)
        # An emoji alone opening a conversation: the same.
        thanked = await desk.customer("lee").says("🙏")
        # The proof both were taken: a real question gets its acknowledgement and its card.
        asked = await desk.customer("max").says("Do you ship to Norway?")
        assert await desk.reply_to(asked) == told
        await desk.card_for(asked)
        await desk.settle()
        assert desk.replies_to(said) == [told, "It ships today."]
        assert desk.replies_to(thanked) == []
        assert len(desk.cards) == 2
