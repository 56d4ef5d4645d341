"""Copilot on demand in Slack: the message shortcut "Draft a reply with supportbot" (callback id
``draft_reply``) and the ``/supportbot`` command, translated for :mod:`bot.core.on_demand`, which
decides everything (who may ask, what is drafted, what the agent is told).

The shortcut's ack listener translates the request and hands it to the core, which stores it in
one short transaction (as a message event's ack does), then acks: what Slack saw acknowledged is
kept. What the agent is told goes after the ack, to them alone, by the request's ``response_url``
(a lazy listener). A command is answered in its ack (ephemeral: a slash command's answer is, unless
it says otherwise). A command names its thread by a message link (Slack does not tell a command the
thread it was typed in).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import wire
from adapters.slack.directory import SlackDirectory
from adapters.slack.intake import FLAT_DM, SlackIntake
from bot.events import AgentCommand, Author, DraftRequest, InboundMessage, ThreadRef
from bot.ports import Core

log = logging.getLogger(__name__)

SHORTCUT = "draft_reply"
COMMAND = "/supportbot"
#: The context key the shortcut's ack listener leaves for the lazy listener that tells the agent.
TELL = "supportbot_on_demand"
#: A Slack message link: ``https://acme.slack.com/archives/C0123/p1712345678000100`` (``?thread_ts=``
#: when the message is a reply in a thread).
LINK = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})")
THREAD_TS = re.compile(r"[?&]thread_ts=(\d{10}\.\d{6})")
#: How many of a thread's earlier messages go with a draft request, read within how long.
EARLIER_LIMIT = 20
EARLIER_TIMEOUT = 1.5


def thread_of_link(text: str, team: str) -> ThreadRef | None:
    """The thread a Slack message link in ``text`` points into, or None when there is none."""
    match = LINK.search(text)
    if match is None:
        return None
    channel, seconds, micros = match.groups()
    in_thread = THREAD_TS.search(text, match.end())
    return ThreadRef("slack", team, channel, in_thread.group(1) if in_thread else f"{seconds}.{micros}")


class SlackOnDemand:
    """The shortcut and the command become :class:`DraftRequest` and :class:`AgentCommand`."""

    def __init__(
        self,
        *,
        core: Callable[[], Core],
        client: AsyncWebClient,
        intake: SlackIntake,
        directory: SlackDirectory,
        review_channel: str | None,
    ) -> None:
        self._core = core
        self._client = client
        self._intake = intake
        self._directory = directory
        self._review_channel = review_channel or ""

    def register(self, app: AsyncApp) -> None:
        app.message_shortcut(SHORTCUT)(ack=self.draft_reply, lazy=[self.tell])
        app.command(COMMAND)(self.command)

    async def draft_reply(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        shortcut = wire.parse_message_shortcut(body)
        home = shortcut["user_team"] == shortcut["team_id"] if shortcut["user_team"] else None
        requester = await self._requester(shortcut["user"]["id"], home)
        message = await self._intake.requested(shortcut)
        earlier = await self._earlier(shortcut, message)
        context[TELL] = await self._core().draft_on_request(DraftRequest(requester, message, earlier))
        await ack()

    async def _earlier(self, shortcut: wire.MessageShortcut, message: InboundMessage) -> tuple[InboundMessage, ...]:
        """The thread's messages before the one asked about (its root and the replies between,
        the last :data:`EARLIER_LIMIT`), translated as that one is; none when Slack does not
        answer within :data:`EARLIER_TIMEOUT` (the draft then sees the message alone)."""
        thread = message.thread
        if thread.thread in (message.message_id, FLAT_DM):
            return ()

        async def read() -> tuple[InboundMessage, ...]:
            response = await self._client.conversations_replies(channel=thread.channel, ts=thread.thread, limit=200)
            found = [m for m in response.get("messages") or [] if isinstance(m, dict)]
            before = [m for m in found if float(m.get("ts") or 0) < float(message.message_id)][-EARLIER_LIMIT:]
            return tuple([await self._intake.requested({**shortcut, "message": m}) for m in before])

        try:
            return await asyncio.wait_for(read(), EARLIER_TIMEOUT)
        except (SlackApiError, TimeoutError, OSError, aiohttp.ClientError, ValueError, TypeError) as exc:
            log.info("the thread of a draft request was not read (%s): the message goes alone", type(exc).__name__)
            return ()

    async def tell(self, respond: AsyncRespond, context: AsyncBoltContext) -> None:
        """Lazy: what the agent is told, to them alone."""
        told = context.get(TELL)
        if not isinstance(told, str):
            return
        try:
            await respond(text=told, response_type="ephemeral", replace_original=False)
        except Exception as exc:
            log.warning("could not tell the agent the outcome of their draft request: %s", type(exc).__name__)

    async def command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        command = wire.parse_slash_command(body)
        requester = await self._requester(command["user_id"], None)
        thread = thread_of_link(command["text"], command["team_id"])
        told = await self._core().agent_command(AgentCommand(requester, "slack", command["text"], thread))
        await ack(text=told, response_type="ephemeral")

    async def _requester(self, user: str, home: bool | None) -> Author:
        """The person asking, with the facts that say whether they are an agent."""
        member = await self._directory.is_member(self._review_channel, user) if self._review_channel else None
        return Author(
            user,
            f"<@{user}>",
            groups=await self._directory.groups_of(user),
            home_workspace=home,
            review_member=member,
        )
