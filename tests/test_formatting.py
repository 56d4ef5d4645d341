"""The model writes Markdown: Slack gets mrkdwn, Discord gets the Markdown as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack.mrkdwn import to_mrkdwn
from tests.fakes.discord import ALICE, BOT_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import Harness, draft_id_of, running_bot, wait_until

REPLY = (
    "Hi **Kim**, here is what I found:\n"
    "- order `#W2611340` shipped\n"
    "- track it [on UPS](https://www.ups.com/track?num=1Z999&loc=en)\n"
    "\n"
    "1. wait two days\n"
    "2. write back if it is late"
)


# The model looks the order up first: a reply naming an order and a tracking number no tool
# returned would be flagged by the verification pass and regenerated.
LOOK_UP = CallTools([("get_order_status", {"order_id": "#W2611340"})])


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__ and *italic*", "*bold* and *bold* and _italic_"),
        ("- one\n- two\n  - nested", "• one\n• two\n  • nested"),
        ("* star item", "• star item"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("see [the guide](https://acme.example/help?a=1&b=2)", "see <https://acme.example/help?a=1&amp;b=2|the guide>"),
        ("`x **not bold** y`", "`x **not bold** y`"),
        ("```\nif a < b && c:\n    **x**\n```", "```\nif a &lt; b &amp;&amp; c:\n    **x**\n```"),
        ("# Refunds", "*Refunds*"),
        ("> you wrote this", "> you wrote this"),
        ("2 * 3 * 4 = 24", "2 * 3 * 4 = 24"),
        ("order_id and snake_case stay", "order_id and snake_case stay"),
        ("plain text passes", "plain text passes"),
        ("~~gone~~ and ***both***", "~gone~ and *_both_*"),
        ("- [ ] to do\n- [x] done", "• ☐ to do\n• ☑ done"),
        ("| item | price |\n|---|---:|\n| mug | **12.50** |", "*item* | *price*\nmug | *12.50*"),
        ("see [the guide](<https://acme.example/help>)", "see <https://acme.example/help|the guide>"),
        ("![the mug](https://acme.example/mug.png)", "<https://acme.example/mug.png>"),
        ("[wiki](https://en.example/wiki/Mug_(cup))", "<https://en.example/wiki/Mug_(cup)|wiki>"),
        ("an unclosed [link](https://acme.example and *more", "an unclosed [link](https://acme.example and *more"),
        ("---", "──────────"),
    ],
)
def test_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("<!channel> look", "&lt;!channel&gt; look"),
        ("hi <@U123> and <#C1>", "hi &lt;@U123&gt; and &lt;#C1&gt;"),
        ("<https://evil.example|your bank>", "&lt;https://evil.example|your bank&gt;"),
        ("[click](javascript:alert(1))", "click (javascript:alert(1))"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ],
)
def test_a_model_s_text_can_never_ping_or_disguise_a_link(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


async def test_an_approved_reply_reaches_slack_as_mrkdwn(harness: Harness) -> None:
    harness.kimi.script(LOOK_UP, Reply(REPLY))
    envelope = await harness.mention("where is my order?")
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    thread = envelope["event"]["ts"]
    [reply] = await harness.wait_replies(thread)
    assert reply.params["text"] == (
        "Hi *Kim*, here is what I found:\n"
        "• order `#W2611340` shipped\n"
        "• track it <https://www.ups.com/track?num=1Z999&amp;loc=en|on UPS>\n"
        "\n"
        "1. wait two days\n"
        "2. write back if it is late"
    )


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def test_an_approved_reply_reaches_discord_as_the_markdown_it_is(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord
) -> None:
    kimi.script(LOOK_UP, Reply(REPLY))
    overrides = {"discord_bot_token": discord.token, "discord_api_url": discord.api_url}
    async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
        asked = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "where is my order?", mention_bot=True)
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card))
        replies = await wait_until(lambda: [m for m in discord.messages_in(asked["id"]) if m["author"]["id"] == BOT_ID])
    assert replies[0]["content"] == REPLY
