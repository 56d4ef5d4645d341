"""A customer reply's 👍 / 👎 in Discord: two buttons under the reply whose ``custom_id`` carries
the vote and the draft (``supportbot:rate-up:<draft>``), so a click after a restart is still
understood. A click becomes a :class:`bot.events.FeedbackClick` for :meth:`Core.rate`, which
decides whether the clicker may rate; its answer is shown to the clicker only."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Self

import discord

from adapters.discord.client import SupportbotClient
from bot.events import Author, FeedbackClick, Vote
from bot.ports import Core, DecisionOutcome

log = logging.getLogger(__name__)

FEEDBACK_TEMPLATE = r"supportbot:rate-(?P<vote>up|down):(?P<draft>[A-Za-z0-9_-]+)"
#: The core's answer is awaited this long after the click is acknowledged.
RATE_TIMEOUT_SECONDS = 10.0
COULD_NOT_RECORD_VOTE = "Could not record your vote, please click again."
_LOOK: dict[Vote, tuple[str, str]] = {Vote.UP: ("👍", "This answer helped"), Vote.DOWN: ("👎", "It did not")}


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=FEEDBACK_TEMPLATE):
    """👍 or 👎 under a customer reply, rebuilt from its ``custom_id``."""

    def __init__(self, vote: Vote, draft_id: str) -> None:
        emoji, label = _LOOK[vote]
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            emoji=emoji,
            label=label,
            style=discord.ButtonStyle.secondary,
            custom_id=f"supportbot:rate-{vote}:{draft_id}",
        )
        super().__init__(button)
        self.vote = vote
        self.draft_id = draft_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(Vote(match["vote"]), match["draft"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, SupportbotClient):
            await client.handlers.on_feedback_click(interaction, self.vote, self.draft_id)


def feedback_buttons(draft_id: str) -> discord.ui.View:
    """The reply's two buttons."""
    view = discord.ui.View(timeout=None)
    for vote in (Vote.UP, Vote.DOWN):
        view.add_item(FeedbackButton(vote, draft_id))
    return view


def author_of(user: discord.User | discord.Member) -> Author:
    """Who clicked, with the facts the role classifier reads (their roles in the guild)."""
    roles = user.roles if isinstance(user, discord.Member) else []
    return Author(str(user.id), user.display_name, is_bot=user.bot, groups=frozenset(str(r.id) for r in roles))


async def rate(core: Callable[[], Core], interaction: discord.Interaction[Any], vote: Vote, draft_id: str) -> None:
    """Acknowledge the click, hand it to the core, tell the clicker its answer privately."""
    await interaction.response.defer()
    click = FeedbackClick(draft_id, vote, author_of(interaction.user))
    try:
        outcome = await asyncio.wait_for(core().rate(click), RATE_TIMEOUT_SECONDS)
    except Exception:
        log.exception("the vote of %s on the reply of draft %s could not be recorded", click.author.id, draft_id)
        outcome = DecisionOutcome(False, COULD_NOT_RECORD_VOTE)
    if outcome.message:
        await interaction.followup.send(
            outcome.message, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )
