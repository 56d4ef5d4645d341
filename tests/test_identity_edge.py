"""Issue 20, fair at the edge, point 3 (identity): verification attempts count across threads,
per chat account and per shop customer guessed; a Slack Connect member of another organisation is
not verified by the profile e-mail their organisation sets. Scenarios on the test desk and through
the real Slack adapter over the fake Slack; the Kimi simulator scripted to call the tools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from bot.identity import AttemptLedger
from bot.policy import parse_policy
from bot.store import Conversation, Database, sessionmaker
from bot.store.engine import upgrade_database
from bot.testing import TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import Harness, card_text, running_bot
from tests.test_guards import ANA_PRIVATE, POLICY, guard_orders, what_the_model_saw
from tools import Attempts

KIM, ANA = "kim", "ana"


@pytest.fixture
async def shop(tmp_path: Path, kimi: FakeKimi) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        await desk.import_orders(guard_orders(desk.account(KIM)))
        yield desk


def guess(email: str, order_id: str = "40021") -> tuple[str, dict[str, Any]]:
    return ("verify_customer", {"order_id": order_id, "email": email})


def tool_results_of(kimi: FakeKimi, since: int) -> str:
    """The tool results the model read in the requests from ``since`` on."""
    return "\n".join(
        str(m["content"]) for body in kimi.completions[since:] for m in body["messages"] if m.get("role") == "tool"
    )


async def verified_conversations(desk: TestDesk) -> list[str]:
    async with sessionmaker(desk.bot.engine)() as session:
        rows = await session.scalars(
            select(Conversation.verified_customer_id).where(Conversation.verified_customer_id != "")
        )
        return list(rows)


async def test_ten_guesses_across_four_threads_lock_out_before_the_victims_data(shop: TestDesk, kimi: FakeKimi) -> None:
    # Each new thread used to start at zero: the 10th guess, in the 4th thread, verified as Ana.
    mallory = shop.customer("mallory")
    cards = []
    for thread, guesses in enumerate(
        [
            [guess("a@example.com"), guess("b@example.com"), guess("c@example.com")],
            [guess("d@example.com"), guess("e@example.com"), guess("f@example.com")],
            [guess("g@example.com"), guess("h@example.com"), guess("i@example.com")],
            [guess("ana@example.com")],  # the right e-mail, found somewhere, in a fresh thread
        ]
    ):
        since = len(kimi.completions)
        kimi.script(CallTools(guesses), CallTools([("get_order_status", {"order_id": "40021"})]), Reply("Sorry."))
        card = await shop.card_for(await mallory.says(f"it's my order 40021, honest (try {thread + 1})"))
        cards.append(card)
        seen = tool_results_of(kimi, since)
        if thread == 0:
            assert '"attempts_left": 2' in seen and '"attempts_left": 0' in seen
        else:  # the locked result reaches the model in every later thread, even for the right e-mail
            assert '"code": "locked"' in seen and '"verified": true' not in seen
            assert "locked until" in seen

    for private in ANA_PRIVATE:
        assert private not in what_the_model_saw(kimi), f"the model received {private!r}"
    assert await verified_conversations(shop) == []
    last = cards[-1]
    assert last.identity.startswith("Unverified asker")
    assert "verification locked for this customer until" in last.escalation
    assert any(f.startswith("Verification locked for this customer until") for f in last.flags)


async def test_guesses_on_one_customer_count_across_different_askers(tmp_path: Path, kimi: FakeKimi) -> None:
    policy = POLICY + "\n[identity]\nmax_attempts_per_target = 3\n"
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        await desk.import_orders(guard_orders(desk.account(KIM)))
        for name in ("eve", "joe", "max"):  # one wrong guess each: no asker is near their own limit
            since = len(kimi.completions)
            kimi.script(CallTools([guess(f"{name}@example.com")]), Reply("That did not match."))
            await desk.card_for(await desk.customer(name).says("I'm the owner of 40021"))
            assert '"verified": false' in tool_results_of(kimi, since)

        since = len(kimi.completions)
        kimi.script(CallTools([guess("ana@example.com")]), CallTools([("get_order_status", {"order_id": "40021"})]))
        kimi.script(Reply("A team member will follow up."))
        card = await desk.card_for(await desk.customer("zed").says("40021 is mine, ana@example.com"))
        seen = tool_results_of(kimi, since)
        assert '"code": "locked"' in seen and "Desk chair" not in seen
        assert await verified_conversations(desk) == []
        assert "verification locked for this customer until" in card.escalation

        # Another customer's orders are not locked by the guesses on Ana's.
        since = len(kimi.completions)
        kimi.script(CallTools([guess("kim@example.com", "#W2611340")]), Reply("Thanks, verified."))
        kim_card = await desk.card_for(await desk.customer("kim2").says("#W2611340 is mine, kim@example.com"))
        assert '"verified": true' in tool_results_of(kimi, since)
        assert kim_card.identity.startswith("Verified customer C-1")


# The sample orders link slack:U222 to another customer: only the profile e-mail may count here.
CONNECT_POLICY = "[identity]\nprofile_email = true\nlinked_accounts = false\n"
CONNECT_ORDER: dict[str, Any] = {
    "order_id": "CN-7001",
    "customer_id": "C-CAROL",
    "customer_name": "Carol Customer",
    "customer_email": "carol@customer.example",  # U222's Slack profile e-mail in the fake Slack
    "status": "shipped",
    "currency": "USD",
    "total": "75.00",
    "placed_at": "2026-11-20T09:30:00Z",
    "carrier": "UPS",
    "tracking_number": "1ZCAROL0000001",
    "items": [{"sku": "LAMP-3", "name": "Brass lamp", "quantity": 1, "unit_price": "75.00"}],
}


async def ask_in_connect(harness: Harness, team: str) -> str:
    """U222 asks in the Slack Connect channel as a member of ``team``; the card's text."""
    before = len(harness.cards())
    envelope = app_mention("<@UBOT> where is my order CN-7001?", ext_shared=True)
    envelope["event"]["user_team"] = envelope["event"]["team"] = team
    assert (await harness.sender.event(envelope)).status_code == 200
    return card_text((await harness.wait_cards(before + 1))[before])


async def test_a_slack_connect_member_of_another_org_is_not_verified_by_their_profile_email(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    slack.scopes |= {"users:read", "users:read.email"}  # installed from slack-manifest-email-match.yaml
    async with running_bot(tmp_path, kimi, slack, policy=CONNECT_POLICY) as harness:
        await harness.import_orders([CONNECT_ORDER])
        kimi.script(CallTools([("get_order_status", {"order_id": "CN-7001"})]), Reply("Please verify first."))
        since = len(kimi.completions)
        outside = await ask_in_connect(harness, "T222")  # the customer's organisation sets this e-mail
        seen = tool_results_of(kimi, since)
        assert "verification" in seen and "Brass lamp" not in seen and "1ZCAROL0000001" not in seen
        assert "Unverified asker (slack:U222)" in outside

        # The same e-mail from a member of the installing workspace counts, as the policy says.
        kimi.script(CallTools([("get_order_status", {"order_id": "CN-7001"})]), Reply("It is on its way."))
        since = len(kimi.completions)
        home = await ask_in_connect(harness, "T111")
        assert "Brass lamp" in tool_results_of(kimi, since)
        assert "Verified customer C-CAROL (platform profile e-mail)" in home


async def test_the_policy_may_trust_the_other_orgs_profile_email(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = CONNECT_POLICY + "profile_email_outside_workspace = true\n"
    slack.scopes |= {"users:read", "users:read.email"}
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        await harness.import_orders([CONNECT_ORDER])
        kimi.script(CallTools([("get_order_status", {"order_id": "CN-7001"})]), Reply("It is on its way."))
        assert "Verified customer C-CAROL (platform profile e-mail)" in await ask_in_connect(harness, "T222")


async def test_a_lockout_ends_after_its_minutes_and_one_more_miss_locks_again(tmp_path: Path) -> None:
    # The window and the lockout, on the audit trail of a real SQLite database, with a moving clock.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await upgrade_database(engine)
    db = Database(engine)
    now = [datetime(2026, 12, 7, 9, 0, tzinfo=UTC)]
    rules = parse_policy("[identity]\nmax_attempts = 2\nlockout_minutes = 30\nattempt_window_hours = 24\n").identity
    ledger = AttemptLedger(db, rules, "conv-1", clock=lambda: now[0])
    try:
        assert await ledger.failed("desk:mallory", "C-2") == Attempts(1, None)
        locked = await ledger.failed("desk:mallory", "C-2")
        assert locked == Attempts(2, datetime(2026, 12, 7, 9, 30, tzinfo=UTC))
        assert (await ledger.check("desk:mallory", "C-9")).locked_until is not None, "locked for the asker"
        assert (await ledger.check("desk:eve", "C-2")).locked_until is None, "one asker is under the target limit"
        now[0] += timedelta(minutes=31)
        assert await ledger.check("desk:mallory", "C-2") == Attempts(2, None)
        assert (await ledger.failed("desk:mallory", "C-2")).locked_until == now[0] + timedelta(minutes=30)
        now[0] += timedelta(hours=25)  # every failure left the window
        assert await ledger.check("desk:mallory", "C-2") == Attempts(0, None)
    finally:
        await db.dispose()
        await engine.dispose()
