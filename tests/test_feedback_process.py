"""Feedback from outside: the installed ``supportbot run`` with ``[feedback] after_reply``. The
customer clicks 👍 as soon as the reply shows and is thanked; an agent's click is refused; after a
kill -9 and a restart the customer's change of mind replaces the vote, one per customer. (The
click that lands before the bot has recorded its post as sent is forced on the test desk, in
``tests/test_feedback.py``: the fake Slack answers a post at once.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from adapters.slack import cards
from bot.core.feedback import AGENTS_DO_NOT_RATE, THANKS
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, block_actions
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, draft_id_of, until
from tests.processes import BotProcess, seed_orders


async def test_a_quick_click_on_a_reply_counts_and_a_changed_vote_survives_a_kill(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "policy.toml").write_text('[approvers]\nagents = ["U333"]\n\n[feedback]\nafter_reply = true\n')
    bot = BotProcess(tmp_path, kimi.base_url, slack)
    await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
    await bot.start()
    try:
        asked = app_mention("<@UBOT> where is my order #W2611340?", user="U222")
        assert (await bot.sender.event(asked)).status_code == 200
        thread_ts = asked["event"]["ts"]
        [card] = await until(bot.cards, "the card")
        draft_id = draft_id_of(card)
        approve = block_actions("approve_draft", draft_id, user="U333", channel=REVIEW_CHANNEL)
        assert (await bot.sender.action(approve)).status_code == 200

        async def click(user: str, value: str) -> str:
            before = len(ephemerals(slack, user))
            payload = block_actions(
                cards.FEEDBACK, value, user=user, channel=CUSTOMER_CHANNEL, thread_ts=thread_ts, block_id="fb"
            )
            payload["actions"][0]["type"] = "feedback_buttons"
            assert (await bot.sender.action(payload)).status_code == 200
            [told] = await until(lambda: ephemerals(slack, user)[before:], f"{user} answered")
            return told

        await until(
            lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == thread_ts],
            "the reply",
            timeout=10,
        )
        assert await click("U222", f"up:{draft_id}") == THANKS  # at once, as a quick customer would
        assert await click("U333", f"down:{draft_id}") == AGENTS_DO_NOT_RATE

        await bot.kill9()
        await bot.start()
        assert await click("U222", f"down:{draft_id}") == THANKS
    finally:
        await bot.stop()

    with sqlite3.connect(tmp_path / "supportbot.db") as db:
        votes = db.execute("SELECT author_id, score FROM feedback WHERE draft_id = ?", (draft_id,)).fetchall()
    assert votes == [("U222", -1)], "one vote, the customer's, changed after the restart"


def ephemerals(slack: FakeSlack, user: str) -> list[str]:
    return [str(c.params.get("text")) for c in slack.calls_to("chat.postEphemeral") if c.params.get("user") == user]
