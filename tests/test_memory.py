"""Issue 4: conversation memory. After N turns the prompt holds the rolling summary and the
last K turns verbatim; structured facts (order ids, refunds, the customer) survive."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from bot.core.memory import MAX_SUMMARY_CHARS
from bot.prompt import FACTS_HEAD, untrusted
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import Harness, draft_id_of, running_bot

POLICY = "[memory]\nsummarize_after_turns = 4\nkeep_recent_turns = 2\n"


def is_summary_request(body: dict[str, Any]) -> bool:
    return str(body["messages"][0]["content"]).startswith("Summarize the earlier part")


async def opening_turn(harness: Harness, text: str) -> str:
    """The customer mentions the bot, the card appears, the agent approves; the thread's ts."""
    envelope = await harness.mention(text)
    thread_ts = str(envelope["event"]["ts"])
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(thread_ts, 1)
    return thread_ts


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
        thread_ts = await opening_turn(harness, "where is my order #W2611340?")
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
        notes = [str(m["content"]) for m in messages[2:] if m["role"] == "system"]
        assert notes and notes[0].startswith(FACTS_HEAD), "the facts as they stood follow the summary"
        assert '- order_ids: ["#W2611340"]' in notes[0], "the order id survives as a structured fact"
        verbatim = [m for m in messages if m["role"] in ("user", "assistant")]
        assert [m["role"] for m in verbatim] == ["assistant", "user"], "only the last K=2 turns stay verbatim"
        assert verbatim[-1]["content"] == untrusted("one more thing: can I return the mugs later?")
        assert "where is my order" not in json.dumps(verbatim)


async def test_the_prompt_prefix_stays_byte_identical_between_refreshes(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = "[memory]\nsummarize_after_turns = 20\nkeep_recent_turns = 4\n"
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        thread_ts = await opening_turn(harness, "hello, a question about order 40021")
        await turn(harness, thread_ts, "and the invoice?", 2)
        first, second = [b for b in kimi.completions if b["messages"][-1]["role"] == "user"][-2:]
        earlier = first["messages"]
        assert len(earlier) >= 2
        assert second["messages"][: len(earlier)] == earlier, "earlier turns are replayed unchanged"
        assert second["tools"] == first["tools"]


def first_drafting_requests(kimi: FakeKimi) -> list[list[dict[str, Any]]]:
    """The messages of each turn's first drafting request (it ends on the newest customer message)."""
    return [
        b["messages"] for b in kimi.completions if not is_summary_request(b) and b["messages"][-1]["role"] == "user"
    ]


async def test_a_new_order_id_adds_a_fact_note_after_its_message_and_resends_nothing(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """The customer asks about one order, then names another: each draft that learns an order id
    leaves a note of the facts right after the message it answered. The next prompt replays the
    previous one byte for byte and adds the note, and the closing tail carries no facts."""
    async with running_bot(tmp_path, kimi, slack) as harness:
        await harness.import_orders()
        thread_ts = await opening_turn(harness, "hello, where is order 40021?")
        await turn(harness, thread_ts, "and my other order, #W2611340?", 2)
        await turn(harness, thread_ts, "thanks, that is all", 3)

    first, second, third = first_drafting_requests(kimi)[-3:]
    assert not any(FACTS_HEAD in str(m["content"]) for m in first), "nothing is known before the first draft"
    assert third[: len(second)] == second, "the earlier prompt is replayed unchanged"
    assert second[: len(first)] == first
    notes = [
        (k, str(m["content"])) for k, m in enumerate(third) if m["role"] == "system" and FACTS_HEAD in m["content"]
    ]
    assert len(notes) == 2, "one note per change of the facts"
    users = [k for k, m in enumerate(third) if m["role"] == "user"]
    assert [k for k, _ in notes] == [users[0] + 1, users[1] + 1], "each note follows the message it answers"
    assert '"40021"' in notes[0][1] and "#W2611340" not in notes[0][1]
    assert '"40021"' in notes[1][1] and "#W2611340" in notes[1][1]
    days = [k for k, m in enumerate(third) if m["role"] == "system" and str(m["content"]).startswith("Today is ")]
    assert days == [users[0] - 1], "the day is noted once, before its first message"
    assert third[-1]["role"] == "user", "nothing changed since: no closing note after the newest message"


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
        thread_ts = await opening_turn(harness, "where is my order #W2611340? " + "It is a birthday present. " * 8)

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


def test_a_thread_that_runs_over_two_days_notes_each_day_once_and_a_late_draft_says_today() -> None:
    """Turns carry the day they were written: the prompt says "Today is ..." before the first
    message of each day and nowhere else, so the history stays append-only; a draft written on a
    later day than the newest message (a regenerate the next morning) says today at the end."""
    from datetime import date

    from bot.policy import Policy
    from bot.prompt import Turn, build_messages

    monday, tuesday, wednesday = date(2026, 12, 7), date(2026, 12, 8), date(2026, 12, 9)
    turns = [
        Turn("customer", "where is my mug?", id=1, sent=monday),
        Turn("assistant", "on its way", id=2),
        Turn("customer", "and the lid?", id=3, sent=monday),
        Turn("assistant", "also", id=4),
        Turn("customer", "still nothing today", id=5, sent=tuesday),
    ]
    on_tuesday = build_messages(Policy(), summary="", facts={}, turns=turns, today=tuesday)
    days = [m["content"] for m in on_tuesday if m["role"] == "system" and m["content"].startswith("Today is")]
    assert days == ["Today is 2026-12-07.", "Today is 2026-12-08."]
    assert on_tuesday[-1] == {"role": "user", "content": untrusted("still nothing today")}

    regenerated = build_messages(Policy(), summary="", facts={}, turns=turns, today=wednesday, instruction="shorter")
    assert regenerated[: len(on_tuesday)] == on_tuesday, "a late draft only adds a closing note"
    assert regenerated[-1]["content"] == "Today is 2026-12-09.\n\nThe reviewing agent asks for this draft: shorter"


def test_a_conversation_from_before_fact_notes_keeps_its_facts_in_the_closing_note() -> None:
    """A thread stored before notes existed has facts but no note: they still reach the model,
    after the newest message, until its next draft leaves a note."""
    from datetime import date

    from bot.policy import Policy
    from bot.prompt import Turn, build_messages

    today = date(2026, 12, 7)
    facts = {"order_ids": ["#W2611340"]}
    turns = [Turn("customer", "any news?", id=7, sent=today)]
    legacy = build_messages(Policy(), summary="old summary", facts=facts, turns=turns, today=today)
    assert legacy[-1]["role"] == "system" and '- order_ids: ["#W2611340"]' in legacy[-1]["content"]

    noted = build_messages(
        Policy(), summary="old summary", facts=facts, fact_notes=[(3, facts)], turns=turns, today=today
    )
    assert noted[-1]["role"] == "user", "once a note shows the facts, nothing follows the newest message"
    assert '- order_ids: ["#W2611340"]' in noted[2]["content"], "the note of the folded turns follows the summary"
