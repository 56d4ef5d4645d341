"""Discord adapter (discord.py): customers mention the bot or DM it, agents review in a staff channel.

The ``supportbot.platforms`` entry point is :func:`create` (``adapters.discord:create``): it
returns a :class:`DiscordPlatform`, or None when ``DISCORD_BOT_TOKEN`` is not set.
"""

from adapters.discord.client import required_intents
from adapters.discord.invite import invite_url, required_permissions
from adapters.discord.outbound import DiscordCustomerChannel, split_message
from adapters.discord.platform import DiscordPlatform, create
from adapters.discord.review import DiscordReviewDesk, render_card

__all__ = [
    "DiscordCustomerChannel",
    "DiscordPlatform",
    "DiscordReviewDesk",
    "create",
    "invite_url",
    "render_card",
    "required_intents",
    "required_permissions",
    "split_message",
]
