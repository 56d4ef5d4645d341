"""The Slack adapter's own settings: :class:`SlackVariables` are the operator's ``SLACK_*``
variables (registered in the ``supportbot.settings`` entry-point group, so the core reads them
from the environment, ``.env`` and the secrets directory and lists them in ``run --help``);
:class:`SlackSettings` is what the adapter runs with, checked from them. The rest of the adapter
reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bot.errors import ConfigError
from bot.settings import PlatformSettings, Settings, listed


class SlackVariables(PlatformSettings):
    """``SLACK_BOT_TOKEN`` and the rest of Slack's variables."""

    model_config = SettingsConfigDict(env_prefix="SLACK_")
    enabled_by = "SLACK_BOT_TOKEN and friends"
    desk_set_by = "SLACK_REVIEW_CHANNEL"

    bot_token: SecretStr | None = Field(None, description="Slack bot token xoxb-… (enables Slack)")
    signing_secret: SecretStr | None = Field(None, description="Slack signing secret (HTTP mode)")
    app_token: SecretStr | None = Field(None, description="Slack app token xapp-…: Socket Mode instead of HTTP mode")
    api_url: str = Field("https://slack.com/api/", description="Slack Web API (a proxy, or a test server)")
    review_channel: str | None = Field(None, description="Slack channel id where agents review drafts")
    files_url: str = Field(
        "https://files.slack.com", description="where Slack serves files; the bot token is sent there and nowhere else"
    )
    workspace_allowlist: str = Field(
        "",
        description="Slack team ids (T…, comma-separated) whose messages are served; empty serves every workspace",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token or self.signing_secret or self.app_token)

    @property
    def hosts_review_desk(self) -> bool:
        return bool(self.review_channel)

    def serves(self, workspace: str) -> bool:
        """The event's team id (in a Slack Connect channel, the writer's own team)."""
        allowed = listed(self.workspace_allowlist)
        return not allowed or workspace in allowed


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
        variable when it is half configured. Slack needs a review channel unless another platform
        hosts the review desk (``DISCORD_REVIEW_CHANNEL``)."""
        own = settings.platform(SlackVariables)
        if not own.enabled:
            return None
        needed = ["bot_token"]
        if own.app_token is None:
            needed.append("signing_secret")
        desk_elsewhere = any(p.hosts_review_desk for p in settings.platforms.values() if p is not own)
        if not desk_elsewhere:
            needed.append("review_channel")
        own.require("Slack", needed)
        if own.bot_token is None:  # own.require raised already; this is for mypy
            raise ConfigError("Slack is enabled but SLACK_BOT_TOKEN is missing")
        return cls(
            bot_token=own.bot_token,
            api_url=own.api_url,
            files_url=own.files_url,
            signing_secret=own.signing_secret if own.app_token is None else None,
            app_token=own.app_token,
            review_channel=own.review_channel or None,
        )
