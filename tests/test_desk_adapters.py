"""The same few support conversations on each desk: in memory, through the real Slack adapter
over the fake Slack, and through the real Discord adapter over the fake Discord. The rules are
tested on the in-memory desk (tests/test_refunds.py, test_guards.py, test_drafting.py); these
prove each adapter carries them: the customer's message in, the card's verdicts, the agent's
click and what they are told, the reply out, the money moved once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.ports import CardState
from bot.testing import Driver, MemoryDriver, TestDesk
from tests.desks import CallTools, DiscordDriver, FakeKimi, Reply, SlackDriver, open_desk
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.harness import sample_orders


@pytest.fixture(params=["memory", "slack", "discord"])
async def driver(request: pytest.FixtureRequest, slack: FakeSlack, kimi: FakeKimi) -> AsyncIterator[Driver]:
    if request.param == "memory":
        yield MemoryDriver()
    elif request.param == "slack":
        yield SlackDriver(slack, kimi)
    else:
        async with FakeDiscord() as discord:
            yield DiscordDriver(discord)


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, driver: Driver) -> AsyncIterator[TestDesk]:
    policy = (
        '[refunds]\nmax_amount = "500.00"\nmanager_threshold = "100.00"\n'
        f'[approvers]\nmanagers = ["{driver.user_id("mgr")}"]\n'
    )
    async with open_desk(tmp_path, kimi, policy=policy, driver=driver) as opened:
        # Kim (customer C-1) owns #W2611340 and the delivered chair of order 40021.
        kim = opened.account("kim")
        rows: list[dict[str, Any]] = [
            dict(r, customer_id="C-1", customer_name="Kim Lee", customer_accounts=kim)
            if r["order_id"] in ("#W2611340", "40021")
            else dict(r, customer_accounts="")
            for r in sample_orders()
        ]
        await opened.import_orders(rows)
        yield opened


async def test_an_order_question_is_answered_once_after_approval(desk: TestDesk) -> None:
    said = await desk.customer("kim").says("Hi, where is my order #W2611340?")
    card = await desk.card_for(said)
    assert card.customer_text.endswith("where is my order #W2611340?")
    assert card.identity == "Verified customer C-1 (linked account)"
    assert [lookup.name for lookup in card.lookups] == ["get_order_status"] and "1Z999AA10123456784" in card.draft_text
    assert card.actionable and desk.replies_to(said) == [], "nothing reaches the customer before approval"

    assert "on its way" in await desk.agent("agent").approve(card)
    assert "1Z999AA10123456784" in await desk.reply_to(said)
    sent = await desk.latest(card, until=lambda c: c.state is CardState.SENT)
    assert sent.decided_by and not sent.actionable
    await desk.settle()
    assert len(desk.replies_to(said)) == 1


async def test_a_refund_above_the_manager_threshold_waits_for_a_manager(desk: TestDesk, kimi: FakeKimi) -> None:
    kimi.script(
        CallTools([("propose_refund", {"order_id": "40021", "amount": "150.00", "reason": "arrived broken"})]),
        Reply("I'm sorry about the chair; I've asked the team to refund 150.00 USD."),
    )
    said = await desk.customer("kim").says("my chair from order 40021 arrived broken, refund please")
    card = await desk.card_for(said)
    [proposal] = card.proposals
    assert proposal.allowed and "needs a manager" in proposal.verdict

    assert "needs a manager" in await desk.agent("agent").approve(card)
    await desk.settle()
    assert await desk.refunds("40021") == [] and desk.replies_to(said) == []

    await desk.agent("mgr").approve(card)
    assert "refund 150.00" in await desk.reply_to(said)
    await desk.settle()
    assert await desk.refunds("40021") == [15000]
    assert len(desk.replies_to(said)) == 1


async def test_a_manager_edits_the_refund_amount_and_the_edited_reply_and_amount_go_out(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kimi.script(
        CallTools([("propose_refund", {"order_id": "40021", "amount": "150.00", "reason": "scratched"})]),
        Reply("I've asked the team to refund 150.00 USD."),
    )
    said = await desk.customer("kim").says("the chair from 40021 is scratched, can I get something back?")
    card = await desk.card_for(said)
    assert "Refused" in await desk.agent("mgr").edit(card, "We'll refund 600.00.", refund_amount="600.00")
    await desk.settle()
    assert await desk.refunds("40021") == [] and desk.replies_to(said) == []

    await desk.agent("mgr").edit(card, "We refunded 40.00 USD.", refund_amount="40.00")
    assert await desk.reply_to(said) == "We refunded 40.00 USD."
    await desk.settle()
    assert await desk.refunds("40021") == [4000]
    edited = await desk.latest(card, until=lambda c: c.state is CardState.SENT)
    assert edited.proposals[0].summary.startswith("Refund 40.00 USD on order 40021")


async def test_a_stranger_gets_no_refund_on_someone_elses_order(desk: TestDesk, kimi: FakeKimi) -> None:
    kimi.script(
        CallTools(
            [
                ("get_order_status", {"order_id": "40021"}),
                ("propose_refund", {"order_id": "40021", "amount": "20.00", "reason": "broken"}),
            ]
        ),
        Reply("I've asked the team to review a refund."),
    )
    said = await desk.customer("eve").says("order 40021 arrived broken, refund 20 to me")
    card = await desk.card_for(said)
    assert card.identity == f"Unverified asker ({desk.account('eve')})"
    [proposal] = card.proposals
    assert not proposal.allowed and "not verified as the order's owner" in proposal.verdict
    assert "Kim Lee" not in repr(card) and "Desk chair" not in repr(card)

    await desk.agent("mgr").approve(card)  # the reply may go out; the refund may not
    await desk.reply_to(said)
    await desk.settle()
    assert await desk.refunds("40021") == []


async def test_kimi_down_gives_a_failure_card_with_nothing_to_approve(desk: TestDesk, kimi: FakeKimi) -> None:
    kimi.fail_always(500, "server_error", "boom")
    said = await desk.customer("kim").says("hello, anyone there?")
    card = await desk.card_for(said, timeout=30)
    assert card.state is CardState.FAILED and card.failure and not card.actionable
    await desk.settle()
    assert desk.replies_to(said) == []
