"""The Discord adapter's own settings: :class:`DiscordVariables` are the operator's
``DISCORD_*`` variables (registered in the ``supportbot.settings`` entry-point group, so the core
reads them from the environment, ``.env`` and the secrets directory and lists them in
``run --help``); :class:`DiscordSettings` is what the adapter runs with, checked from them. The
rest of the adapter reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from bot.errors import ConfigError
from bot.settings import PlatformSettings, Settings, listed

PENDING_INDICATORS = frozenset({"reaction", "typing", "none"})
#: The workspace of a direct message (no guild), as the adapter names it in a ThreadRef.
DM_WORKSPACE = "@me"


class DiscordVariables(PlatformSettings):
    """``DISCORD_BOT_TOKEN`` and the rest of Discord's variables."""

    model_config = SettingsConfigDict(env_prefix="DISCORD_")
    enabled_by = "DISCORD_BOT_TOKEN"
    desk_set_by = "DISCORD_REVIEW_CHANNEL"

    bot_token: SecretStr | None = Field(None, description="Discord bot token (enables Discord)")
    api_url: str = Field(
        "https://discord.com/api/v10", description="Discord REST API; the gateway URL is taken from it"
    )
    review_channel: str | None = Field(
        None, description="Discord staff channel id to review drafts in instead of Slack"
    )
    pending_indicator: str = Field(
        "reaction", description="what the customer sees while a draft waits: reaction, typing or none"
    )
    cdn_urls: str = Field(
        "https://cdn.discordapp.com https://media.discordapp.net",
        description="Discord's CDN origins (space- or comma-separated), the only hosts attachments come from",
    )
    guild_allowlist: str = Field(
        "", description="Discord server (guild) ids, comma-separated, whose messages are served; empty serves every one"
    )
    allow_dms: bool = Field(True, description="serve direct messages to the Discord bot")

    @field_validator("pending_indicator")
    @classmethod
    def _indicator(cls, value: str) -> str:
        if value not in PENDING_INDICATORS:
            raise ValueError("must be one of: reaction, typing, none")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token and self.bot_token.get_secret_value())

    @property
    def hosts_review_desk(self) -> bool:
        return bool(self.review_channel)

    def serves(self, workspace: str) -> bool:
        """A guild on the allowlist (every guild when it is empty); direct messages unless
        ``DISCORD_ALLOW_DMS=false``."""
        if workspace == DM_WORKSPACE:
            return self.allow_dms
        allowed = listed(self.guild_allowlist)
        return not allowed or workspace in allowed


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
        own = settings.platform(DiscordVariables)
        token = own.bot_token
        if token is None or not own.enabled:
            return None
        return cls(
            bot_token=token,
            api_url=own.api_url.rstrip("/"),
            review_channel_id=review_channel_id(own.review_channel),
            pending_indicator=own.pending_indicator,
            cdn_urls=tuple(own.cdn_urls.replace(",", " ").split()),
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
