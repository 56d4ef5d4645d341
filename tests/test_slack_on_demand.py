"""Copilot on demand through the real Slack adapter (issue 21 point 7): signed ``message_action``
and slash-command requests, in the shapes bolt-python's own tests send, to the running bot with
the loopback Slack fake. Agents are the review channel's members (the policy's default)."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.cards import CONVERSATION_BUTTONS
from adapters.slack.on_demand import COMMAND, SHORTCUT
from bot.core.on_demand import ALREADY, NOT_AN_AGENT
from bot.events import DecisionAction
from tests.desks import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import action_body, message, message_shortcut, sign, slash_command
from tests.harness import REVIEW_CHANNEL, SIGNING_SECRET, Harness, draft_id_of, running_bot

AGENT, STRANGER, CUSTOMER = "U333", "U444", "U222"


@pytest.fixture
async def harness(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[Harness]:
    slack.members[REVIEW_CHANNEL] = [AGENT]
    async with running_bot(tmp_path, kimi, slack) as running:
        yield running


async def posted_without_mention(harness: Harness, text: str, user: str = CUSTOMER, **kwargs: Any) -> dict[str, Any]:
    """A message the bot is told of but does not take up (no mention, no thread it follows)."""
    envelope = message(text, user=user, **kwargs)
    assert (await harness.sender.event(envelope)).status_code == 200
    return dict(envelope["event"])


async def shortcut(harness: Harness, event: dict[str, Any], user: str, name: str) -> str:
    """``user`` picks "Draft a reply with supportbot" on the message; what they alone were told."""
    started = time.monotonic()
    payload = message_shortcut(event, user=user, response_url=harness.slack.response_url(name))
    response = await harness.sender.action(payload)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 3.0, "acknowledged within Slack's 3 seconds"
    [post] = await harness.slack.wait_for_webhook(name)
    assert post.body["response_type"] == "ephemeral" and post.body["replace_original"] is False
    return str(post.body["text"])


async def command(harness: Harness, text: str, user: str = AGENT) -> str:
    response = await harness.sender.command(slash_command(text, user=user))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response_type"] == "ephemeral", "the agent's alone"
    return str(answer["text"])


async def test_an_agents_shortcut_drafts_a_reply_to_a_message_that_did_not_mention_the_bot(
    harness: Harness, kimi: FakeKimi
) -> None:
    event = await posted_without_mention(harness, "where is my order #W2611340?")
    await harness.settle()
    assert harness.cards() == [] and kimi.completions == [], "without a mention the bot stays out"

    told = await shortcut(harness, event, AGENT, "ask")
    assert told == f"Drafting a reply to <@{CUSTOMER}>'s message: its card will be on the review desk."
    [card] = await harness.wait_cards(1)
    assert "where is my order #W2611340?" in json.dumps(card.params["blocks"])

    assert await shortcut(harness, event, AGENT, "again") == ALREADY, "one request per message"
    await harness.click("approve_draft", draft_id_of(card), user=AGENT)
    [reply] = await harness.wait_replies(event["ts"])
    assert "#W2611340" in reply.params["text"], "the approved draft goes to the customer's thread"
    assert len(harness.cards()) == 1


async def test_a_draft_asked_for_on_a_reply_sees_the_thread_before_it(harness: Harness, kimi: FakeKimi) -> None:
    root = await posted_without_mention(harness, "my order #W2611340 is late, it was a birthday gift")
    await posted_without_mention(harness, "same here with mine", thread_ts=root["ts"], user=STRANGER)
    asked = await posted_without_mention(harness, "any news?", thread_ts=root["ts"])
    await harness.settle()
    assert kimi.completions == [], "the bot follows no thread it was never asked into"

    assert (await shortcut(harness, asked, AGENT, "ask")).startswith(f"Drafting a reply to <@{CUSTOMER}>'s")
    [card] = await harness.wait_cards(1)
    assert "any news?" in json.dumps(card.params["blocks"])
    seen = json.dumps([c["messages"] for c in kimi.completions])
    assert "it was a birthday gift" in seen and "same here with mine" in seen, "the thread is the draft's context"
    await harness.click("approve_draft", draft_id_of(card), user=AGENT)
    await harness.wait_replies(root["ts"])


async def test_a_non_agent_is_refused_and_nothing_is_drafted(harness: Harness, kimi: FakeKimi) -> None:
    event = await posted_without_mention(harness, "where is my order #W2611340?")
    assert await shortcut(harness, event, STRANGER, "stranger") == NOT_AN_AGENT
    assert await command(harness, "order #W2611340", user=STRANGER) == NOT_AN_AGENT
    await harness.settle()
    assert harness.cards() == [] and kimi.completions == []


async def test_a_taken_over_thread_stays_the_agents(harness: Harness, kimi: FakeKimi) -> None:
    opened = await harness.mention("where is my order #W2611340?", user=CUSTOMER)
    [card] = await harness.wait_cards(1)
    await harness.click(CONVERSATION_BUTTONS[DecisionAction.TAKE_OVER][0], draft_id_of(card), user=AGENT)
    await harness.settle()
    drafted = len(kimi.completions)

    later = message("and can I change the address?", user=CUSTOMER, thread_ts=opened["event"]["ts"])["event"]
    told = await shortcut(harness, later, AGENT, "taken")
    assert told.startswith("This conversation was taken over: <@U333> answers it")
    assert "click Hand back on its card first" in told
    await harness.settle()
    assert len(harness.cards()) == 1 and len(kimi.completions) == drafted


async def test_supportbot_order_and_summary_answer_the_agent_alone(harness: Harness) -> None:
    eta = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert await command(harness, "order #W2611340") == f"*Order #W2611340*: shipped, expected {eta} (carrier: UPS)"
    assert (await command(harness, "help")).startswith("*supportbot*")

    opened = await harness.mention("where is my order #W2611340?", user=CUSTOMER)
    await harness.wait_cards(1)
    ts = str(opened["event"]["ts"])
    link = f"<https://acme.slack.com/archives/C111/p{ts.replace('.', '')}>"
    summary = await command(harness, f"summary {link}")
    assert summary.startswith(f"*Conversation with <@{CUSTOMER}>*: open, the bot drafts.")
    assert harness.slack.calls_to("chat.postEphemeral") == [], "the answer is the ack's own, to the agent alone"


async def test_a_forged_or_unsigned_request_is_refused(harness: Harness, kimi: FakeKimi) -> None:
    event = await posted_without_mention(harness, "where is my order #W2611340?")
    body = action_body(message_shortcut(event, user=AGENT))
    forged = sign(body, "not-the-signing-secret", content_type="application/x-www-form-urlencoded")
    assert (await harness.sender.raw(body, forged)).status_code == 401
    form = urllib.parse.urlencode(slash_command("order #W2611340"))
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await harness.sender.raw(form, unsigned)).status_code == 401
    stale = sign(form, SIGNING_SECRET, int(time.time()) - 600, "application/x-www-form-urlencoded")
    assert (await harness.sender.raw(form, stale)).status_code == 401
    await harness.settle()
    assert harness.cards() == [] and kimi.completions == []


@pytest.mark.parametrize("manifest", sorted(Path("deploy").glob("slack-manifest*.yaml")), ids=lambda p: p.name)
def test_every_manifest_installs_the_shortcut_and_the_command(manifest: Path) -> None:
    text = manifest.read_text()
    assert f"callback_id: {SHORTCUT}\n" in text and "name: Draft a reply with supportbot\n" in text
    assert f"- command: {COMMAND}\n" in text
    assert "\n      - commands" in text, "the bot scope shortcuts and slash commands need"
