"""``supportbot discord …`` commands, registered through the ``supportbot.commands`` entry point."""

from __future__ import annotations

import argparse
import base64
import binascii

from bot.errors import ConfigError


def application_id_from_token(token: str) -> str:
    """A bot token's first segment is the bot user's id (= the application id), base64-encoded."""
    head = token.split(".", 1)[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not decoded.isdigit():
        raise ConfigError("cannot read the application id from DISCORD_BOT_TOKEN; pass --application-id")
    return decoded


def _invite(args: argparse.Namespace) -> int:
    from adapters.discord.invite import invite_url  # discord.py is imported only when the command runs
    from adapters.discord.settings import DiscordVariables
    from bot.settings import load_settings

    application_id = args.application_id
    if not application_id:
        token = load_settings().platform(DiscordVariables).bot_token
        if token is None:
            raise ConfigError("set DISCORD_BOT_TOKEN or pass --application-id")
        application_id = application_id_from_token(token.get_secret_value())
    print(invite_url(application_id))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    discord = commands.add_parser("discord", help="Discord helpers").add_subparsers(
        dest="discord_command", required=True
    )
    invite = discord.add_parser(
        "invite-url", help="print the OAuth2 URL that adds the bot with the permissions it needs"
    )
    invite.add_argument("--application-id", default="", help="default: read from DISCORD_BOT_TOKEN")
    invite.set_defaults(handler=_invite)
