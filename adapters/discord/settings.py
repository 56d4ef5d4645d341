"""The Discord adapter's own settings, read from the core :class:`bot.settings.Settings` (the
environment names stay ``DISCORD_BOT_TOKEN``, ``DISCORD_API_URL``, ``DISCORD_CDN_URLS``, ``DISCORD_REVIEW_CHANNEL``,
``DISCORD_PENDING_INDICATOR``). The rest of the adapter reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from bot.errors import ConfigError
from bot.settings import Settings

PENDING_INDICATORS = frozenset({"reaction", "typing", "none"})


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    """What the Discord adapter needs; ``review_channel_id`` None means no review desk here."""

    bot_token: SecretStr
    api_url: str = "https://discord.com/api/v10"
    review_channel_id: int | None = None
    pending_indicator: str = "reaction"
    #: Discord's CDN: attachments are downloaded from these origins only.
    cdn_urls: tuple[str, ...] = ("https://cdn.discordapp.com", "https://media.discordapp.net")

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordSettings | None:
        """None when ``DISCORD_BOT_TOKEN`` is not set; :class:`ConfigError` naming the variable
        when a value is unusable."""
        token = settings.discord_bot_token
        if token is None or not token.get_secret_value():
            return None
        if settings.discord_pending_indicator not in PENDING_INDICATORS:
            raise ConfigError(
                f"DISCORD_PENDING_INDICATOR must be one of {', '.join(sorted(PENDING_INDICATORS))}, "
                f"got {settings.discord_pending_indicator!r}"
            )
        return cls(
            bot_token=token,
            api_url=settings.discord_api_url.rstrip("/"),
            review_channel_id=review_channel_id(settings.discord_review_channel),
            pending_indicator=settings.discord_pending_indicator,
            cdn_urls=tuple(settings.discord_cdn_urls.replace(",", " ").split()),
        )


def review_channel_id(value: str | None) -> int | None:
    """``DISCORD_REVIEW_CHANNEL`` as a channel id; ConfigError for anything but a number."""
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit():
        raise ConfigError(
            f"DISCORD_REVIEW_CHANNEL must be a channel id (a number: enable Developer Mode, then "
            f"right-click the channel > Copy Channel ID), got {value!r}"
        )
    return int(value.strip())
