"""The OAuth2 URL a server admin opens to add the bot to their server."""

from __future__ import annotations

import discord

#: Only ``bot``: the bot registers no slash commands, and buttons and modals on its own
#: messages work without ``applications.commands``.
INVITE_SCOPES = ("bot",)


def required_permissions() -> discord.Permissions:
    """What the bot does in a server: read channels and history, open threads on mentions,
    post in threads, embed review cards, and react with the pending marker. It uploads no
    files, so Attach Files is not requested."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
        add_reactions=True,
        embed_links=True,
    )


def invite_url(application_id: int | str) -> str:
    """The invite URL for the application (its id is also the bot user's id)."""
    return discord.utils.oauth_url(application_id, permissions=required_permissions(), scopes=INVITE_SCOPES)
