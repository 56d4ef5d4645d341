"""Payload replay: the installed ``supportbot run`` is sent the real payloads the platform SDKs
test themselves with (``tests/payloads/``, sources in its README): every Slack request type,
signed over HTTP and as Socket Mode envelopes, and Discord gateway dispatches. Whatever the bot
has no listener for is answered and ignored: no 404 or 500 (Slack would retry, the user would
see an error), every envelope acked, the Discord connection kept, no traceback, nothing said to
a customer, and a genuine message sent afterwards still gets its card."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.discord import ALICE, BOT_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import action_body, app_mention, event_body, sign
from tests.fakes.socket_mode import SocketModeSlack, events_api_envelope, interactive_envelope
from tests.harness import REVIEW_CHANNEL, SIGNING_SECRET, SLACK_TOKEN, card_text, until
from tests.processes import BotProcess, running, with_discord

PAYLOADS = Path(__file__).parent / "payloads"
APP_TOKEN = "xapp-1-A111-replay-app-token-0123456789"

JSON = dict[str, Any]


def payloads(platform: str) -> list[tuple[str, JSON]]:
    return [(path.stem, json.loads(path.read_text())) for path in sorted((PAYLOADS / platform).glob("*.json"))]


SLACK = payloads("slack")
DISCORD = payloads("discord")


def is_slash_command(payload: JSON) -> bool:
    return "command" in payload and "type" not in payload


def http_request(payload: JSON) -> tuple[str, str]:
    """The body and content type Slack sends this payload with."""
    if payload.get("type") in ("event_callback", "url_verification", "app_rate_limited"):
        return event_body(payload), "application/json"
    if is_slash_command(payload):
        return urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
    return action_body(payload), "application/x-www-form-urlencoded"


def socket_envelope(payload: JSON) -> JSON:
    """The Socket Mode envelope Slack wraps this payload in."""
    if payload.get("type") == "event_callback":
        return events_api_envelope(payload)
    if is_slash_command(payload):
        return {**interactive_envelope(payload), "type": "slash_commands", "accepts_response_payload": True}
    return interactive_envelope(payload)


def customer_texts(replayed: list[tuple[str, JSON]]) -> set[str]:
    """What customers wrote to the bot in the replayed Slack payloads (a mention, or a DM): the
    only texts a card may quote."""
    texts = set()
    for _, payload in replayed:
        event = payload.get("event")
        if not isinstance(event, dict) or event.get("subtype") or event.get("bot_id"):
            continue
        if event.get("type") == "app_mention" or event.get("channel_type") == "im":
            text = str(event.get("text", ""))
            texts.add(text.split(">", 1)[-1].strip())  # after a mention of the bot, which the card drops
            texts.add(text.replace("<", "&lt;").replace(">", "&gt;"))  # a mention of another user, escaped
    return texts - {""}


def assert_clean(bot: BotProcess) -> None:
    """No traceback and no ERROR in any run's log."""
    for run in range(1, bot.runs + 1):
        log = (bot.home / f"run{run}.stderr").read_text()
        assert "Traceback" not in log, log
        assert " ERROR " not in log, log


def assert_nothing_said_to_customers(slack: FakeSlack, replayed: list[tuple[str, JSON]], genuine: str) -> None:
    """Cards only in the review channel, each quoting a customer's message; nothing posted
    anywhere else (no reply without an agent's approval, no answer to a foreign command)."""
    posts = slack.calls_to("chat.postMessage")
    assert all(p.params.get("channel") == REVIEW_CHANNEL for p in posts), [p.params.get("channel") for p in posts]
    allowed = customer_texts(replayed) | {genuine}
    for card in posts:
        assert any(text and text in card_text(card) for text in allowed), card_text(card)[:300]
    assert not slack.webhook_posts, "no response_url was answered"


async def ask_genuinely(bot: BotProcess, text: str) -> None:
    """A customer's mention after the replay: its card arrives."""
    before = len(bot.cards())
    response = await bot.sender.event(app_mention(f"<@UBOT> {text}", user="U777"))
    assert response.status_code == 200, response.text
    await until(lambda: len(bot.cards()) > before and text in card_text(bot.cards()[-1]), "the genuine card")


async def member_asks(bot: BotProcess, discord: FakeDiscord, question: str) -> JSON:
    """A guild member mentions the bot in #support: its card arrives. Returns the message."""
    sent = await discord.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> {question}", mention_bot=True)
    await until(lambda: any(question in card_text(c) for c in bot.cards()), f"the card of {question!r}", timeout=20)
    return sent


@pytest.fixture
async def http_bot(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[BotProcess]:
    async with running(BotProcess(tmp_path, kimi.base_url, slack)) as bot:
        yield bot


async def test_every_slack_request_type_over_http_is_answered_2xx_and_a_genuine_message_still_gets_its_card(
    http_bot: BotProcess, slack: FakeSlack
) -> None:
    answers: dict[str, int] = {}
    for name, payload in SLACK:
        body, content_type = http_request(payload)
        response = await http_bot.sender.raw(body, sign(body, SIGNING_SECRET, content_type=content_type))
        answers[name] = response.status_code
        if payload.get("type") == "url_verification":
            assert response.json() == {"challenge": payload["challenge"]}
    assert {name: status for name, status in answers.items() if not 200 <= status < 300} == {}

    genuine = "where is my order #W2611340? (after the replay)"
    await ask_genuinely(http_bot, genuine)
    await http_bot.stop()
    assert_clean(http_bot)
    assert_nothing_said_to_customers(slack, SLACK, genuine)
    log = http_bot.stderr_path.read_text()
    assert "ignored a Slack reaction_added event" in log, "an ignored type is named in the log"


async def test_every_slack_envelope_over_socket_mode_is_acked_and_a_genuine_message_still_gets_its_card(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with SocketModeSlack(bot_token=SLACK_TOKEN, app_token=APP_TOKEN) as slack:
        async with running(BotProcess(tmp_path, kimi.base_url, slack, SLACK_APP_TOKEN=APP_TOKEN)) as bot:
            await slack.wait_connected()
            replayed = [(name, p) for name, p in SLACK if p.get("type") != "url_verification"]  # HTTP only
            sent = [await slack.send(socket_envelope(payload)) for _, payload in replayed]
            for envelope_id, (name, _) in zip(sent, replayed, strict=True):
                try:
                    await slack.wait_ack(envelope_id, timeout=10)
                except AssertionError:
                    raise AssertionError(f"{name} was never acked") from None
            assert len(slack.connections) == 1, "the socket was never dropped"

            genuine = "where is my order #W2611340? (after the socket replay)"
            before = len(bot.cards())
            await slack.send_event(app_mention(f"<@UBOT> {genuine}", user="U777"))
            await until(lambda: len(bot.cards()) > before and genuine in card_text(bot.cards()[-1]), "the card")
        assert_clean(bot)
        assert_nothing_said_to_customers(slack, replayed, genuine)


async def test_discord_gateway_replay_keeps_the_connection_and_a_members_message_still_gets_its_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    genuine = f"where is my order 40021? (after the gateway replay {time.time()})"
    async with with_discord(tmp_path, kimi.base_url, slack) as (bot, discord):
        for _, dispatch in DISCORD:
            await discord.dispatch(dispatch["t"], dispatch["d"])
        await member_asks(bot, discord, genuine)
    assert len(discord.identifies) == 1 and not discord.resumes, "one session, never dropped"
    assert_clean(bot)
    # A MESSAGE_CREATE without guild_id is a direct message: the documentation's examples are
    # customers writing to the bot, so their cards are right. Nothing else gets one.
    direct = [
        d["d"]["content"].split("<")[0]  # the card escapes what follows (a channel mention)
        for _, d in DISCORD
        if d["t"] == "MESSAGE_CREATE" and "guild_id" not in d["d"]
    ]
    for card in bot.cards():
        assert any(text in card_text(card) for text in [genuine, *direct]), card_text(card)[:300]
    assert not discord.calls_to("POST", r"/channels/\d+/messages$"), "nothing said on Discord"
    assert not discord.calls_to("POST", r"/interactions/"), "no answer to another app's interaction"


async def test_a_gateway_event_discord_py_cannot_read_is_skipped_with_one_warning_even_after_a_resume(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    unreadable = {"id": "1500000000000000001", "content": "no channel, no author"}  # MESSAGE_CREATE needs both
    async with with_discord(tmp_path, kimi.base_url, slack) as (bot, discord):
        await discord.dispatch("MESSAGE_CREATE", unreadable)
        sent = await member_asks(bot, discord, f"where is my order 40021? ({time.time()})")
        # discord.py reads this one but keeps a type it does not know as it came (a list).
        await discord.dispatch("MESSAGE_CREATE", {**sent, "id": discord.next_id(), "type": [0]})

        await discord.drop_gateway()  # Discord restarts a node: discord.py RESUMEs
        await until(lambda: discord.resumes and discord.connected, "the resumed session")
        await discord.dispatch("MESSAGE_CREATE", unreadable)
        await member_asks(bot, discord, f"and order 40022? ({time.time()})")
    assert (len(discord.identifies), len(discord.resumes)) == (1, 1), "only the resume Discord asked for"
    assert_clean(bot)
    skipped = [line for line in bot.stderr_path.read_text().splitlines() if "skipped a Discord" in line]
    assert len(skipped) == 2 and all(" WARNING " in line and "MESSAGE_CREATE" in line for line in skipped)
