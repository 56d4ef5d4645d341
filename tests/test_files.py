"""Customer files (issue 17, "Close the leaks", point 1): the platform's token goes only to the
platform's own file host, nothing is downloaded before the ack, and a download is capped in
bytes and in time, its failure shown on the review card while the draft goes on.

The real bot on loopback: Slack's file host is a :class:`FakeFileHost` that checks the bot token
(``SLACK_FILES_URL`` points at it, as it would at https://files.slack.com), a second one plays a
foreign host and records every request; Discord's CDN is the Discord fake's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli_ops import EXIT_CONFIG
from bot.core.files import MAX_FILE_BYTES
from tests.fakes.discord import ALICE, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.files import FakeFileHost, png
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import KIMI_KEY, SLACK_TOKEN, Harness, card_text, running_bot, until, wait_until
from tests.processes import BotProcess, seed_orders, supportbot

PNG = png()


@pytest.fixture
async def files_host() -> AsyncIterator[FakeFileHost]:
    async with FakeFileHost(token=SLACK_TOKEN) as host:
        yield host


@pytest.fixture
async def foreign() -> AsyncIterator[FakeFileHost]:
    async with FakeFileHost() as host:
        yield host


def image_parts(kimi: FakeKimi) -> list[Any]:
    user_turn = next(m for m in kimi.completions[0]["messages"] if m["role"] == "user")
    content = user_turn["content"]
    return [] if isinstance(content, str) else [p for p in content if p["type"] == "image_url"]


async def ask_with_files(harness: Harness, files: list[dict[str, Any]]) -> float:
    """Mention the bot with ``files``; return how long Slack waited for the ack."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await harness.sender.event(app_mention("<@UBOT> my mug from #W2611340 arrived like this", files=files))
    assert response.status_code == 200, response.text
    return loop.time() - started


async def test_the_slack_token_goes_only_to_slacks_file_host_and_other_files_are_listed(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost, foreign: FakeFileHost
) -> None:
    on_slack = files_host.slack_file("broken-mug.png", PNG, "image/png")
    elsewhere = foreign.slack_file("receipt.png", PNG, "image/png")
    external = foreign.slack_file("specs.png", PNG, "image/png") | {"is_external": True, "mode": "external"}
    # A link whose host only looks like Slack's: the port differs.
    lookalike = files_host.slack_file("label.png", PNG, "image/png")
    lookalike["url_private_download"] = lookalike["url_private"] = lookalike["url_private"].replace(
        files_host.origin, f"http://localhost:{files_host.port}"
    )
    async with running_bot(tmp_path, kimi, slack, slack_files_url=files_host.origin) as harness:
        await ask_with_files(harness, [on_slack, elsewhere, external, lookalike])
        [card] = await harness.wait_cards(1)
    text = card_text(card)
    assert "broken-mug.png" in text and "broken-mug.png: not" not in text
    assert "receipt.png: not downloaded (not on Slack's file host)" in text
    assert "specs.png: not downloaded (an external file)" in text
    assert "label.png: not downloaded (not on Slack's file host)" in text
    assert foreign.requests == [], "the foreign host was never asked, so it never saw the token"
    [request] = files_host.requests
    assert request.path.endswith("/download/broken-mug.png"), "url_private_download is what is fetched"
    assert request.authorization == f"Bearer {SLACK_TOKEN}"
    [image] = image_parts(kimi)
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


async def test_the_installed_bot_sends_no_token_abroad_and_stays_small_on_a_300_mib_body(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost, foreign: FakeFileHost
) -> None:
    """The findings as they were found: ``supportbot run`` against loopback hosts."""
    elsewhere = foreign.slack_file("receipt.png", PNG, "image/png")
    huge = files_host.slack_file("huge.png", b"", "image/png", claimed_size=1024, body_bytes=300 * 1024 * 1024)
    bot = BotProcess(tmp_path, kimi.base_url, slack, SLACK_FILES_URL=files_host.origin)
    await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
    await bot.start()
    try:
        async with bot.peak_rss() as rss:
            envelope = app_mention("<@UBOT> my mug from #W2611340 arrived like this", files=[elsewhere, huge])
            assert (await bot.sender.event(envelope)).status_code == 200
            [card] = await wait_until(bot.cards, timeout=20)
    finally:
        await bot.stop()
    text = card_text(card)
    assert "receipt.png: not downloaded (not on Slack's file host)" in text
    assert "huge.png: not downloaded (over 5 MB)" in text
    assert foreign.requests == []
    assert [r.authorization for r in files_host.requests] == [f"Bearer {SLACK_TOKEN}"]
    assert rss.growth < 64 * 1024 * 1024, f"RSS grew by {rss.growth >> 20} MiB"


async def test_a_body_larger_than_claimed_stops_at_the_cap_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost
) -> None:
    claims_1_kib = files_host.slack_file("huge.png", b"", "image/png", claimed_size=1024, body_bytes=300 * 1024 * 1024)
    async with running_bot(tmp_path, kimi, slack, slack_files_url=files_host.origin) as harness:
        await ask_with_files(harness, [claims_1_kib])
        [card] = await harness.wait_cards(1)
        await until(lambda: files_host.requests and files_host.requests[0].done, "the host to see the reader go")
    assert "huge.png: not downloaded (over 5 MB)" in card_text(card)
    assert "approve_draft" in json.dumps(card.params["blocks"]), "the draft went on with the text"
    [request] = files_host.requests
    # What the host wrote before the bot hung up: the cap plus what the sockets buffer, not 300 MiB.
    assert request.sent < MAX_FILE_BYTES + 16 * 1024 * 1024
    assert image_parts(kimi) == []


async def test_a_slow_file_host_does_not_hold_the_ack_and_the_download_gives_up_at_the_deadline(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost
) -> None:
    trickling = files_host.slack_file("slow.png", b"", "image/png", claimed_size=2048, trickle=True)
    async with running_bot(
        tmp_path, kimi, slack, slack_files_url=files_host.origin, file_download_seconds=1.5
    ) as harness:
        ack = await ask_with_files(harness, [trickling])
        assert ack < 1.0, f"the ack waited {ack:.1f} s"
        assert files_host.requests == [] or not files_host.requests[0].done, "the ack did not wait for the file"
        loop = asyncio.get_running_loop()
        asked = loop.time()
        [card] = await harness.wait_cards(1, timeout=15)
        waited = loop.time() - asked
        await until(lambda: files_host.requests[0].done, "the bot to hang up on the slow host", timeout=5)
    assert "slow.png: not downloaded (not complete within 1.5 s)" in card_text(card)
    assert 1.0 < waited < 8.0
    assert "approve_draft" in json.dumps(card.params["blocks"])


async def test_a_redirect_from_the_file_host_is_not_followed(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost, foreign: FakeFileHost
) -> None:
    target = foreign.serve("/stolen.png", PNG)
    redirected = files_host.slack_file("moved.png", PNG, "image/png", redirect_to=target)
    async with running_bot(tmp_path, kimi, slack, slack_files_url=files_host.origin) as harness:
        await ask_with_files(harness, [redirected])
        [card] = await harness.wait_cards(1)
    assert "moved.png: not downloaded (Slack's file host redirected it elsewhere (not followed))" in card_text(card)
    assert len(files_host.requests) == 1
    assert foreign.requests == []


async def test_discord_files_come_only_from_its_cdn_and_a_failed_one_shows_on_the_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, foreign: FakeFileHost
) -> None:
    async with FakeDiscord() as discord, running_bot(tmp_path, kimi, slack, **discord.bot_settings) as harness:
        on_cdn = discord.serve_file("broken-mug.png", PNG, "image/png")
        elsewhere = discord.serve_file("receipt.png", PNG, "image/png")
        elsewhere["url"] = foreign.serve("/receipt.png", PNG)
        expired = discord.serve_file("label.png", PNG, "image/png")
        discord.files.clear()  # Discord's link expired: the CDN answers 404
        discord.files[on_cdn["url"].split("?")[0].removeprefix(discord.cdn_url)] = (PNG, "image/png")
        await discord.post_user_message(
            SUPPORT_CHANNEL_ID,
            ALICE,
            "my mug from #W2611340 arrived like this",
            mention_bot=True,
            attachments=[on_cdn, elsewhere, expired],
        )
        [card] = await harness.wait_cards(1)
    text = card_text(card)
    assert "broken-mug.png" in text and "broken-mug.png: not" not in text
    assert "receipt.png: not downloaded (not on Discord's CDN)" in text
    assert "label.png: not downloaded (Discord's CDN answered HTTP 404)" in text
    assert foreign.requests == []
    assert len(image_parts(kimi)) == 1


def test_a_file_host_setting_that_is_no_http_url_stops_the_start_with_one_line(tmp_path: Path) -> None:
    result = supportbot(
        tmp_path,
        "run",
        MOONSHOT_API_KEY=KIMI_KEY,
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_SIGNING_SECRET="secret",
        SLACK_REVIEW_CHANNEL="C999",
        SLACK_FILES_URL="files.slack.com",
        KIMI_CHECK_MODELS="false",
    )
    assert result.returncode == EXIT_CONFIG
    assert "SLACK_FILES_URL: 'files.slack.com' is not an http(s) URL (write it as https://host)" in result.stderr
    assert "Traceback" not in result.stderr and SLACK_TOKEN not in result.stderr
