"""Ready means ready: while Slack and Discord are both configured and Discord is still
connecting, events and clicks get a 503 (Slack retries them; the agent sees the click fail and
clicks again; a person opening the playground reads that it is starting), never an "ok"
followed by a silent loss; /readyz tells the truth; a dead gateway makes /readyz fail until the
watchdog has reconnected it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.app import Supportbot
from bot.ports import STARTING_UP
from tests.fakes.discord import FakeDiscord
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import SlackSender, app_mention, block_actions
from tests.harness import REVIEW_CHANNEL, SIGNING_SECRET, settings_for, wait_until


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def readyz(port: int) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code


async def test_events_and_clicks_wait_with_a_503_until_every_platform_is_connected(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAYGROUND_TOKEN", "pg-token-4242")  # the playground next to both platforms
    discord.ready_gate = asyncio.Event()
    settings = settings_for(
        tmp_path, kimi, slack, discord_bot_token=discord.token, discord_api_url=discord.api_url, port=0
    )
    bot = Supportbot(settings)
    starting = asyncio.create_task(bot.start())
    try:
        await wait_until(lambda: [1] if bot.port else [], timeout=10)  # the HTTP server is up
        sender = SlackSender(f"http://127.0.0.1:{bot.port}/slack/events", SIGNING_SECRET, mirror_to=slack)
        await wait_until(lambda: discord.identifies, timeout=10)  # Discord is connecting, not ready
        early_event = await sender.event(app_mention("<@UBOT> where is my order #W2611340?"))
        early_click = await sender.action(block_actions("approve_draft", "d" * 32, user="U333", channel=REVIEW_CHANNEL))
        assert early_event.status_code == 503 and early_click.status_code == 503
        async with httpx.AsyncClient() as browser:  # an agent opens the playground meanwhile
            early_page = await browser.get(f"http://127.0.0.1:{bot.port}/?token=pg-token-4242")
        for early in (early_event, early_click, early_page):  # one plain sentence a person can read
            assert (early.status_code, early.text, early.headers["Retry-After"]) == (503, STARTING_UP, "1")
        assert await readyz(bot.port) == 503
        assert not kimi.requests or all("chat" not in r.path for r in kimi.requests)

        discord.ready_gate.set()
        await starting
        assert await readyz(bot.port) == 200
        # Slack retries the event it got a 503 for: now it is taken, once.
        retried = await sender.event(app_mention("<@UBOT> where is my order #W2611340?"))
        assert retried.status_code == 200
    finally:
        if not starting.done():
            discord.ready_gate.set()
            await starting
        await bot.stop()


async def test_a_dead_gateway_fails_readyz_until_the_watchdog_reconnects_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    settings = settings_for(tmp_path, kimi, slack, discord_bot_token=discord.token, discord_api_url=discord.api_url)
    bot = Supportbot(settings)
    await bot.start()
    try:
        assert await readyz(bot.port) == 200
        await discord.drop_gateway(code=4010, reason="Invalid shard.")  # discord.py gives up on 4010
        statuses: list[int] = []

        async def seen_down() -> list[int]:
            statuses.append(await readyz(bot.port))
            return [1] if 503 in statuses else []

        for _ in range(200):
            if await seen_down():
                break
            await asyncio.sleep(0.05)
        assert 503 in statuses, "a dead gateway is not ready"
        for _ in range(400):  # the watchdog reconnects after a few seconds
            if await readyz(bot.port) == 200:
                break
            await asyncio.sleep(0.05)
        assert await readyz(bot.port) == 200
        assert len(discord.identifies) >= 2, "a fresh gateway session"
    finally:
        await bot.stop()
