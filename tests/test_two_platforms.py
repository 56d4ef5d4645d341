"""Slack and Discord at once, driven from outside: the installed ``supportbot run`` with both
platforms configured takes a customer's message sent while it is still starting, a burst from both
platforms, a kill -9 mid-work, an agent's clicks during the restart, and a SIGTERM mid-work; every
message gets one card and every approved draft one reply, on the platform it came from."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from tests.fakes.discord import ALICE, BOT_ID, SUPPORT_CHANNEL_ID, FakeDiscord, RecordedCall
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack, SlackCall
from tests.fakes.slack_payloads import app_mention, block_actions
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, draft_id_of, until
from tests.processes import BotProcess, seed_orders

PER_PLATFORM = 8


async def until_taken(send: Callable[[int], Awaitable[httpx.Response]], what: str) -> list[str]:
    """Send until the bot answers 200, as Slack retries an event and an agent clicks again;
    returns what each attempt got."""
    seen: list[str] = []

    async def taken() -> bool:
        try:
            status = (await send(len(seen))).status_code
        except httpx.TransportError:
            status = 0
        seen.append(str(status or "refused"))
        assert status in (0, 200, 503), f"{what}: {status}"
        return status == 200

    await until(taken, what, timeout=30)
    return seen


async def test_both_platforms_survive_a_burst_a_kill_clicks_during_start_up_and_a_sigterm(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with FakeDiscord() as discord:
        bot = BotProcess.on_both_platforms(tmp_path, kimi.base_url, slack, discord)
        await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
        kimi.latency = 0.5

        def slack_replies() -> list[SlackCall]:
            return [
                c
                for c in slack.calls_to("chat.postMessage")
                if c.params.get("channel") == CUSTOMER_CHANNEL and c.params.get("thread_ts")
            ]

        def discord_replies() -> list[RecordedCall]:
            return [
                c
                for c in discord.calls_to("POST", r"/channels/\d+/messages$")
                if c.path.split("/")[-2] != SUPPORT_CHANNEL_ID
            ]

        async def approve(draft_id: str) -> list[str]:
            click = block_actions("approve_draft", draft_id, user="U333", channel=REVIEW_CHANNEL)
            return await until_taken(lambda _: bot.sender.action(click), "an approval")

        await bot.start(wait_ready=False)
        try:
            # A customer writes while the bot is still starting: Slack retries until it is taken.
            early = app_mention("<@UBOT> where is my order #W2611340?", user="U900")
            seen = await until_taken(lambda n: bot.sender.event(early, retry_num=n or None), "the early event")
            assert seen[-1] == "200"
            await bot.wait_ready()

            # A burst from both platforms at once.
            async def from_slack(i: int) -> None:
                event = app_mention(f"<@UBOT> question {i}: where is my order #W2611340?", user=f"U1{i:02d}")
                assert (await bot.sender.event(event)).status_code == 200

            async def from_discord(i: int) -> None:
                text = f"<@{BOT_ID}> discord question {i}: what about order 40021?"
                await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, text, mention_bot=True)

            await asyncio.gather(
                *(from_slack(i) for i in range(PER_PLATFORM)), *(from_discord(i) for i in range(PER_PLATFORM))
            )
            await until(lambda: len(bot.cards()) >= 3, "the first cards")
            await bot.kill9()

            # The agent approves the first cards while the bot starts up again.
            await bot.start(wait_ready=False)
            first = [draft_id_of(c) for c in bot.cards()[:3]]
            for draft_id in first:
                assert (await approve(draft_id))[-1] == "200"
            await bot.wait_ready()

            # An operator stops it (SIGTERM) while drafts are being written, then starts it again.
            kimi.latency = 1.5
            await until(lambda: len(bot.cards()) >= 6, "more cards")
            assert bot.process is not None
            bot.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot.process.wait(), 20) == 0
            kimi.latency = 0.2
            await bot.start()

            everything = 2 * PER_PLATFORM + 1
            await until(lambda: len(bot.cards()) >= everything, "a card for every message", timeout=60)
            approved = set(first)
            for card in bot.cards():
                if (draft_id := draft_id_of(card)) not in approved:
                    approved.add(draft_id)
                    await approve(draft_id)

            def cards_saying_sent() -> set[str]:
                updates = [
                    str(u.params) for u in slack.calls_to("chat.update") if "sent to the customer" in str(u.params)
                ]
                return {d for d in approved if any(d[:8] in u for u in updates)}

            await until(lambda: cards_saying_sent() == approved, "every card saying its reply was sent", timeout=60)
        finally:
            await bot.stop()

        drafts = [draft_id_of(c) for c in bot.cards()]
        assert len(drafts) == len(set(drafts)) == everything, "one card per message, none twice"
        per_slack_thread = Counter(str(c.params["thread_ts"]) for c in slack_replies())
        per_discord_thread = Counter(c.path for c in discord_replies())
        assert len(per_slack_thread) == PER_PLATFORM + 1 and set(per_slack_thread.values()) == {1}
        assert len(per_discord_thread) == PER_PLATFORM and set(per_discord_thread.values()) == {1}
        for run in range(1, bot.runs + 1):
            log = (tmp_path / f"run{run}.stderr").read_text()
            assert " ERROR " not in log, log
