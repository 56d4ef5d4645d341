"""Discord adapter (discord.py): customers mention the bot or DM it, agents review in a staff channel.

The ``supportbot.platforms`` entry point is :func:`create` (``adapters.discord:create``): it
returns a :class:`DiscordPlatform`, or None when ``DISCORD_BOT_TOKEN`` is not set.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.discord.client import required_intents
    from adapters.discord.invite import invite_url, required_permissions
    from adapters.discord.outbound import DiscordCustomerChannel, split_message
    from adapters.discord.platform import DiscordPlatform, create
    from adapters.discord.review import DiscordReviewDesk, render_card

# Loaded on first use (PEP 562), so a command such as ``supportbot --help`` that only registers
# ``supportbot discord …`` does not import discord.py.
_HOMES = {
    "required_intents": "client",
    "invite_url": "invite",
    "required_permissions": "invite",
    "DiscordCustomerChannel": "outbound",
    "split_message": "outbound",
    "DiscordPlatform": "platform",
    "create": "platform",
    "DiscordReviewDesk": "review",
    "render_card": "review",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


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
