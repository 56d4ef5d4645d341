"""The customer's answer to the CSAT question (issue 21, point 4): after an agent's Resolve asked
it, the customer's "4" or "5 - thanks!" is kept as the conversation's CSAT score (a second answer
replaces the first), the conversation stays resolved and nothing is drafted (no card, no model
call); a new problem reopens it as before, a digit nobody asked for is an ordinary message, and
``supportbot report`` shows the average. Through the in-memory desk on SQLite and PostgreSQL, and
once through the real Slack adapter (signed events)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import metrics
from bot.cli_ops import EXIT_OK
from bot.core.csat import score_of
from bot.domain.feedback import FeedbackKind
from bot.domain.states import ConversationStatus
from bot.store import AuditEvent, Conversation
from bot.store.schema import FeedbackRow
from bot.testing import Said, TestDesk, until
from tests.desks import FakeKimi, Reply, SlackDriver, open_desk
from tests.fakes.slack import FakeSlack
from tests.harness import until as wait_for
from tests.processes import supportbot
from tests.test_feedback import CSAT, answered

ANSWERED = "supportbot_csat_answers_total"


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("4", 4),
        (" 5. ", 5),
        ("3!", 3),
        ("4/5", 4),
        ("4 / 5", 4),
        ("4 out of 5", 4),
        ("5 - great", 5),
        ("5 - thanks!", 5),
        ("2, too slow", 2),
        ("5 🙂", 5),
        ("3 stars", 3),
        ("1 star", 1),
        ("⭐⭐⭐⭐", 4),
        ("⭐️⭐️⭐️", 3),
        ("★★★★★ lovely", 5),
        ("4⭐", 4),
    ],
)
def test_a_score_with_a_few_words_is_an_answer(text: str, score: int) -> None:
    assert score_of(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "6",
        "10",
        "45",
        "2 of 3",
        "5?",
        "4 - but where is my refund",
        "2 items are missing",
        "my order #W2611340 is late",
        "5 - order W2611340 never came",
        "5 - thanks, but can you also check my other order from last week please",
        "great",
        "⭐⭐⭐⭐⭐⭐",
    ],
)
def test_anything_else_is_an_ordinary_message(text: str) -> None:
    assert score_of(text) is None


def chat_calls(kimi: FakeKimi) -> int:
    return len([r for r in kimi.requests if r.path.endswith("/chat/completions")])


async def csat_answers(desk: TestDesk) -> list[tuple[str, str, int]]:
    async with desk.bot.engine.connect() as conn:
        rows = await conn.execute(
            select(FeedbackRow.draft_id, FeedbackRow.author_id, FeedbackRow.score).where(
                FeedbackRow.kind == FeedbackKind.CSAT
            )
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def audit_summaries(desk: TestDesk, kind: str) -> list[str]:
    async with desk.bot.engine.connect() as conn:
        return list(
            await conn.scalars(select(AuditEvent.summary).where(AuditEvent.kind == kind).order_by(AuditEvent.id))
        )


async def resolved_and_asked(desk: TestDesk, kimi: FakeKimi) -> tuple[Said, str]:
    """Kim's question answered and resolved by the agent; the CSAT question delivered."""
    said, draft_id = await answered(desk, kimi)
    await desk.agent("agent").resolve(desk.cards[-1])
    await until(lambda: desk.replies_to(said)[1:], "the CSAT question")
    await desk.settle()
    return said, draft_id


async def statuses(desk: TestDesk) -> list[ConversationStatus]:
    async with desk.bot.engine.connect() as conn:
        return [
            ConversationStatus(s) for s in await conn.scalars(select(Conversation.status).order_by(Conversation.id))
        ]


async def answers_without_drafting(desk: TestDesk, kimi: FakeKimi, said: Said, text: str) -> None:
    """Kim answers ``text``: its audit line is the event proving it was read as a score (the
    ack committed it before ``says`` returned); then no card, no model call, still resolved."""
    cards, calls, before = len(desk.cards), chat_calls(kimi), len(await audit_summaries(desk, "csat_answer"))
    await desk.customer("kim").says(text, after=said)
    summaries = await audit_summaries(desk, "csat_answer")
    assert len(summaries) == before + 1 and summaries[-1].endswith(text), "kept as the CSAT answer"
    await desk.settle()
    assert (len(desk.cards), chat_calls(kimi)) == (cards, calls), "no card and no model call"
    assert await statuses(desk) == [ConversationStatus.RESOLVED], "the conversation stays resolved"


def answers_counted() -> float:
    return sum(metrics.REGISTRY.get_sample_value(ANSWERED, {"score": str(s)}) or 0.0 for s in range(1, 6))


async def test_the_answer_to_the_csat_question_is_kept_as_a_score_and_a_new_problem_reopens(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, policy=CSAT, database_url=database_url) as desk:
        said, draft_id = await resolved_and_asked(desk, kimi)
        counted = answers_counted()

        await answers_without_drafting(desk, kimi, said, "4")
        assert await csat_answers(desk) == [(draft_id, "kim", 4)]
        await answers_without_drafting(desk, kimi, said, "5 - thanks!")
        assert await csat_answers(desk) == [(draft_id, "kim", 5)], "the second answer replaces the first"
        assert answers_counted() == counted + 2

        kimi.script(Reply("Sorry it is late; an agent is checking it now."))
        late = await desk.customer("kim").says("my order #W2611340 is late", after=said)
        card = await desk.card_for(late)
        assert card.draft_text == "Sorry it is late; an agent is checking it now."
        assert await statuses(desk) == [ConversationStatus.OPEN], "a new problem reopens the conversation"
        assert len(await audit_summaries(desk, "csat_answer")) == 2
        assert await csat_answers(desk) == [(draft_id, "kim", 5)]

    done = await asyncio.to_thread(supportbot, tmp_path, "report", "--since", "7d", DATABASE_URL=database_url)
    assert done.returncode == EXIT_OK, done.stderr
    assert "; CSAT 5.0 of 5 (n=1)" in done.stdout, done.stdout


async def test_a_digit_nobody_asked_for_is_an_ordinary_message(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, database_url=database_url) as desk:  # no CSAT question in the policy
        said, _ = await answered(desk, kimi)
        await desk.agent("agent").resolve(desk.cards[-1])
        await desk.settle()
        assert desk.replies_to(said)[1:] == [], "nothing asked"
        kimi.script(Reply("Thanks! Anything else we can help with?"))
        four = await desk.customer("kim").says("4", after=said)
        card = await desk.card_for(four)
        assert card.draft_text == "Thanks! Anything else we can help with?"
        assert await statuses(desk) == [ConversationStatus.OPEN], "it reopened"
        assert await csat_answers(desk) == []


async def test_slack_the_customers_signed_answer_is_kept_as_a_score(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = '[approvers]\nagents = ["UAGENT"]\n' + CSAT
    async with open_desk(tmp_path, kimi, policy=policy, driver=SlackDriver(slack, kimi)) as desk:
        said, draft_id = await resolved_and_asked(desk, kimi)
        assert desk.replies_to(said)[1:] == ["How did we do? Answer 1 (poor) to 5 (great)."]
        cards, calls = len(desk.cards), chat_calls(kimi)
        await desk.customer("kim").says("⭐⭐⭐⭐ good job", after=said)

        async def read_as_a_score() -> list[str]:
            return await audit_summaries(desk, "csat_answer")

        read: list[str] = await wait_for(read_as_a_score, "the answer read as a score")
        assert read == ["CSAT 4 of 5: ⭐⭐⭐⭐ good job"]
        await desk.settle()
        assert await csat_answers(desk) == [(draft_id, "UKIM", 4)]
        assert (len(desk.cards), chat_calls(kimi)) == (cards, calls), "no card and no model call"
        assert await statuses(desk) == [ConversationStatus.RESOLVED]
