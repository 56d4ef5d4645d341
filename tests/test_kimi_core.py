"""How the core meets Kimi's account-level failures: a used-up quota fails drafts visibly and
alerts the agents once, not once per draft."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.kimi import Fail, FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL, card_text, running_bot, wait_until


async def test_a_used_up_quota_fails_each_draft_visibly_and_alerts_the_agents_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(Fail.quota_exceeded(), Fail.quota_exceeded())
    async with running_bot(tmp_path, kimi, slack) as harness:
        await harness.mention("where is #W2611340")
        await harness.wait_cards(1)
        await harness.mention("and where is 40021?")
        cards = await harness.wait_cards(2)
        await harness.settle()
    for card in cards:
        assert "quota for this account is used up" in card_text(card)
    notices = await wait_until(
        lambda: [
            c
            for c in slack.calls_to("chat.postMessage")
            if c.params.get("channel") == REVIEW_CHANNEL and not c.params.get("blocks")
        ]
    )
    assert len(notices) == 1 and "quota" in str(notices[0].params["text"])
