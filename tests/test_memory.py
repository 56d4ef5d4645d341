"""Issue 4: conversation memory. After N turns the prompt holds the rolling summary and the
last K turns verbatim; structured facts (order ids, refunds, the customer) survive."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from bot.core.memory import MAX_SUMMARY_CHARS
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


def summary_messages_of(body: dict[str, Any]) -> list[str]:
    return [
        str(m["content"])
        for m in body["messages"]
        if m["role"] == "system" and str(m["content"]).startswith(("Summary of the earlier", "Summary, continued"))
    ]


async def test_a_summary_refresh_appends_a_segment_and_the_earlier_ones_stay_byte_identical(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """A long thread: each refresh adds a segment after the earlier ones (which Kimi has cached),
    until the summary would outgrow its cap; then it is rewritten into one, once."""
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        envelope = await harness.mention("where is my order #W2611340? " + "It is a birthday present. " * 8)
        thread_ts = envelope["event"]["ts"]
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        await harness.wait_replies(thread_ts, 1)

        seen: list[tuple[str, list[str]]] = []  # (how the summary was refreshed, the next prompt's summary)
        for n in range(2, 12):
            before = len(kimi.completions)
            await turn(harness, thread_ts, f"question {n}: " + "could you check the delivery once more? " * 6, n)
            new = kimi.completions[before:]
            refresh = [b for b in new if is_summary_request(b)]
            if refresh:
                how = "append" if "continuing the summary so far" in refresh[0]["messages"][0]["content"] else "rewrite"
                drafting = next(b for b in new if not is_summary_request(b))
                seen.append((how, summary_messages_of(drafting)))
            if [how for how, _ in seen].count("rewrite") >= 2:
                break

    hows = [how for how, _ in seen]
    assert hows[0] == "rewrite" and "append" in hows and hows.count("rewrite") >= 2, hows
    for (_, before), (how, after) in itertools.pairwise(seen):
        if how == "append":
            assert after[: len(before)] == before, "the earlier segments are replayed byte for byte"
            assert len(after) == len(before) + 1 and after[-1].startswith("Summary, continued:")
        else:
            assert len(after) == 1 and after[0].startswith("Summary of the earlier conversation:")
        assert sum(len(m) for m in after) < MAX_SUMMARY_CHARS + 100 * len(after), "the summary keeps to its cap"
