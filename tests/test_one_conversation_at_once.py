"""Everything about one conversation at the same instant: the customer writing again, an agent
clicking on its card, its draft being finished. On PostgreSQL these are concurrent transactions
on the same rows; each takes the conversation's row before its drafts, so they queue instead of
deadlocking (PostgreSQL would abort one: a customer's message refused, a click answered with an
error, a draft failed with "internal error"). On SQLite they take turns at the one writer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.ports import CardState
from bot.testing import TestDesk
from tests.desks import open_desk
from tests.fakes.kimi import FakeKimi

POLICY = '[approvers]\nagents = ["alice"]\n'


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as opened:
        yield opened


async def test_a_customer_writing_while_agents_click_on_their_card_every_message_and_click_lands(
    desk: TestDesk,
) -> None:
    alice = desk.agent("alice")
    for n in range(6):
        kim = desk.customer(f"kim{n}")
        said = await kim.says("where is my order #W2611340?")
        card = await desk.card_for(said)
        # A database error would raise here: the message not taken, the click not recorded.
        told = await asyncio.gather(
            alice.approve(card),
            kim.says("also, any news?", after=said),
            alice.claim(card),
            kim.says("hello?", after=said),
            alice.take_over(card),
        )
        approved, claimed, taken = told[0], told[2], told[4]
        assert approved in ("Approved; the reply is on its way.", "This draft was already superseded.")
        assert "assigned to you" in claimed
        assert "answer this conversation" in taken
    await desk.settle()
    for shown in desk.cards:
        assert shown.state is not CardState.FAILED, shown.notice


async def test_a_customer_writing_while_their_draft_is_finished_never_fails_the_draft(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kimi.latency = 0.02
    rng = random.Random(7)

    async def customer(n: int) -> None:
        kim = desk.customer(f"kim{n}")
        said = await kim.says("where is my order #W2611340?")
        for _ in range(5):  # follow-ups land while drafts of the conversation finish
            await asyncio.sleep(rng.uniform(0, 0.05))
            await kim.says("any news?", after=said)

    await asyncio.gather(*(customer(n) for n in range(16)))
    await desk.settle()
    assert desk.cards
    for shown in desk.cards:
        assert shown.state is not CardState.FAILED, shown.notice
