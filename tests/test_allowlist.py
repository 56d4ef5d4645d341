"""Issue 20, point 6: the bot serves only the Slack workspaces and Discord servers the operator
lists. A message from elsewhere gets no card and no model call, and is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.app import Supportbot
from tests.desks import DiscordDriver
from tests.fakes.discord import ALICE, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import card_text, running_bot, settings_for, wait_until


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def ignored_count(url: str) -> float:
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(f"{url}/metrics")).text
    [line] = [line for line in scraped.splitlines() if line.startswith("supportbot_messages_ignored_workspace_total")]
    return float(line.split()[-1])


async def test_a_slack_workspace_not_on_the_allowlist_gets_no_card_and_no_model_call(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(Reply("Happy to help."), Reply("Happy to help, again."))  # one model call per draft
    async with running_bot(tmp_path, kimi, slack, slack_workspace_allowlist="T111, T222") as harness:
        await harness.mention("where is my order #W2611340? (from a stranger's workspace)", team="T999")
        await harness.mention("where is order 40021? (from our own workspace)", team="T111")
        [card] = await harness.wait_cards(1)  # the allowed message's card: the first one had its turn
        await harness.settle()
        assert "our own workspace" in card_text(card)
        assert "stranger" not in card_text(card)
        assert len(harness.cards()) == 1
        assert len(kimi.completions) == 1
        assert "stranger" not in str(kimi.completions[0])
        assert await ignored_count(harness.url) == 1


async def test_a_discord_server_not_on_the_allowlist_is_ignored_while_direct_messages_are_served(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    unlisted = {"discord_guild_allowlist": "1999999999999999999"}  # not the fake's server
    settings = settings_for(tmp_path, kimi, None, **DiscordDriver(discord).settings(), **unlisted)
    kimi.script(Reply("Happy to help."), Reply("Happy to help, again."))  # one model call per draft
    bot = Supportbot(settings)
    await bot.start()
    try:
        await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "in the unlisted server", mention_bot=True)
        await discord.post_direct_message(ALICE, "in a direct message")
        cards = await wait_until(lambda: [m for m in discord.messages_in(REVIEW_CHANNEL_ID) if m.get("embeds")])
        assert bot.core is not None
        await bot.core.background.settle(10)
        assert len(cards) == 1 and "in a direct message" in str(cards[0])
        assert len(kimi.completions) == 1
        assert "unlisted server" not in str(kimi.completions[0])
        assert await ignored_count(f"http://127.0.0.1:{bot.port}") == 1
        assert discord.calls_to("POST", r".*/threads") == []  # the unlisted server saw nothing happen
    finally:
        await bot.stop()
