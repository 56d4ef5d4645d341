"""Streaming into the card: with STREAM_DRAFTS_TO_CARD the agents watch the draft form on its
review card as Kimi streams it (updated about once a second, never faster than the setting),
and the buttons appear only when it is complete. One card, no second post."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL, card_text, running_bot, wait_until
from tests.test_edits import edit_mention

ANSWER = " ".join(f"word{n}" for n in range(60)) + ". Thanks for waiting!"


async def test_a_streamed_draft_forms_on_its_card_and_gets_its_buttons_when_complete(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.chunk_delay = 0.03  # about two seconds of streaming
    kimi.script(Reply(ANSWER))
    async with running_bot(tmp_path, kimi, slack, stream_drafts_to_card=True, stream_update_seconds=0.3) as harness:
        await harness.mention("hello, any news?")
        [opened] = await wait_until(
            lambda: [
                c
                for c in slack.calls_to("chat.postMessage")
                if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("blocks")
            ]
        )
        assert "approve_draft" not in card_text(opened), "no buttons while the draft is forming"
        assert "writing this draft" in card_text(opened)
        final = await wait_until(
            lambda: [c for c in slack.calls_to("chat.update") if "approve_draft" in card_text(c)], timeout=15
        )
        assert ANSWER in card_text(final[-1])
        updates = slack.calls_to("chat.update")
        forming = [c for c in updates[: updates.index(final[0])] if "approve_draft" not in card_text(c)]
        assert forming, "the draft was seen forming before it was complete"
        partial = json.dumps(forming[0].params.get("blocks"))
        assert "word0" in partial and "Thanks for waiting!" not in partial
        assert len(forming) <= 2.5 / 0.3 + 2, "updates are throttled"
        assert len(harness.cards()) == 1, "one card, updated in place"


async def test_a_card_forming_when_the_customer_edits_the_question_ends_saying_so(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.chunk_delay = 0.03
    kimi.script(Reply(ANSWER))
    async with running_bot(tmp_path, kimi, slack, stream_drafts_to_card=True, stream_update_seconds=0.3) as harness:
        asked = await harness.mention("is the shop open on Sunday?")
        [opened] = await wait_until(
            lambda: [
                c
                for c in slack.calls_to("chat.postMessage")
                if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("blocks")
            ]
        )
        assert "writing this draft" in card_text(opened)
        await edit_mention(
            harness, asked["event"]["ts"], "is the shop open on Saturday?", "is the shop open on Sunday?"
        )

        # The half-written card does not stay half-written: it says why it stopped, and has no buttons.
        ref = (opened.response["channel"], opened.response["ts"])
        [ended] = await wait_until(
            lambda: [
                c
                for c in slack.calls_to("chat.update")
                if (c.params.get("channel"), c.params.get("ts")) == ref
                and "customer edited their message" in card_text(c)
            ],
            timeout=15,
        )
        assert "approve_draft" not in card_text(ended)
        cards = await harness.wait_cards(2)
        assert "Saturday" in card_text(cards[1])
        await harness.settle()
        assert len(harness.cards()) == 2, "the edited question has its own card; the first was not posted again"
