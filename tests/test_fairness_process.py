"""A flood from outside: 150 Slack messages from one sender into the installed ``supportbot run``;
another customer's card still arrives within seconds, and the flood starts only its sender's
burst of drafts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import until
from tests.processes import BotProcess, seed_orders

BURST = 5
PER_MINUTE = 6


async def test_a_slack_flood_from_one_sender_does_not_hold_up_another_customers_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "policy.toml").write_text(
        "[models]\nmax_output_tokens = 256\n"
        f"[fairness]\nsender_messages_per_minute = {PER_MINUTE}\nsender_burst = {BURST}\n"
    )
    bot = BotProcess(tmp_path, kimi.base_url, slack)
    await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
    kimi.latency = 0.1
    await bot.start()
    try:
        flood_began = time.monotonic()
        for n in range(150):
            flood = app_mention(f"<@UBOT> flood message {n}: where is #W2611340?", user="U666")
            assert (await bot.sender.event(flood)).status_code == 200  # every message is taken
        asked = time.monotonic()
        other = app_mention("<@UBOT> do you ship to Norway?", user="U900")
        assert (await bot.sender.event(other)).status_code == 200

        def card_for_other() -> bool:
            return any("Norway" in json.dumps(c.params["blocks"]) for c in bot.cards())

        await until(card_for_other, "the other customer's card", timeout=10)
        assert time.monotonic() - asked < 5, "another customer waited behind the flood"
        await until(
            lambda: any("messages from" in str(c.params.get("text", "")) for c in slack.calls_to("chat.postMessage")),
            "the flood notice",
        )
        # Past the burst, the sender's drafts start one per bucket refill (every 10 s) from the flood's start.
        refills = int((time.monotonic() - flood_began) * PER_MINUTE / 60)
        flood_prompts = {
            n
            for body in kimi.completions
            for n in range(150)
            if f"flood message {n}:" in json.dumps(body["messages"])
        }
        assert len(flood_prompts) <= BURST + refills + 1, "the flood started its sender's burst of drafts, not one each"
    finally:
        await bot.stop()
