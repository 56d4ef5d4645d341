"""Issue 4: conversation memory. After N turns the prompt holds the rolling summary and the
last K turns verbatim; structured facts (order ids, refunds, the customer) survive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.prompt import untrusted
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import Harness, draft_id_of, running_bot

POLICY = "[memory]\nsummarize_after_turns = 4\nkeep_recent_turns = 2\n"


def is_summary_request(body: dict[str, Any]) -> bool:
    return str(body["messages"][0]["content"]).startswith("Summarize the earlier part")


async def turn(harness: Harness, thread_ts: str, text: str, n: int) -> None:
    """The customer writes, a card appears, the agent approves, the reply is posted."""
    if n == 1:
        raise AssertionError("the first turn is a mention")
    await harness.reply_in_thread(text, thread_ts)
    cards = await harness.wait_cards(n)
    await harness.click("approve_draft", draft_id_of(cards[-1]))
    await harness.wait_replies(thread_ts, n)


async def test_older_turns_fold_into_a_summary_and_facts_survive(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        envelope = await harness.mention("where is my order #W2611340?")
        thread_ts = envelope["event"]["ts"]
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        await harness.wait_replies(thread_ts, 1)
        await turn(harness, thread_ts, "thanks! is it insured?", 2)
        assert not any(is_summary_request(b) for b in kimi.completions), "no summary before the threshold"

        await harness.reply_in_thread("one more thing: can I return the mugs later?", thread_ts)
        await harness.wait_cards(3)

        summaries = [b for b in kimi.completions if is_summary_request(b)]
        assert len(summaries) == 1
        assert "where is my order #W2611340?" in summaries[0]["messages"][1]["content"]

        drafting = [b for b in kimi.completions if not is_summary_request(b)][-1]
        messages = drafting["messages"]
        assert messages[1]["content"].startswith("Summary of the earlier conversation:")
        assert '- order_ids: ["#W2611340"]' in messages[-1]["content"], "the order id survives as a structured fact"
        verbatim = [m for m in messages if m["role"] in ("user", "assistant")]
        assert [m["role"] for m in verbatim] == ["assistant", "user"], "only the last K=2 turns stay verbatim"
        assert verbatim[-1]["content"] == untrusted("one more thing: can I return the mugs later?")
        assert "where is my order" not in json.dumps(verbatim)


async def test_the_prompt_prefix_stays_byte_identical_between_refreshes(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = "[memory]\nsummarize_after_turns = 20\nkeep_recent_turns = 4\n"
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        envelope = await harness.mention("hello, a question about order 40021")
        thread_ts = envelope["event"]["ts"]
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        await harness.wait_replies(thread_ts, 1)
        await turn(harness, thread_ts, "and the invoice?", 2)
        first, second = [b for b in kimi.completions if b["messages"][-2]["role"] == "user"][-2:]
        earlier = first["messages"][:-1]  # everything but the volatile tail
        assert len(earlier) >= 2
        assert second["messages"][: len(earlier)] == earlier, "earlier turns are replayed unchanged"
        assert second["tools"] == first["tools"]


def test_a_summary_refresh_that_appends_a_segment_keeps_the_earlier_prompt_cached() -> None:
    from datetime import date

    from bot.policy import Policy
    from bot.prompt import Turn, build_messages
    from tests.fakes.kimi import _common_prefix, _prompt_bytes

    policy, today = Policy(), date(2026, 12, 2)
    first = build_messages(
        policy, summary=["Ana's mug #W1 is late."], facts={}, turns=[Turn("customer", "any news?")], today=today
    )
    appended = build_messages(
        policy,
        summary=["Ana's mug #W1 is late.", "She asked for office delivery; address given."],
        facts={},
        turns=[Turn("customer", "and now?")],
        today=today,
    )
    rewritten = build_messages(
        policy,
        summary="Ana's mug #W1 is late. She asked for office delivery; address given.",
        facts={},
        turns=[Turn("customer", "and now?")],
        today=today,
    )
    old = _prompt_bytes(first, None)
    through_segment = len(_prompt_bytes(first[:2], None)) - 1  # up to the end of the first segment
    assert _common_prefix(old, _prompt_bytes(appended, None)) >= through_segment
    assert _common_prefix(old, _prompt_bytes(rewritten, None)) < through_segment
    assert [m["content"].split("\n")[0] for m in appended[1:3]] == [
        "Summary of the earlier conversation:",
        "Summary, continued:",
    ]
