"""The agents' App Home in Slack: on ``app_home_opened`` (the Home tab) the core's
:class:`bot.ports.DeskHome` for that user is rendered as a ``home`` view and published with
``views.publish``; a user the policy does not count as an agent sees one line saying the tab is
for the support team.

Refreshes: whenever a card is recorded as posted or is updated (the queue changed), the Home of
each user who opened it in the last hour is published again, at most once per :data:`DEBOUNCE`
seconds per user (``views.publish`` is rate limited per user: a burst of card changes becomes one
publish). Who opened it is the core's to keep (in SQL), so the instance that changes a card
refreshes a Home opened on another, and a restart forgets nobody; one read of it serves a burst of
changes. The Claim buttons are the cards' own (``claim_conversation`` with
the draft id), so a click is decided by the same path as on a card."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import cards
from adapters.slack.directory import SlackDirectory
from adapters.slack.mrkdwn import escape
from bot import metrics
from bot.core.tasks import Supervisor
from bot.events import DecisionAction
from bot.ports import Core, DeskHome, SlaState

log = logging.getLogger(__name__)

#: Seconds between two publishes of one user's Home (Slack limits views.publish per user).
DEBOUNCE = 2.0
#: The desk's name for the core's list of who opened their home.
DESK = "slack"
NOT_AN_AGENT = "This tab is for the support team: the review queue shows here for its agents."
_SLA_MARK = {
    SlaState.NONE: "",
    SlaState.WITHIN: "",
    SlaState.DUE: " · :warning: past the first-response time",
    SlaState.OVERDUE: " · :rotating_light: *overdue*",
}


def _age(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
    if accessory is not None:
        block["accessory"] = accessory
    return block


def home_view(home: DeskHome | None) -> dict[str, Any]:
    """The Home tab's view for what the core said."""
    if home is None:
        return {"type": "home", "blocks": [_section(NOT_AN_AGENT)]}
    claim_id, claim_label = cards.CONVERSATION_BUTTONS[DecisionAction.CLAIM]
    sla = f" (first response within {home.sla_minutes:g} min)" if home.sla_minutes > 0 else ""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Waiting for review: {home.today.waiting}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Oldest first{sla}."}]},
    ]
    for item in home.queue:
        who = f" · assigned to {cards.agent_name(item.assignee)}" if item.assignee else ""
        customer, where = cards.origin(item.customer or "a customer", item.where or "a thread")
        line = (
            f"*{customer}* in {where} · "
            f"waiting {_age(item.waited.total_seconds())}{_SLA_MARK[item.sla]}{who}\n>{escape(item.text)}"
        )
        button = {
            "type": "button",
            "action_id": claim_id,
            "text": {"type": "plain_text", "text": claim_label},
            "value": item.draft_id,
        }
        blocks.append(_section(line, button))
    if not home.queue:
        blocks.append(_section("Nothing waits for a decision."))
    if home.more_waiting:
        blocks.append(_section(f"…and {home.more_waiting} more in the review channel."))
    blocks += [{"type": "divider"}, {"type": "header", "text": {"type": "plain_text", "text": "My conversations"}}]
    for mine in home.mine:
        answered = "you answer" if mine.owner.value == "human" else "the bot drafts"
        status = mine.status.value.replace("_", " ")
        customer, where = cards.origin(mine.customer or "a customer", mine.where)
        blocks.append(_section(f"*{customer}* in {where} · {status} · {answered}"))
    if not home.mine:
        blocks.append(_section("No open conversation is assigned to you."))
    t = home.today
    figures = (
        f"Replies sent: *{t.replies_sent}*  ·  Resolved: *{t.resolved}*  ·  "
        f"Waiting: *{t.waiting}*  ·  :+1: {t.thumbs_up}  :-1: {t.thumbs_down}"
    )
    blocks += [
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": "Today"}},
        _section(figures),
    ]
    return {"type": "home", "blocks": blocks}


class SlackHome:
    """Publishes the agents' Home tab, and keeps it fresh for those who look at it."""

    def __init__(
        self,
        *,
        core: Callable[[], Core],
        client: AsyncWebClient,
        directory: SlackDirectory,
        review_channel: str | None,
        debounce: float = DEBOUNCE,
    ) -> None:
        self._core = core
        self._client = client
        self._directory = directory
        self._review_channel = review_channel or ""
        self._debounce = debounce
        self._tasks = Supervisor()  # the reads and publishes on their way; a failure is logged and counted
        self._reading: asyncio.Task[None] | None = None
        self._opened: set[str] = set()  # users whose opening the core has not heard of yet
        self._published: dict[str, float] = {}  # user -> when their Home was last published
        self._pending: dict[str, asyncio.Task[None]] = {}

    @property
    def refreshing(self) -> frozenset[str]:
        """The users whose Home is about to be published."""
        return frozenset(self._pending)

    def register(self, app: AsyncApp) -> None:
        app.event("app_home_opened")(self.on_home_opened)

    async def on_home_opened(self, event: dict[str, Any]) -> None:
        user = event.get("user")
        if event.get("tab") != "home" or not isinstance(user, str) or not user:
            return  # the Messages tab, or nobody to show it to
        self._opened.add(user)  # recorded by the publish, after the ack (listeners run before it)
        self._schedule(user, now=True)

    def desk_changed(self) -> None:
        """The queue changed: refresh the Home of everyone who opened it lately, on any instance
        (debounced)."""
        # A change while the viewers are being read is covered by that read: the publishes it
        # schedules start after it and read the desk as it is then.
        if self._reading is None:
            self._reading = self._tasks.spawn("slack-home", self._refresh_viewers(), reading="viewers")

    async def _refresh_viewers(self) -> None:
        try:  # failing, it is logged and counted; the next desk change reads again
            for user in await self._core().homes.viewers(DESK):
                self._schedule(user)
        finally:
            self._reading = None

    def _schedule(self, user: str, *, now: bool = False) -> None:
        if user in self._pending:
            return  # a publish is on its way and will read the desk as it is then
        since = time.monotonic() - self._published.get(user, float("-inf"))
        wait = 0.0 if now and since >= self._debounce else max(0.0, self._debounce - since)
        self._pending[user] = self._tasks.spawn("slack-home", self._publish_after(user, wait), user=user)

    async def _publish_after(self, user: str, wait: float) -> None:
        """Publish ``user``'s Home after ``wait``; any failure but Slack's is the supervisor's to
        log and count. The next desk change or opening publishes again."""
        this = asyncio.current_task()
        try:
            await asyncio.sleep(wait)
            self._published[user] = time.monotonic()
            del self._pending[user]  # from here a desk change schedules the next publish
            await self._publish(user)
        except SlackApiError as exc:
            metrics.platform_error("slack", "views.publish")
            log.warning("could not publish the Home of %s: %s", user, exc.response.get("error"))
        finally:
            if self._pending.get(user) is this:
                del self._pending[user]

    async def _publish(self, user: str) -> None:
        person = await self._directory.person(user, self._review_channel)
        if user in self._opened:
            self._opened.discard(user)
            try:
                await self._core().homes.opened(DESK, person)
            except Exception:  # shown all the same; only its refreshes are lost
                metrics.background_failure("slack-home")
                log.exception("could not keep %s among the Home's viewers", user)
        home = await self._core().homes.home(person)
        await self._client.views_publish(user_id=user, view=home_view(home))

    async def close(self) -> None:
        """Stop the refreshes on their way (the adapter stops)."""
        await self._tasks.close()
        self._pending.clear()
