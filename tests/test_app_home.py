"""Slack App Home (issue 21 point 3): an agent opening the Home tab sees the queue (oldest
first, each card's age against the first-response time, a Claim button that decides like the
card's), their conversations and today's figures; someone who is no agent sees none of it; the
Home is published again when the desk changes, a burst of changes becoming one publish, whichever
instance changed it and across a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from adapters.slack import cards
from adapters.slack.home import NOT_AN_AGENT, SlackHome
from adapters.slack.platform import SlackPlatform
from bot.events import Author, DecisionAction
from bot.ports import SlaState
from bot.testing import until
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import Harness, draft_id_of, running_bot, running_instances

RECORDED = Path(__file__).parent / "payloads" / "slack" / "event-callback-app-home-opened-1.json"
POLICY = '[approvers]\nagents = ["U333"]\n\n[desk]\nfirst_response_minutes = 30\n'


async def open_home(harness: Harness, user: str, tab: str = "home") -> None:
    """Slack's ``app_home_opened`` as recorded, for ``user`` on ``tab``."""
    envelope: dict[str, Any] = json.loads(RECORDED.read_text())
    envelope["event"].update(user=user, tab=tab)
    envelope["event_id"] = f"Ev-home-{user}-{tab}-{len(harness.slack.calls_to('views.publish'))}"
    response = await harness.sender.event(envelope)
    assert response.status_code == 200, response.text


def homes(slack: FakeSlack, user: str) -> list[str]:
    """The Home views published for ``user``, as JSON text, oldest first."""
    views = [c.params["view"] for c in slack.calls_to("views.publish") if c.params.get("user_id") == user]
    return [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in views]


def home_of(bot_platforms: list[Any]) -> SlackHome:
    [slack] = [p for p in bot_platforms if isinstance(p, SlackPlatform)]
    return slack.home


async def test_an_agent_sees_the_queue_claims_from_home_and_the_home_follows_the_desk(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        await harness.mention("where is my order #W2611340?")
        [card] = await harness.wait_cards(1)
        draft_id = draft_id_of(card)

        await open_home(harness, "U333")
        [first] = await until(lambda: homes(slack, "U333"), "the agent's Home")
        view = json.loads(first)
        assert view["type"] == "home"
        assert "Waiting for review: 1" in first and "where is my order #W2611340?" in first
        assert "first response within 30 min" in first and "waiting 0 min" in first
        claim_id, _ = cards.CONVERSATION_BUTTONS[DecisionAction.CLAIM]
        [claim] = [b["accessory"] for b in view["blocks"] if b.get("accessory", {}).get("action_id") == claim_id]
        assert claim["value"] == draft_id
        assert "No open conversation is assigned to you." in first
        assert "Replies sent: *0*" in first

        await open_home(harness, "U222")  # the customer opens the bot's Home tab
        assert [
            json.loads(v)["blocks"][0]["text"]["text"] for v in await until(lambda: homes(slack, "U222"), "a Home")
        ] == [NOT_AN_AGENT]
        await open_home(harness, "U333", tab="messages")  # the Messages tab publishes nothing

        # Claim from the Home: decided like the card's button; the Home follows.
        await harness.click(claim_id, draft_id, user="U333")
        refreshed = await until(
            lambda: [h for h in homes(slack, "U333")[1:] if "you answer" in h or "the bot drafts" in h], "a fresh Home"
        )
        assert "assigned to <@U333>" in refreshed[-1], "the queue names (mentions) who claimed the card"
        assert "No open conversation is assigned to you." not in refreshed[-1], "it is among my conversations"
        home = home_of(harness.bot.platforms)
        await until(lambda: not home.refreshing or None, "nothing more on its way")
        assert len(homes(slack, "U222")) == 1, "the customer's Home shows nothing that changes: not published again"


async def test_a_burst_of_desk_changes_is_one_publish_per_user(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        await open_home(harness, "U333")
        await until(lambda: homes(slack, "U333"), "the agent's Home")
        home = home_of(harness.bot.platforms)
        before = len(homes(slack, "U333"))
        for _ in range(5):
            home.desk_changed()  # five cards changing at once
        await until(lambda: len(homes(slack, "U333")) > before, "the refresh")
        await until(lambda: not home.refreshing or None, "nothing more on its way")
        assert len(homes(slack, "U333")) == before + 1


async def test_a_home_opened_before_a_restart_follows_the_desk_after_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy=POLICY) as harness:
        await open_home(harness, "U333")
        [empty] = await until(lambda: homes(slack, "U333"), "the agent's Home")
        assert "Nothing waits for a decision." in empty

    async with running_bot(tmp_path, kimi, slack) as restarted:  # the agent still has the tab open
        await restarted.mention("where is my order #W2611340?")
        await restarted.wait_cards(1)
        fresh = await until(lambda: [h for h in homes(slack, "U333")[1:] if "#W2611340" in h], "the Home refreshed")
        assert "Waiting for review: 1" in fresh[-1]


async def test_a_home_opened_on_one_instance_follows_a_card_another_instance_posts(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    (tmp_path / "policy.toml").write_text(POLICY)
    async with running_instances(tmp_path, kimi, slack, database) as (first, senders):
        await open_home(first, "U333")  # Slack delivers the opening to the first instance
        await until(lambda: homes(slack, "U333"), "the agent's Home")

        # The customer's message reaches the second instance, which drafts and posts the card.
        response = await senders[1].event(app_mention("<@UBOT> where is my order #W2611340?"))
        assert response.status_code == 200, response.text
        await first.wait_cards(1)
        fresh = await until(lambda: [h for h in homes(slack, "U333")[1:] if "#W2611340" in h], "the Home refreshed")
        assert "Waiting for review: 1" in fresh[-1]


def test_every_slack_manifest_turns_the_home_tab_on_and_subscribes_to_its_opening() -> None:
    for manifest in sorted((Path(__file__).parent.parent / "deploy").glob("slack-manifest*.yaml")):
        lines = [line.split("#")[0].rstrip() for line in manifest.read_text().splitlines()]
        assert "    home_tab_enabled: true" in lines, manifest.name
        assert "      - app_home_opened" in lines, manifest.name


async def test_a_card_waiting_past_twice_the_first_response_time_shows_overdue_on_the_home(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    policy = '[approvers]\nagents = ["U333"]\n\n[desk]\nfirst_response_minutes = 0.03\n'  # 1.8 s
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        await harness.mention("where is my order #W2611340?")
        await harness.wait_cards(1)
        core = harness.bot.core
        assert core is not None

        async def state() -> SlaState | None:
            home = await core.homes.home(Author("U333"))
            assert home is not None
            return home.queue[0].sla if home.queue else None

        seen = {await state()}
        while SlaState.OVERDUE not in seen:  # the card ages: within, due, then overdue
            seen.add(await until_changed(state, seen))
        assert SlaState.WITHIN in seen or SlaState.DUE in seen
        await open_home(harness, "U333")
        [shown] = await until(lambda: homes(slack, "U333"), "the agent's Home")
        assert ":rotating_light: *overdue*" in shown
        assert await core.homes.home(Author("U222")) is None, "the customer is no agent: no home"


async def until_changed(probe: Callable[[], Awaitable[SlaState | None]], seen: set[SlaState | None]) -> SlaState | None:
    """The probe's next value not in ``seen`` (polled; fails after the desk's wait)."""
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        value = await probe()
        if value not in seen:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"the card's SLA state stayed among {seen}")
