"""The test desk (:mod:`bot.testing`) as the scenario tests open it, and the drivers that run a
scenario through a real adapter: Slack over the fake Slack, Discord over the fake Discord.

This module is the one place the scenario tests get the Kimi simulator from (``kimi`` fixture,
``CallTools``, ``Reply``, ``Fail``): switching simulators is a change here.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.app import Supportbot, platform_factories
from bot.events import DecisionAction
from bot.ports import PlatformFactory
from bot.testing import Board, DeskCard, Driver, Move, Saying, TestDesk, desk_settings, recording, until
from tests.fakes.discord import BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord, FakeUser
from tests.fakes.kimi import CallTools, Fail, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import CUSTOMER_CHANNEL, KIMI_KEY, REVIEW_CHANNEL, SIGNING_SECRET, SLACK_TOKEN, Harness

__all__ = [
    "CallTools",
    "DiscordDriver",
    "Fail",
    "FakeKimi",
    "Reply",
    "SlackDriver",
    "open_desk",
]


@contextlib.asynccontextmanager
async def open_desk(
    tmp_path: Path,
    kimi: FakeKimi,
    *,
    policy: str = "",
    orders: Sequence[Mapping[str, Any]] = (),
    driver: Driver | None = None,
    board: Board | None = None,
    **overrides: Any,
) -> AsyncIterator[TestDesk]:
    """The real bot on the Kimi simulator with ``policy`` and ``orders``, on ``driver``'s platform
    (in memory by default; a :class:`SlackDriver` or :class:`DiscordDriver` adds its settings)."""
    if isinstance(driver, SlackDriver | DiscordDriver):
        overrides = {**driver.settings(), **overrides}
    settings = desk_settings(tmp_path, kimi.base_url, KIMI_KEY, policy=policy, **overrides)
    async with TestDesk.open(settings, driver=driver, orders=orders, board=board) as desk:
        yield desk


def _recorded(board: Board) -> dict[str, PlatformFactory]:
    """Every installed adapter, its review desk's cards also kept on ``board``."""
    return {name: recording(factory, board) for name, factory in platform_factories().items()}


class SlackDriver:
    """A scenario through the real Slack adapter: events and clicks signed as Slack sends them
    (reusing :class:`tests.harness.Harness`), replies read from the fake Slack's Web API calls.
    A person's Slack id is ``U`` + their name in capitals (``kim`` is ``UKIM``)."""

    platform = "slack"

    def __init__(self, slack: FakeSlack, kimi: FakeKimi) -> None:
        self.slack = slack
        self.kimi = kimi
        self._harness: Harness | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "slack_bot_token": SLACK_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": self.slack.base_url,
            "slack_review_channel": REVIEW_CHANNEL,
        }

    def factories(self, board: Board) -> dict[str, PlatformFactory]:
        return _recorded(board)

    async def attach(self, bot: Supportbot) -> None:
        self._harness = Harness(bot, self.slack, self.kimi, bot.settings.policy_file.parent)

    def user_id(self, person: str) -> str:
        return "U" + person.upper()

    async def say(self, message: Saying) -> tuple[str, bool]:
        if message.attachments or message.customer.email:
            raise ValueError("the Slack driver sends text only")
        user, where = message.customer.user_id, message.channel or CUSTOMER_CHANNEL
        if message.thread is None:
            envelope = await self._slack().mention(message.text, user=user, channel=where)
            return str(envelope["event"]["ts"]), True
        await self._slack().reply_in_thread(message.text, message.thread, user=user, channel=where)
        return message.thread, True

    async def decide(self, card: DeskCard, move: Move, agent: str) -> str:
        harness = self._slack()
        draft_id = card.latest.draft_id
        before = len(harness.ephemerals(agent))
        if move.action is DecisionAction.APPROVE:
            await harness.click("approve_draft", draft_id, user=agent)
        elif move.action is DecisionAction.REJECT:
            await harness.click("reject_draft", draft_id, user=agent)
        elif move.action is DecisionAction.EDIT:
            values = {"draft_block": {"draft_input": move.text or card.latest.draft_text}}
            if move.refund_amount is not None:
                values["refund_block"] = {"refund_input": move.refund_amount}
            await harness.submit("edit_draft_modal", draft_id, values, user=agent)
        elif move.action is DecisionAction.RESOLVE:
            await harness.click("resolve_conversation", draft_id, user=agent)
        else:
            raise ValueError(f"the Slack driver does not {move.action.value} (no scenario needs it yet)")
        told = await until(lambda: harness.ephemerals(agent)[before:], f"what {agent} was told")
        return told[0]

    def replies(self, thread: str) -> list[str]:
        return [str(c.params.get("text")) for c in self._slack().replies(thread)]

    def direct_messages(self, person: str) -> list[str]:
        dm = "D" + self.user_id(person)[1:]  # the fake's DM channel with U… (conversations.open)
        return [str(c.params.get("text")) for c in self._slack().replies(None, channel=dm)]

    @property
    def harness(self) -> Harness:
        """The Slack side of the open desk (for a click no :class:`Move` covers, like opening Edit)."""
        return self._slack()

    def _slack(self) -> Harness:
        if self._harness is None:
            raise RuntimeError("the desk is not open")
        return self._harness


class DiscordDriver:
    """A scenario through the real Discord adapter: members write over the fake gateway, agents
    click the card's buttons (interactions), replies are the bot's messages in the thread it
    opened. Cards go to the Discord staff channel. People get stable snowflake ids."""

    platform = "discord"

    def __init__(self, discord: FakeDiscord) -> None:
        self.discord = discord
        self._people: dict[str, FakeUser] = {}
        self._ids = itertools.count(1)

    def settings(self) -> dict[str, Any]:
        return {
            "discord_bot_token": self.discord.token,
            "discord_api_url": self.discord.api_url,
            "discord_cdn_urls": self.discord.cdn_url,
            "discord_review_channel": REVIEW_CHANNEL_ID,
        }

    def factories(self, board: Board) -> dict[str, PlatformFactory]:
        return _recorded(board)

    async def attach(self, bot: Supportbot) -> None:
        return None

    def person(self, name: str) -> FakeUser:
        if name not in self._people:
            snowflake = f"15{next(self._ids):017d}"
            self._people[name] = FakeUser(snowflake, name, name.title())
        return self._people[name]

    def user_id(self, person: str) -> str:
        return self.person(person).id

    async def say(self, message: Saying) -> tuple[str, bool]:
        if message.attachments or message.customer.email or message.channel:
            raise ValueError("the Discord driver sends text in the support channel only")
        author = self.person(message.customer.name)
        if message.thread is None:
            asked = await self.discord.post_user_message(SUPPORT_CHANNEL_ID, author, message.text, mention_bot=True)
            return str(asked["id"]), True  # the bot opens a thread on the member's message, with its id
        await self.discord.post_user_message(message.thread, author, message.text)
        return message.thread, True

    async def decide(self, card: DeskCard, move: Move, agent: str) -> str:
        if move.action is DecisionAction.REGENERATE:
            raise ValueError("the Discord driver does not regenerate (no scenario needs it yet)")
        user = next(u for u in self._people.values() if u.id == agent)
        message_id = card.ref.split(":")[-1]
        draft_id = card.latest.draft_id
        click = await self.discord.click(message_id, f"supportbot:{move.action.value}:{draft_id}", user)
        if move.action is DecisionAction.EDIT:
            await self.discord.wait_for_response(click)
            values = {"text": move.text or card.latest.draft_text}
            if move.refund_amount is not None:
                values["refund_amount"] = move.refund_amount
            click = await self.discord.submit_modal(click, values, user)
        told = await until(lambda: click.followups, f"what {agent} was told")
        return str(told[0]["content"])

    def replies(self, thread: str) -> list[str]:
        return [str(m["content"]) for m in self.discord.messages_in(thread) if m["author"]["id"] == BOT_ID]

    def direct_messages(self, person: str) -> list[str]:
        user = self.user_id(person)
        dms = [c["id"] for c in self.discord.channels.values() if c["type"] == 1 and c["recipients"][0]["id"] == user]
        return [text for dm in dms for text in self.replies(str(dm))]
