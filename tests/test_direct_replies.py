"""Issue 20, point 3, the policy's third choice: ``[identity] public_places = "dm"``. In a public
place the model may use a verified customer's order details; the card says the reply goes by
direct message, and on Approve it does, with the policy's fixed line in the public thread, each
exactly once. A customer who accepts no direct message gets nothing anywhere (never the public
thread as a fallback), and the card says so. On the test desk (SQLite and PostgreSQL), then
through the real Slack and Discord adapters over their fakes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.domain.states import DraftStatus
from bot.errors import SupportbotError
from bot.events import Place
from bot.policy import parse_policy
from bot.public_places import BY_DM
from bot.testing import TestDesk
from bot.testing.people import Said
from tests.desks import DiscordDriver, FakeKimi, Reply, SlackDriver
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.harness import draft_id_of, until
from tests.test_crash_recovery import RECOVERY_SECONDS, approve, ask, launch, replies_in, restart
from tests.test_guards import POLICY
from tests.test_identity_edge import tool_results_of
from tests.test_public_places import KIM, KIM_DETAILS, LOOK_UP, TELLS_ALL, kims_shop

LINE = "I've sent you the details in a direct message."
BY_DIRECT_MESSAGE = POLICY + '\n[identity]\npublic_places = "dm"\n'


@pytest.fixture
async def dm_desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    """Kim's shop under ``public_places = "dm"`` on the test desk (SQLite and PostgreSQL)."""
    async with dm_shop(tmp_path, kimi, database_url=database_url) as desk:
        yield desk


async def kim_asks_in_public(desk: TestDesk, kimi: FakeKimi, text: str = "where is my order #W2611340?") -> Said:
    """Kim asks in a public place; the model looks the order up and tells all."""
    kimi.script(LOOK_UP, Reply(TELLS_ALL))
    return await desk.customer(KIM).says(text)


@contextlib.asynccontextmanager
async def dm_shop(tmp_path: Path, kimi: FakeKimi, **options: Any) -> AsyncIterator[TestDesk]:
    async with kims_shop(tmp_path, kimi, BY_DIRECT_MESSAGE, **options) as desk:
        yield desk


async def test_a_public_reply_with_verified_details_goes_by_direct_message_and_the_thread_gets_one_line(
    dm_desk: TestDesk, kimi: FakeKimi
) -> None:
    desk = dm_desk
    said = await kim_asks_in_public(desk, kimi)
    card = await desk.card_for(said)
    assert all(d in tool_results_of(kimi, 0) for d in KIM_DETAILS), "the model may use the details"
    assert card.draft_text == TELLS_ALL, "nothing is cut: the reply is not going to the thread"
    assert card.notice.startswith(BY_DM) and LINE in card.notice, "the card tells where the reply goes"

    told = await desk.agent("mgr").approve(card)
    assert "by direct message" in told
    assert await desk.reply_to(said) == LINE, "the public thread gets the policy's line"
    await desk.settle()
    assert desk.direct_messages(KIM) == [TELLS_ALL], "the reply, once, in Kim's direct messages"
    assert desk.replies_to(said) == [LINE], "once, and nothing else in public"

    # In a direct message already, the reply simply goes there (no line anywhere).
    kimi.script(LOOK_UP, Reply(TELLS_ALL))
    dm = await desk.customer(KIM).says("and my order #W2611340?", place=Place.PRIVATE)
    private = await desk.card_for(dm)
    assert BY_DM not in private.notice
    await desk.agent("mgr").approve(private)
    assert await desk.reply_to(dm) == TELLS_ALL


async def test_a_card_that_said_direct_message_goes_by_direct_message_after_the_policy_changed(
    dm_desk: TestDesk, kimi: FakeKimi
) -> None:
    desk = dm_desk
    said = await kim_asks_in_public(desk, kimi)
    card = await desk.card_for(said)
    assert card.notice.startswith(BY_DM)
    desk.bot.settings.policy_file.write_text(POLICY)  # back to "flag" before anyone clicks
    core = desk.bot.core
    assert core is not None and await core.reload_policy() is None
    await desk.agent("mgr").approve(card)
    assert await desk.reply_to(said) == LINE, "the card said so: the details never go public"
    assert desk.direct_messages(KIM) == [TELLS_ALL]


async def test_a_customer_who_accepts_no_direct_message_gets_nothing_in_public_and_the_card_says_so(
    dm_desk: TestDesk, kimi: FakeKimi
) -> None:
    desk = dm_desk
    desk.board.closed_dms.add(desk.customer(KIM).user_id)
    said = await kim_asks_in_public(desk, kimi)
    card = await desk.card_for(said)
    await desk.agent("mgr").approve(card)
    failed = await desk.latest(card, lambda c: c.state is DraftStatus.SEND_FAILED)
    assert "the customer accepts no direct message" in failed.notice
    assert "not posted in the public thread either" in failed.notice
    await desk.settle()
    assert desk.replies_to(said) == [] and desk.direct_messages(KIM) == [], "never a public fallback"


async def test_slack_the_reply_goes_to_the_customers_dm_and_the_thread_gets_the_line(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with dm_shop(tmp_path, kimi, driver=SlackDriver(slack, kimi)) as desk:
        said = await kim_asks_in_public(desk, kimi)  # C111: Slack Connect, public
        card = await desk.card_for(said)
        assert card.notice.startswith(BY_DM)
        await desk.agent("mgr").approve(card)
        assert await desk.reply_to(said) == LINE
        assert await until(lambda: desk.direct_messages(KIM), "the reply in Kim's DM") == [TELLS_ALL]
        assert [c.params["users"] for c in slack.calls_to("conversations.open")] == ["UKIM"]
        await desk.settle()
        assert desk.replies_to(said) == [LINE] and desk.direct_messages(KIM) == [TELLS_ALL], "each once"


async def test_slack_a_dm_slack_refuses_posts_nothing(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    slack.dm_refusals["UKIM"] = "user_disabled"
    async with dm_shop(tmp_path, kimi, driver=SlackDriver(slack, kimi)) as desk:
        said = await kim_asks_in_public(desk, kimi)
        card = await desk.card_for(said)
        await desk.agent("mgr").approve(card)
        failed = await desk.latest(card, lambda c: c.state is DraftStatus.SEND_FAILED)
        assert "the customer accepts no direct message (Slack: user_disabled)" in failed.notice
        await desk.settle()
        assert desk.replies_to(said) == [] and desk.direct_messages(KIM) == []


async def test_discord_the_reply_goes_to_the_members_dm_and_a_closed_dm_leaks_nothing(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with FakeDiscord() as discord, dm_shop(tmp_path, kimi, driver=DiscordDriver(discord)) as desk:
        said = await kim_asks_in_public(desk, kimi)  # a public thread opens
        card = await desk.card_for(said)
        assert card.notice.startswith(BY_DM)
        await desk.agent("mgr").approve(card)
        assert await desk.reply_to(said) == LINE
        assert await until(lambda: desk.direct_messages(KIM), "the reply in Kim's DM") == [TELLS_ALL]
        opened = discord.calls_to("POST", "/users/@me/channels")
        assert [str(c.json["recipient_id"]) for c in opened] == [desk.customer(KIM).user_id]

        # Kim closes their DMs to the bot: Discord refuses the post (50007); nothing goes public.
        discord.closed_dms.add(desk.customer(KIM).user_id)
        again = await kim_asks_in_public(desk, kimi, "and #W2611340 again?")
        second = await desk.card_for(again)
        await desk.agent("mgr").approve(second)
        failed = await desk.latest(second, lambda c: c.state is DraftStatus.SEND_FAILED)
        assert "the customer accepts no direct message (Discord: 403 Cannot send messages" in failed.notice
        await desk.settle()
        assert desk.replies_to(again) == [] and desk.direct_messages(KIM) == [TELLS_ALL]


def test_the_line_in_the_thread_is_the_policys_and_never_empty() -> None:
    assert parse_policy("").identity.dm_notice == LINE
    mine = parse_policy('[identity]\npublic_places = "dm"\ndm_notice = "Check your DMs, please."\n').identity
    assert mine.dm_notice == "Check your DMs, please."
    with pytest.raises(SupportbotError) as refused:
        parse_policy('[identity]\ndm_notice = ""\n')
    assert str(refused.value).startswith("policy.toml: line 2: identity.dm_notice: String should have at least 1")


async def test_killed_between_the_direct_message_and_the_line_each_arrives_exactly_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """The real ``supportbot run``, killed -9 after the direct message reached Slack but before
    Slack answered (so neither it nor the thread's line is recorded): the next run finds the
    message by its key in the DM, then posts the line; each exactly once."""
    bot = await launch(tmp_path, kimi, slack, '[identity]\npublic_places = "dm"\n')
    dm = "D222"  # the fake's DM channel with U222, the customer of ``ask``

    def in_dm() -> list[object]:
        return [m for m in slack.messages_in(dm) if m.get("bot_id")]

    try:
        thread_ts = await ask(bot, "where is my order #W2611340?")
        [card] = await until(bot.cards, "the card")
        slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == dm)
        await approve(bot, draft_id_of(card))
        await until(in_dm, "the direct message reaching Slack (its answer hangs)")
        assert replies_in(slack, thread_ts) == [], "no line before the direct message is recorded"
        await restart(bot)

        [line] = await until(lambda: replies_in(slack, thread_ts), "the line in the thread", timeout=RECOVERY_SECONDS)
        assert line.params["text"] == LINE
        await until(
            lambda: [c for c in slack.calls_to("chat.update") if "sent to the customer" in str(c.params)],
            "the card saying it was sent",
            timeout=RECOVERY_SECONDS,
        )
        assert len(in_dm()) == 1, "found by its key in the DM, not posted again"
        assert len(replies_in(slack, thread_ts)) == 1
    finally:
        await bot.stop()
