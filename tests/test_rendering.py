"""Issue 17, point 3: what customers, the model and tools wrote shows on every desk as written.

A Discord nickname or server name cannot ping or plant a link on the Slack card (nor in its
notification text); the Discord desk shows a draft's masked links and spoilers as written; a link
whose label is not where it goes is flagged on the card; and converting a reply to Slack mrkdwn
cannot block the event loop.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.verification import LINK_FLAG_PREFIX, link_flags
from tests.fakes.discord import BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord, FakeUser
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import Harness, running_bot, wait_until
from tests.playground_support import playground_bot
from tests.test_playground import client_for, state_when

EVIL_SERVER = "<https://evil.example|Approve here>"
PINGS = "hi <@U0MANAGER> and <!here>, see <#C0AGENTS> <!subteam^S0ONCALL>"
MISLEADING = "Track it on [https://shop.example/orders](https://evil.example/login) or <https://evil.example|our site>."


def _texts(value: Any) -> Iterator[str]:
    """Every string under a ``text`` key of a Block Kit structure (sections, contexts, headers)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        fake.guild["name"] = EVIL_SERVER  # the server's owner chose it
        yield fake


@pytest.mark.parametrize("nickname", ["<!channel>", "<@U0MANAGER>"])
async def test_a_discord_nickname_and_server_name_reach_the_slack_card_as_text(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, discord: FakeDiscord, nickname: str
) -> None:
    mallory = FakeUser("1400000000000000009", "mallory", nickname)
    kimi.script(Reply("Thanks, we are looking into it."))
    overrides = {"discord_bot_token": discord.token, "discord_api_url": discord.api_url}
    async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
        await discord.post_user_message(SUPPORT_CHANNEL_ID, mallory, PINGS, mention_bot=True)
        [card] = await harness.wait_cards(1)
    texts = [card.params["text"], *_texts(card.params["blocks"])]
    live = [text for text in texts if "<" in text]
    assert live == [], "no live mention, broadcast or link in any text field nor the notification text"
    escaped = nickname.replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in card.params["text"], "the notification names the customer as written"
    asked = texts[1]
    assert escaped in asked and "&lt;https://evil.example|Approve here&gt;" in asked
    assert "&lt;@U0MANAGER&gt; and &lt;!here&gt;" in asked and "&lt;!subteam^S0ONCALL&gt;" in asked


async def test_a_slack_customer_is_still_named_by_mention_and_misleading_links_are_flagged(
    harness: Harness,
) -> None:
    harness.kimi.script(Reply(MISLEADING))
    await harness.mention("where do I track my order?")
    [card] = await harness.wait_cards(1)
    blocks = card.params["blocks"]
    assert blocks[0]["text"]["text"].startswith("*<@U222>* asked in Slack · <#C111>"), "the intake's own mention"
    flags = next(b["text"]["text"] for b in blocks if "Check before approving" in b.get("text", {}).get("text", ""))
    assert "a different site (evil.example)" in flags and "worst case" in flags
    assert "the text 'our site' hides where the link goes" in flags
    draft = next(b["text"]["text"] for b in blocks if "*Draft reply*" in b.get("text", {}).get("text", ""))
    assert "```Track it on [https://shop.example/orders](https://evil.example/login) or " in draft
    assert "&lt;https://evil.example|our site&gt;.```" in draft, "the draft as written, not as a link"


async def test_the_discord_desk_shows_the_draft_as_written_and_flags_its_links(
    tmp_path: Path, kimi: FakeKimi, discord: FakeDiscord
) -> None:
    draft = "Hi **there**!\n# Good news\nYour refund is [here](https://evil.example) ||and nothing else||."
    customer = FakeUser("1400000000000000010", "kim", "**Admin** @everyone")
    kimi.script(Reply(draft))
    overrides = {
        "discord_bot_token": discord.token,
        "discord_api_url": discord.api_url,
        "discord_review_channel": REVIEW_CHANNEL_ID,
    }
    async with running_bot(tmp_path, kimi, None, **overrides):
        await discord.post_user_message(
            SUPPORT_CHANNEL_ID, customer, "[my order](https://x.example) ||help||", mention_bot=True
        )
        [card] = await wait_until(
            lambda: [m for m in discord.messages_in(REVIEW_CHANNEL_ID) if m["author"]["id"] == BOT_ID]
        )
    [embed] = card["embeds"]
    assert f"```\n{draft}\n```" in embed["description"], "masked link, spoiler and heading visible as written"
    assert "> \\[my order\\](https://x.example) \\|\\|help\\|\\|" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Asked by"] == "\\*\\*Admin\\*\\* @\u200beveryone"
    assert "the text 'here' hides where the link goes" in fields["🛑 Check before approving"]
    assert card["allowed_mentions"]["parse"] == []


@pytest.mark.parametrize(
    ("draft", "flagged"),
    [
        ("[https://shop.example/orders](https://evil.example)", "a different site (evil.example): the worst case"),
        ("<https://evil.example|Approve here>", "the text 'Approve here' hides where the link goes"),
        ("[shop.example/help](https://shop.example/returns)", "(the same site (shop.example), another page)"),
        ("[https://shop.example/help](https://www.shop.example/help/)", None),
        ("see https://shop.example/help or <https://shop.example>", None),
    ],
)
def test_a_link_whose_label_is_not_its_address_is_flagged(draft: str, flagged: str | None) -> None:
    flags = link_flags(draft)
    if flagged is None:
        assert flags == []
    else:
        [flag] = flags
        assert flag.startswith(LINK_FLAG_PREFIX) and flagged in flag


ADVERSARIAL = "[a](" * 4000 + "![a](" * 2000 + "\n" + " ~**a" * 1000 + "\n" + "a\n" * 4500
CONVERT = (
    "import sys; from adapters.slack.mrkdwn import to_mrkdwn; "
    "text = sys.stdin.read(); out = to_mrkdwn(text); print(len(text), out[:8])"
)


def test_a_40000_character_adversarial_reply_converts_without_blocking() -> None:
    """markdown-to-mrkdwn's link regex backtracked cubically on ``[a](`` repeated (2.5 s for 3,000
    characters; hours for this one): the conversion runs in a child process that is killed after
    a few seconds, so a converter that backtracks fails here instead of hanging the suite."""
    text = ADVERSARIAL[:40_000]
    assert len(text) == 40_000
    done = subprocess.run(
        [sys.executable, "-c", CONVERT], input=text, capture_output=True, text=True, timeout=5, check=True
    )
    assert done.stdout.split() == ["40000", "[a]([a]("]


async def test_the_playground_card_flags_a_misleading_link(tmp_path: Path, kimi: FakeKimi) -> None:
    kimi.script(Reply(MISLEADING))
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        await client.post("/playground/api/message", data={"text": "where do I track my order?"})
        state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
    assert "Check before approving" in state["desk"]
    assert "a different site (evil.example): the worst case" in state["desk"]
