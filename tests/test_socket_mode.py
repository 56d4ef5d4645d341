"""Socket Mode: an operator who cannot expose a public URL sets SLACK_APP_TOKEN (and no signing
secret). The real bot asks the fake Slack for a WebSocket URL with the app-level token, receives
envelopes over the socket, acks them, and works exactly as in HTTP mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.app import Supportbot
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack_payloads import app_mention, block_actions, message, message_shortcut, slash_command
from tests.fakes.socket_mode import SocketModeSlack, interactive_envelope
from tests.harness import (
    KIMI_KEY,
    REVIEW_CHANNEL,
    SLACK_TOKEN,
    Harness,
    card_text,
    draft_id_of,
    settings_for,
)

APP_TOKEN = "xapp-1-A111-canary-app-token-0123456789"


@pytest.fixture
async def socket_slack() -> AsyncIterator[SocketModeSlack]:
    async with SocketModeSlack(bot_token=SLACK_TOKEN, app_token=APP_TOKEN) as fake:
        yield fake


@pytest.fixture
async def socket_bot(tmp_path: Path, socket_slack: SocketModeSlack) -> AsyncIterator[Harness]:
    async with FakeKimi(api_key=KIMI_KEY) as kimi:
        settings = settings_for(tmp_path, kimi, socket_slack, slack_app_token=APP_TOKEN, slack_signing_secret=None)
        bot = Supportbot(settings)
        await bot.start()
        running = Harness(bot, socket_slack, kimi, tmp_path)
        try:
            await running.import_orders()
            yield running
        finally:
            await bot.stop()


async def test_a_mention_over_the_socket_is_acked_and_becomes_one_card(
    socket_bot: Harness, socket_slack: SocketModeSlack
) -> None:
    # The bot asked for a socket URL with the app-level token, not the bot token, and connected.
    [opened] = socket_slack.calls_to("apps.connections.open")
    assert opened.headers.get("Authorization") == f"Bearer {APP_TOKEN}"
    assert opened.ok
    await socket_slack.wait_connected()

    # A customer mentions the bot; Slack delivers the event over the socket.
    body = app_mention("<@UBOT> Hi, where is my order #W2611340?")
    envelope_id = await socket_slack.send_event(body)
    assert await socket_slack.wait_ack(envelope_id) == {"envelope_id": envelope_id}

    [card] = await socket_bot.wait_cards(1)
    text = card_text(card)
    assert "where is my order #W2611340?" in text and "1Z999AA10123456784" in text
    assert card.params["channel"] == REVIEW_CHANNEL

    # Slack did not see the ack in time and redelivers the same event (same event_id).
    retry_id = await socket_slack.send_event(body, retry_attempt=1, retry_reason="timeout")
    await socket_slack.wait_ack(retry_id)
    await socket_bot.settle()
    assert len(socket_bot.cards()) == 1, "a redelivered envelope makes no second card"
    assert len(socket_bot.kimi.completions) == 2, "one draft: a tool call and a final answer"

    # The agent's Approve click arrives over the socket too; the reply is posted once.
    click = block_actions("approve_draft", draft_id_of(card), user="U333", channel=REVIEW_CHANNEL)
    click_id = await socket_slack.send_interactive(click)
    await socket_slack.wait_ack(click_id)
    [reply] = await socket_bot.wait_replies(body["event"]["ts"])
    assert "1Z999AA10123456784" in reply.params["text"]


async def test_socket_mode_opens_no_unsigned_http_door(socket_bot: Harness) -> None:
    # Without a signing secret nothing could verify an HTTP event, so /slack/events is not served.
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{socket_bot.url}/slack/events", json=app_mention("<@UBOT> hi"))
        health = await client.get(f"{socket_bot.url}/healthz")
    assert response.status_code == 404
    assert health.status_code == 200
    await socket_bot.settle()
    assert not socket_bot.cards() and not socket_bot.kimi.completions


async def test_the_bot_reconnects_when_slack_refreshes_the_socket(
    socket_bot: Harness, socket_slack: SocketModeSlack
) -> None:
    first = await socket_slack.wait_connected()
    await socket_slack.request_refresh()
    second = await socket_slack.wait_connected(count=2)
    assert second is not first
    assert len(socket_slack.calls_to("apps.connections.open")) == 2, "a fresh URL for the new socket"

    envelope_id = await socket_slack.send_event(app_mention("<@UBOT> status of ORD-77 please"))
    await socket_slack.wait_ack(envelope_id)
    await socket_bot.wait_cards(1)


async def test_the_fake_refuses_the_wrong_token_types(socket_slack: SocketModeSlack) -> None:
    # Guards the fake itself: Slack refuses a bot token for apps.connections.open and an app token
    # for chat methods, so a bot that mixes them up fails here as it would in production.
    async with httpx.AsyncClient(base_url=socket_slack.base_url) as client:
        with_bot = await client.post("apps.connections.open", headers={"Authorization": f"Bearer {SLACK_TOKEN}"})
        with_app = await client.post(
            "chat.postMessage",
            headers={"Authorization": f"Bearer {APP_TOKEN}"},
            json={"channel": "C111", "text": "hi"},
        )
    assert with_bot.json() == {"ok": False, "error": "not_allowed_token_type"}
    assert with_app.json() == {"ok": False, "error": "not_allowed_token_type"}


async def test_the_shortcut_and_supportbot_work_over_the_socket(
    socket_bot: Harness, socket_slack: SocketModeSlack
) -> None:
    """Copilot on demand (issue 21 point 7) over the socket: the shortcut is acked and its card
    shows; the command's ephemeral answer rides in its ack."""
    socket_slack.members[REVIEW_CHANNEL] = ["U333"]
    await socket_slack.wait_connected()
    body = message("where is my order #W2611340?", user="U222")
    socket_slack.ingest_event(body)
    asked = message_shortcut(body["event"], user="U333", response_url=socket_slack.response_url("ask"))
    await socket_slack.wait_ack(await socket_slack.send_interactive(asked))
    [told] = await socket_slack.wait_for_webhook("ask")
    assert told.body["text"] == "Drafting a reply to <@U222>'s message: its card will be on the review desk."
    [card] = await socket_bot.wait_cards(1)
    assert "where is my order #W2611340?" in card_text(card)

    command = {"type": "slash_commands", "accepts_response_payload": True}
    envelope = {**interactive_envelope(slash_command("order 40021", user="U333")), **command}
    ack = await socket_slack.wait_ack(await socket_slack.send(envelope))
    assert ack["payload"]["response_type"] == "ephemeral"
    assert ack["payload"]["text"].startswith("*Order 40021*: delivered")
