"""The Slack adapter's own settings, read from the core :class:`bot.settings.Settings` (the
environment names stay ``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``,
``SLACK_API_URL``, ``SLACK_FILES_URL``, ``SLACK_REVIEW_CHANNEL``). The rest of the adapter reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from bot.errors import ConfigError
from bot.settings import Settings


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """What the Slack adapter needs. ``app_token`` set means Socket Mode (no signing secret
    then); ``review_channel`` None means the review desk is elsewhere (Discord)."""

    bot_token: SecretStr
    api_url: str = "https://slack.com/api/"
    #: Slack's file host: files are downloaded (with the bot token) from here only.
    files_url: str = "https://files.slack.com"
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    review_channel: str | None = None

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackSettings | None:
        """None when Slack is not configured at all; :class:`ConfigError` naming every missing
        variable when it is half configured."""
        if not (settings.slack_bot_token or settings.slack_signing_secret or settings.slack_app_token):
            return None
        needed = ["slack_bot_token"]
        if settings.slack_app_token is None:
            needed.append("slack_signing_secret")
        if not settings.discord_review_channel:
            needed.append("slack_review_channel")
        settings.require("Slack", needed)
        if settings.slack_bot_token is None:  # settings.require raised already; this is for mypy
            raise ConfigError("Slack is enabled but SLACK_BOT_TOKEN is missing")
        return cls(
            bot_token=settings.slack_bot_token,
            api_url=settings.slack_api_url,
            files_url=settings.slack_files_url,
            signing_secret=settings.slack_signing_secret if settings.slack_app_token is None else None,
            app_token=settings.slack_app_token,
            review_channel=settings.slack_review_channel or None,
        )
