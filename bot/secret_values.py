"""The configured secrets, by name, so that no file holding one is handed to Kimi or indexed.

Every :class:`pydantic.SecretStr` setting of the core (``MOONSHOT_API_KEY``, ``ORDERS_API_TOKEN``)
and of each platform's settings (``SLACK_BOT_TOKEN``, ``DISCORD_BOT_TOKEN``: :attr:`Settings.platforms`),
and every variable whose name says it is a secret (``…_TOKEN``, ``…_SECRET``, ``…_KEY``,
``…_PASSWORD``) in the environment, the ``.env`` file and the secrets directory: an adapter's
secrets read apart from the settings (``PLAYGROUND_TOKEN``) give themselves away by their names.
Values shorter than :data:`MIN_SECRET_CHARS` are left out (they would match ordinary text and are
no real secret anyway).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from bot.settings import DEFAULT_SECRETS_DIR, Settings

MIN_SECRET_CHARS = 8
SECRET_NAME = re.compile(r"(?:^|_)(TOKEN|SECRET|KEY|PASSWORD)$", re.IGNORECASE)

#: Setting or variable name (upper case) -> its value.
Secrets = Mapping[str, str]


def configured_secrets(settings: Settings | None = None, env_file: Path = Path(".env")) -> dict[str, str]:
    """Every secret the bot is configured with, by its variable name."""
    found: dict[str, str] = {}
    if settings is not None:
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                found[name.upper()] = value.get_secret_value()
        for platform in settings.platforms.values():
            for name in type(platform).model_fields:
                value = getattr(platform, name)
                if isinstance(value, SecretStr):
                    found[platform.variable(name)] = value.get_secret_value()
    from_file = dotenv_values(env_file) if env_file.is_file() else {}
    for name, value in [*from_file.items(), *os.environ.items(), *_secrets_dir().items()]:
        if value and SECRET_NAME.search(name):
            found.setdefault(name.upper(), value)
    return {name: value.strip() for name, value in found.items() if len(value.strip()) >= MIN_SECRET_CHARS}


def _secrets_dir() -> dict[str, str]:
    folder = Path(os.environ.get("SUPPORTBOT_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    values: dict[str, str] = {}
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
        for entry in entries:
            if entry.is_file() and SECRET_NAME.search(entry.name):
                values[entry.name] = entry.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass  # an unreadable secret is not configured either
    return values


def secret_in(data: bytes, secrets: Secrets) -> str | None:
    """The name of a secret whose value ``data`` holds, or None."""
    for name, value in secrets.items():
        if value.encode() in data:
            return name
    return None
