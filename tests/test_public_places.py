"""Issue 20, fair at the edge, point 3 (identity): a verified customer's order details are never
posted in a public place unless an agent chooses to. What the policy's ``[identity]
public_places`` does where others can read the thread ("flag": the card says so before Approve;
"withhold": the model sees the status only and the draft loses any detail, whatever the model
wrote), and that a direct message changes nothing. On the test desk (SQLite and PostgreSQL), then
through the real Slack adapter (a public channel vs a DM) and the real Discord adapter (a server
channel vs a DM) over their fakes; the Kimi simulator scripted to call the tools."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.errors import SupportbotError
from bot.events import Place
from bot.policy import parse_policy
from bot.public_places import FLAG, REMOVED, check_draft
from bot.store import Conversation, sessionmaker
from bot.testing import TestDesk
from tests.desks import CallTools, DiscordDriver, FakeKimi, Reply, SlackDriver, open_desk
from tests.fakes.discord import GUILD_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import message
from tests.harness import Harness, until
from tests.test_guards import POLICY, guard_orders
from tests.test_identity_edge import tool_results_of
from tools import ToolContext

KIM = "kim"
WITHHOLD = POLICY + '\n[identity]\npublic_places = "withhold"\n'
#: Kim's order #W2611340 beyond its status: tracking, items, amounts.
KIM_DETAILS = ("1Z999AA10123456784", "Oak desk", "Blue mug", "900.00", "800.00")
LOOK_UP = CallTools([("get_order_status", {"order_id": "#W2611340"})])
TELLS_ALL = "Your Oak desk and Blue mug (900.00 USD) were delivered; UPS tracking 1Z999AA10123456784."


def public_flags(flags: tuple[str, ...]) -> list[str]:
    return [f for f in flags if f.startswith(FLAG)]


async def places(desk: TestDesk) -> list[Place | None]:
    async with sessionmaker(desk.bot.engine)() as session:
        return list(await session.scalars(select(Conversation.place).order_by(Conversation.created_at)))


@contextlib.asynccontextmanager
async def kims_shop(tmp_path: Path, kimi: FakeKimi, policy: str = WITHHOLD, **options: Any) -> AsyncIterator[TestDesk]:
    """The desk with ``policy`` (withhold by default; ``options`` for :func:`open_desk`), and Kim's orders."""
    async with open_desk(tmp_path, kimi, policy=policy, **options) as desk:
        await desk.import_orders(guard_orders(desk.account(KIM)))
        yield desk


@pytest.fixture
async def withholding(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with kims_shop(tmp_path, kimi, database_url=database_url) as desk:
        yield desk


@pytest.fixture
async def on_discord(tmp_path: Path, kimi: FakeKimi) -> AsyncIterator[tuple[TestDesk, FakeDiscord, DiscordDriver]]:
    """The withholding desk through the real Discord adapter over the fake Discord."""
    async with FakeDiscord() as discord:
        driver = DiscordDriver(discord)
        async with kims_shop(tmp_path, kimi, driver=driver) as desk:
            yield desk, discord, driver


async def test_withhold_keeps_verified_details_out_of_a_public_thread_whatever_the_model_writes(
    withholding: TestDesk, kimi: FakeKimi
) -> None:
    desk = withholding
    # The model writes the details anyway, twice (the verification pass regenerates once).
    kimi.script(LOOK_UP, Reply(TELLS_ALL), LOOK_UP, Reply(TELLS_ALL))
    said = await desk.customer(KIM).says("where is my order #W2611340?")
    card = await desk.card_for(said)

    seen = tool_results_of(kimi, 0)
    assert '"status": "delivered"' in seen and "direct message" in seen, "the status, and where to ask for more"
    for detail in KIM_DETAILS:
        assert detail not in seen, f"the model received {detail!r} in a public place"
        assert detail not in card.draft_text, f"the draft still shows {detail!r}"
    assert card.draft_text == f"Your {REMOVED} and {REMOVED} ({REMOVED} USD) were delivered; UPS tracking {REMOVED}."
    assert "this conversation is in a public place" in card.notice.lower()
    assert "4 verified order detail(s) in the draft were removed" in card.notice
    assert card.identity == "Verified customer C-1 (linked account)" and card.revision == 2

    await desk.agent("mgr").approve(card)
    reply = await desk.reply_to(said)
    assert not [d for d in KIM_DETAILS if d in reply], "the public thread never receives them"

    # The same customer in a direct message: the details are theirs to read, and nothing is cut.
    since = len(kimi.completions)
    kimi.script(LOOK_UP, Reply(TELLS_ALL))
    dm = await desk.card_for(await desk.customer(KIM).says("and my order #W2611340?", place=Place.PRIVATE))
    assert all(d in tool_results_of(kimi, since) for d in KIM_DETAILS)
    assert dm.draft_text == TELLS_ALL and public_flags(dm.flags) == [] and "public place" not in dm.notice
    assert await places(desk) == [Place.PUBLIC, Place.PRIVATE], "each conversation keeps where it is"


async def test_withhold_finds_amounts_however_the_model_writes_them(withholding: TestDesk, kimi: FakeKimi) -> None:
    desk = withholding
    written = (
        "Your Oak desk cost $800 and the order 900,00 €; a refund of 900 USD is possible. "
        "It left our store 5 days ago, 2 parcels."
    )
    kimi.script(LOOK_UP, Reply(written), LOOK_UP, Reply(written))
    card = await desk.card_for(await desk.customer(KIM).says("what did I pay for #W2611340?"))
    assert card.draft_text == (
        f"Your {REMOVED} cost {REMOVED} and the order {REMOVED} €; a refund of {REMOVED} is possible. "
        "It left our store 5 days ago, 2 parcels."
    ), "an amount without its cents is one only beside a currency"
    assert "3 verified order detail(s) in the draft were removed" in card.notice


@pytest.mark.parametrize(
    "written",
    ["1900.00", "1,900.00", "1.900,00", "1 900,00", "1\u202f900,00", "1'900.00", "$1,900", "1900 EUR", "€1.900"],
)
def test_an_amount_is_recognised_in_the_ways_people_write_it(written: str) -> None:
    ctx = ToolContext("c-1", order_details={"1900.00": "amount"})
    rules = parse_policy('[identity]\npublic_places = "withhold"\n').identity
    checked = check_draft(f"You paid {written} for it.", Place.PUBLIC, ctx, rules)
    assert checked.text == f"You paid {REMOVED} for it."


@pytest.mark.parametrize("written", ["1900 parcels", "21,900.00", "1,900.001", "1900.50", "$1,900.50"])
def test_other_numbers_are_not_the_amount(written: str) -> None:
    ctx = ToolContext("c-1", order_details={"1900.00": "amount"})
    rules = parse_policy('[identity]\npublic_places = "withhold"\n').identity
    checked = check_draft(f"You paid {written} for it.", Place.PUBLIC, ctx, rules)
    assert checked.text == f"You paid {written} for it."


async def test_flag_shows_the_agent_which_verified_details_a_public_reply_would_post(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with kims_shop(tmp_path, kimi, POLICY, database_url=database_url) as desk:  # "flag": the default
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        card = await desk.card_for(await desk.customer(KIM).says("where is my order #W2611340?"))
        assert "1Z999AA10123456784" in tool_results_of(kimi, 0), "the model sees them"
        assert card.draft_text == TELLS_ALL, "nothing is rewritten: the agent decides"
        [flag] = public_flags(card.flags)
        assert "the draft shows the customer's tracking number, item, amount where others can read it" in flag
        assert not [d for d in KIM_DETAILS if d in flag], "the flag (kept with the draft) repeats no value"

        kimi.script(LOOK_UP, Reply("Your order #W2611340 was delivered."))
        status_only = await desk.card_for(await desk.customer(KIM).says("is #W2611340 delivered?"))
        assert public_flags(status_only.flags) == [], "a public reply with the status alone is not flagged"

        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        dm = await desk.card_for(await desk.customer(KIM).says("my order #W2611340?", place=Place.PRIVATE))
        assert public_flags(dm.flags) == [], "a direct message is not a public place"


def test_the_policy_names_the_choices_in_one_line() -> None:
    assert parse_policy('[identity]\npublic_places = "withhold"\n').identity.public_places == "withhold"
    assert parse_policy('[identity]\npublic_places = "dm"\n').identity.public_places == "dm"
    with pytest.raises(SupportbotError) as refused:
        parse_policy('[identity]\npublic_places = "thread"\n')
    assert str(refused.value) == (
        "policy.toml: line 2: identity.public_places: Input should be 'flag', 'withhold' or 'dm'"
    )


# --------------------------------------------------------------------------------------------
# Through the real adapters


async def test_slack_a_public_channel_withholds_and_a_dm_does_not(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    driver = SlackDriver(slack, kimi)
    slack.add_channel("C555", "help")  # an ordinary public channel (conversations.info tells)
    async with kims_shop(tmp_path, kimi, driver=driver) as desk:
        kimi.script(LOOK_UP, Reply(TELLS_ALL), LOOK_UP, Reply(TELLS_ALL))
        said = await desk.customer(KIM).says("where is my order #W2611340?", channel="C555")
        card = await desk.card_for(said)
        assert not [d for d in KIM_DETAILS if d in tool_results_of(kimi, 0) or d in card.draft_text]
        await desk.agent("mgr").approve(card)
        harness = Harness(desk.bot, slack, kimi, tmp_path)
        [reply] = await until(lambda: harness.replies(said.thread, channel="C555"), "the reply in #help")
        assert not [d for d in KIM_DETAILS if d in str(reply.params["text"])]

        # A direct message (channel_type "im"): the verified customer reads their order there.
        since, before = len(kimi.completions), len(desk.cards)
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        dm = message("and where is #W2611340 now?", user="UKIM", channel="DKIM", channel_type="im")
        assert (await harness.sender.event(dm)).status_code == 200
        dm_card = await desk.card(before)
        assert all(d in tool_results_of(kimi, since) for d in KIM_DETAILS)
        assert dm_card.draft_text == TELLS_ALL
        assert await places(desk) == [Place.PUBLIC, Place.PRIVATE]


async def test_slack_a_private_channel_is_private_and_a_slack_connect_channel_public(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    driver = SlackDriver(slack, kimi)
    slack.add_channel("C777", "vip-help", is_private=True)  # an app_mention carries no channel_type
    async with kims_shop(tmp_path, kimi, driver=driver) as desk:
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        private = await desk.card_for(await desk.customer(KIM).says("order #W2611340?", channel="C777"))
        kimi.script(LOOK_UP, Reply(TELLS_ALL), LOOK_UP, Reply(TELLS_ALL))
        shared = await desk.card_for(await desk.customer(KIM).says("order #W2611340?"))  # C111: Slack Connect
        assert private.draft_text == TELLS_ALL
        assert REMOVED in shared.draft_text
        assert await places(desk) == [Place.PRIVATE, Place.PUBLIC]


async def test_discord_a_server_thread_withholds_and_a_dm_does_not(
    on_discord: tuple[TestDesk, FakeDiscord, DiscordDriver], kimi: FakeKimi
) -> None:
    desk, discord, driver = on_discord
    kimi.script(LOOK_UP, Reply(TELLS_ALL), LOOK_UP, Reply(TELLS_ALL))
    said = await desk.customer(KIM).says("where is my order #W2611340?")  # a public thread opens
    card = await desk.card_for(said)
    assert not [d for d in KIM_DETAILS if d in tool_results_of(kimi, 0) or d in card.draft_text]
    await desk.agent("mgr").approve(card)
    assert not [d for d in KIM_DETAILS if d in await desk.reply_to(said)]

    since, before = len(kimi.completions), len(desk.cards)
    kimi.script(LOOK_UP, Reply(TELLS_ALL))
    await discord.post_direct_message(driver.person(KIM), "and where is #W2611340 now?")
    dm_card = await desk.card(before)
    assert all(d in tool_results_of(kimi, since) for d in KIM_DETAILS)
    assert dm_card.draft_text == TELLS_ALL
    assert await places(desk) == [Place.PUBLIC, Place.PRIVATE]


async def test_discord_a_private_thread_is_private(
    on_discord: tuple[TestDesk, FakeDiscord, DiscordDriver], kimi: FakeKimi
) -> None:
    desk, discord, driver = on_discord
    thread = {  # a private thread Kim opened under the support channel and invited the bot to
        "id": discord.next_id(), "type": 12, "guild_id": GUILD_ID, "parent_id": SUPPORT_CHANNEL_ID,
        "owner_id": driver.user_id(KIM), "name": "my order", "last_message_id": None,
        "message_count": 0, "member_count": 2, "rate_limit_per_user": 0, "flags": 0,
        "thread_metadata": {"archived": False, "auto_archive_duration": 4320, "locked": False,
                            "archive_timestamp": "2026-12-07T09:00:00+00:00", "invitable": False},
    }  # fmt: skip
    discord.channels[thread["id"]] = thread
    await discord.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
    kimi.script(LOOK_UP, Reply(TELLS_ALL))
    await discord.post_user_message(thread["id"], driver.person(KIM), "where is #W2611340?", mention_bot=True)
    card = await desk.card(0)
    assert all(d in tool_results_of(kimi, 0) for d in KIM_DETAILS) and card.draft_text == TELLS_ALL
    assert await places(desk) == [Place.PRIVATE]
