"""Issue 3 end to end: Discord customers, the real core, reviews in Slack or in a Discord staff
channel. Fake Discord (REST + gateway), fake Slack and fake Kimi on loopback; real SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Supportbot
from bot.settings import Settings
from tests.fakes.discord import AGENT_ROLE_ID, ALICE, BOB, BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.files import png
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import card_text, draft_id_of, running_bot, sample_orders, settings_for, wait_until
from tools import import_orders


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


def discord_only(tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord) -> Settings:
    """A community without Slack: cards go to the Discord staff channel."""
    return settings_for(
        tmp_path,
        kimi,
        None,
        discord_bot_token=discord.token,
        discord_api_url=discord.api_url,
        discord_cdn_urls=discord.cdn_url,
        discord_review_channel=REVIEW_CHANNEL_ID,
    )


def bot_messages(discord: FakeDiscord, channel: str) -> list[dict[str, Any]]:
    return [m for m in discord.messages_in(channel) if m["author"]["id"] == BOT_ID]


async def test_a_member_asks_on_discord_and_an_agent_approves_in_slack(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    overrides = {
        "discord_bot_token": discord.token,
        "discord_api_url": discord.api_url,
        "discord_cdn_urls": discord.cdn_url,
    }
    async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
        asked = await discord.post_user_message(
            SUPPORT_CHANNEL_ID, ALICE, "where is my order #W2611340?", mention_bot=True
        )
        [card] = await harness.wait_cards(1)
        text = card_text(card)
        assert "Discord" in text and "where is my order #W2611340?" in text and "1Z999AA10123456784" in text
        thread = asked["id"]  # the bot opened a thread on the member's message
        assert bot_messages(discord, thread) == [], "nothing before approval"

        await harness.click("approve_draft", draft_id_of(card))
        replies = await wait_until(lambda: bot_messages(discord, thread))
        await harness.settle()
        assert len(bot_messages(discord, thread)) == 1
        assert "1Z999AA10123456784" in replies[0]["content"]
        assert replies[0]["allowed_mentions"]["parse"] == []


async def test_a_model_cannot_ping_everyone_on_discord(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    overrides = {
        "discord_bot_token": discord.token,
        "discord_api_url": discord.api_url,
        "discord_cdn_urls": discord.cdn_url,
    }
    async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
        kimi.script(Reply("@everyone the store is closed today, <@&1210000000000000002> too"))
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "is the shop open?", mention_bot=True)
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        [reply] = await wait_until(lambda: bot_messages(discord, asked["id"]))
        assert reply["allowed_mentions"] == {"parse": []} or reply["allowed_mentions"]["parse"] == []


async def test_discord_review_desk_buttons_survive_a_restart_and_the_first_click_wins(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    settings = discord_only(tmp_path, kimi, discord)
    first = Supportbot(settings)
    await first.start()
    try:
        orders = tmp_path / "orders.jsonl"
        orders.write_text("\n".join(json.dumps(r) for r in sample_orders()) + "\n")
        await import_orders(first.engine, orders)
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "status of order 40021?", mention_bot=True)
        [card] = await wait_until(lambda: [m for m in bot_messages(discord, REVIEW_CHANNEL_ID) if m.get("components")])
    finally:
        await first.stop()

    second = Supportbot(settings)  # a restart: same database, new process state
    await second.start()
    try:
        buttons = [c["custom_id"] for row in card["components"] for c in row["components"]]
        approve = next(b for b in buttons if ":approve:" in b)
        clicks = await asyncio.gather(discord.click(card["id"], approve, BOB), discord.click(card["id"], approve, BOB))
        for click in clicks:
            response = await discord.wait_for_response(click)
            assert response is not None
        replies = await wait_until(lambda: bot_messages(discord, asked["id"]))
        # The second click was decided (it was told so) and the core has nothing left to do.
        said = await wait_until(
            lambda: [f["content"] for click in clicks for f in click.followups if "already" in f["content"]]
        )
        assert second.core is not None
        await second.core.background.settle(5)
        assert len(bot_messages(discord, asked["id"])) == 1
        assert "40021" in replies[0]["content"]
        assert said
    finally:
        await second.stop()


def test_the_invite_url_names_the_application_from_the_token() -> None:
    import base64

    from adapters.discord.cli import application_id_from_token

    token = base64.b64encode(b"1100000000000000001").decode().rstrip("=") + ".GabcDE.signature"
    assert application_id_from_token(token) == "1100000000000000001"


async def test_an_image_a_member_attaches_reaches_the_model_and_other_files_are_listed(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    overrides = {
        "discord_bot_token": discord.token,
        "discord_api_url": discord.api_url,
        "discord_cdn_urls": discord.cdn_url,
    }
    image_bytes = png()
    async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
        image = discord.serve_file("broken-mug.png", image_bytes, "image/png")
        invoice = discord.serve_file("invoice.pdf", b"%PDF-1.7", "application/pdf")
        await discord.post_user_message(
            SUPPORT_CHANNEL_ID,
            ALICE,
            "my mug from #W2611340 arrived like this",
            mention_bot=True,
            attachments=[image, invoice],
        )
        [card] = await harness.wait_cards(1)
        assert "broken-mug.png" in card_text(card) and "invoice.pdf" in card_text(card)
        user_turn = next(m for m in kimi.completions[0]["messages"] if m["role"] == "user")
        parts = user_turn["content"]
        assert parts[0]["type"] == "text"
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
        assert len(parts) == 2, "only the image goes to the model; the PDF is listed on the card"


async def test_an_escalated_card_tags_only_the_on_call_role_in_the_staff_channel(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    (tmp_path / "policy.toml").write_text(f'[escalation]\non_call_discord = "{AGENT_ROLE_ID}"\n')
    settings = discord_only(tmp_path, kimi, discord)
    bot = Supportbot(settings)
    await bot.start()
    try:
        await discord.post_user_message(
            SUPPORT_CHANNEL_ID, ALICE, "this is useless, I want to talk to a human @everyone", mention_bot=True
        )
        [card] = await wait_until(lambda: [m for m in bot_messages(discord, REVIEW_CHANNEL_ID) if m.get("embeds")])
        assert card["content"].startswith(f"<@&{AGENT_ROLE_ID}>")
        assert [str(r) for r in card["allowed_mentions"]["roles"]] == [AGENT_ROLE_ID]
        assert "everyone" not in card["allowed_mentions"].get("parse", [])
    finally:
        await bot.stop()
