"""Issue 19, point 7: SLA nudges. A card nobody decides within ``[desk] first_response_minutes``
gets one reminder in its thread mentioning the on-call group, and at twice that it is marked
overdue (on the card and in ``/metrics``); a decided card gets nothing; the clock runs only in
``[desk.hours]``. On the in-memory test desk and through the real Slack adapter; the kill -9
case is in tests/test_crash_recovery.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.core.greeting import greeting
from bot.errors import PolicyError
from bot.policy import parse_policy
from bot.ports import ReviewCard
from bot.testing import TestDesk
from tests.desks import DiscordDriver, FakeKimi, Reply, SlackDriver, open_desk
from tests.fakes.discord import REVIEW_CHANNEL_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL, until

SLA_MINUTES = 0.02  # 1.2 s: a reminder after 1.2 s, overdue after 2.4 s
POLICY = f"""
[escalation.slack]
on_call = "SONCALL"

[escalation.discord]
on_call = "4242"

[escalation.desk]
on_call = "4242"

[desk]
first_response_minutes = {SLA_MINUTES}
"""


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, policy=POLICY, sweep_seconds=0.1) as opened:
        yield opened


async def overdue_count(desk: TestDesk) -> float:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{desk.bot.port}/metrics")
    for family in text_string_to_metric_families(response.text):
        if family.name == "supportbot_cards_overdue":
            return sum(s.value for s in family.samples if s.name == "supportbot_cards_overdue_total")
    raise AssertionError("no supportbot_cards_overdue in /metrics")


async def test_an_undecided_card_gets_one_reminder_then_is_marked_overdue(desk: TestDesk, kimi: FakeKimi) -> None:
    kimi.script(Reply("Let me check that for you."))
    card = await desk.card_for(await desk.customer("ana").says("Where is my parcel?"))
    assert card.overdue == "" and desk.thread_of(card) == []

    reminders = await until(lambda: desk.thread_of(card), "the SLA reminder", timeout=10)
    assert len(reminders) == 1
    assert reminders[0].startswith("@4242 This card has waited"), "the on-call group is mentioned"

    overdue = await desk.latest(card, lambda c: bool(c.overdue), timeout=10)
    assert overdue.overdue.startswith("Overdue: waiting ") and overdue.actionable
    # The overdue mark comes a full SLA after the reminder: passes enough to repeat it went by.
    assert desk.thread_of(card) == reminders, "exactly one reminder"
    assert await overdue_count(desk) == 1


async def test_a_decided_card_gets_no_reminder(desk: TestDesk, kimi: FakeKimi) -> None:
    kimi.script(Reply("It ships today."), Reply("It ships tomorrow."))
    first = await desk.card_for(await desk.customer("ana").says("When does my order ship?"))
    await desk.agent("kim").approve(first)
    decided = await desk.latest(first, lambda c: not c.actionable)

    second = await desk.card_for(await desk.customer("bo").says("And mine?"))
    await until(lambda: desk.thread_of(second), "the reminder of the later card", timeout=10)
    await desk.latest(second, lambda c: bool(c.overdue), timeout=10)
    assert desk.thread_of(decided) == [], "the decided card (older, so due first) got no reminder"
    assert desk.cards[0].overdue == ""


async def test_the_clock_stops_outside_business_hours(tmp_path: Path, kimi: FakeKimi) -> None:
    # Open only tomorrow (UTC) 09:00-17:00: a card created now waits outside hours.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    opens = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=UTC)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[tomorrow.weekday()]
    policy = f'{POLICY}\n[desk.hours]\ntimezone = "UTC"\ndays = ["{day}"]\nstart = "09:00"\nend = "17:00"\n'
    kimi.script(Reply("Let me check."))
    async with open_desk(tmp_path, kimi, policy=policy, sweep_seconds=0.1) as desk:
        card = await desk.card_for(await desk.customer("ana").says("Anyone there?"))
        await desk.settle()  # the card's reference is recorded just after it shows: only then can it be reminded
        core = desk.bot.core
        assert core is not None
        sla = timedelta(minutes=SLA_MINUTES)

        await core.sla.check(now=opens + sla - timedelta(seconds=0.5))
        assert desk.thread_of(card) == [], "before the SLA of business time ran out nothing is said"
        await core.sla.check(now=opens + sla)
        assert len(desk.thread_of(card)) == 1, "once hours opened and the SLA ran, one reminder"
        await core.sla.check(now=opens + sla * 2)
        assert (await desk.latest(card, lambda c: bool(c.overdue))).overdue
        assert len(desk.thread_of(card)) == 1


async def test_the_reminder_is_posted_in_the_cards_slack_thread(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(Reply("Let me check that for you."))
    async with open_desk(tmp_path, kimi, policy=POLICY, driver=SlackDriver(slack, kimi), sweep_seconds=0.1) as desk:
        card: ReviewCard = await desk.card_for(await desk.customer("ana").says("Where is my parcel?"))
        card_ts = desk.board.cards[card.draft_id].ref.split(":", 1)[1]
        posts = await slack.wait_for("chat.postMessage", where=lambda p: p.get("thread_ts") == card_ts, timeout=10)
        assert posts[0].params["channel"] == REVIEW_CHANNEL
        assert posts[0].params["text"].startswith("<!subteam^SONCALL> This card has waited")
        await desk.latest(card, lambda c: bool(c.overdue), timeout=10)
        assert len([c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == card_ts]) == 1
        updates = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == card_ts]
        assert any("Overdue: waiting" in str(c.params.get("blocks")) for c in updates)


async def test_the_reminder_on_discord_replies_to_the_card_tagging_only_the_on_call_role(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.script(Reply("Let me check that for you."))
    async with (
        FakeDiscord() as discord,
        open_desk(tmp_path, kimi, policy=POLICY, driver=DiscordDriver(discord), sweep_seconds=0.1) as desk,
    ):
        card = await desk.card_for(await desk.customer("ana").says("Where is my parcel?"))
        card_id = desk.board.cards[card.draft_id].ref.split(":", 1)[1]

        def replies_to_card() -> list[dict[str, Any]]:
            return [
                m
                for m in discord.messages_in(REVIEW_CHANNEL_ID)
                if (m.get("message_reference") or {}).get("message_id") == card_id
            ]

        [reminder] = await until(replies_to_card, "the reminder replying to the card", timeout=10)
        assert reminder["content"].startswith("<@&4242> This card has waited")
        mentions = reminder["allowed_mentions"]
        assert [str(role) for role in mentions["roles"]] == ["4242"] and not mentions.get("parse")
        await desk.latest(card, lambda c: bool(c.overdue), timeout=10)
        assert len(replies_to_card()) == 1


# -- point 6: what the customer is told at once ------------------------------------------------

ACK = "Thanks! A person will answer within {expected_minutes} minutes."


async def test_a_new_conversation_is_acknowledged_once_with_the_expected_time(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # Through Slack: the fake records every post, so a second greeting would show.
    policy = f'[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
    kimi.script(Reply("It ships today."), Reply("Tomorrow, then."))
    async with open_desk(tmp_path, kimi, policy=policy, driver=SlackDriver(slack, kimi)) as desk:
        said = await desk.customer("ana").says("When does my order ship?")
        assert await desk.reply_to(said) == "Thanks! A person will answer within 30 minutes."
        card = await desk.card_for(said)
        assert card.actionable, "the acknowledgement is no answer: the draft still waits for a human"

        follow_up = await desk.customer("ana").says("And the second one?", after=said)
        await desk.card_for(follow_up)
        await desk.settle()
        assert desk.replies_to(said) == ["Thanks! A person will answer within 30 minutes."], "once a conversation"


async def test_outside_hours_the_customer_gets_the_out_of_hours_text(tmp_path: Path, kimi: FakeKimi) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[tomorrow.weekday()]
    policy = (
        f'[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
        f'[desk.hours]\ndays = ["{day}"]\nout_of_hours = "We are closed; we answer from 09:00 UTC."\n'
    )
    kimi.script(Reply("It ships today."))
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        said = await desk.customer("ana").says("Hello?")
        assert await desk.reply_to(said) == "We are closed; we answer from 09:00 UTC."


def test_closed_without_an_out_of_hours_text_the_acknowledgement_counts_the_wait() -> None:
    policy = parse_policy(
        f'[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n'
        '[desk.hours]\ndays = ["mon", "tue", "wed", "thu", "fri"]\nstart = "09:00"\nend = "17:00"\n'
    )
    friday_evening = datetime(2026, 12, 4, 16, 50, tzinfo=UTC)  # 10 min today, 20 on Monday
    monday_night = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    assert greeting(policy.desk, friday_evening) == ACK.format(expected_minutes=10 + 2 * 24 * 60 + 16 * 60 + 20)
    assert greeting(policy.desk, monday_night) == ACK.format(expected_minutes=10 * 60 + 30)
    assert greeting(parse_policy("").desk, friday_evening) == ""
    with pytest.raises(PolicyError, match="set first_response_minutes"):
        parse_policy(f'[desk]\nacknowledgement = "{ACK}"\n')
    with pytest.raises(PolicyError, match=r"only \{expected_minutes\}"):
        parse_policy('[desk]\nfirst_response_minutes = 5\nacknowledgement = "in {minutes}"\n')
