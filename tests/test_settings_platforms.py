"""Each platform adapter owns its settings (``SLACK_*`` in ``adapters/slack/settings.py``,
``DISCORD_*`` in ``adapters/discord/settings.py``), and an operator notices no difference: the same
variable names, read from the environment, the same ``.env`` file and the same secrets directory;
secrets stay hidden; a half-configured platform is one line naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings, SlackVariables
from bot.cli_ops import EXIT_CONFIG
from bot.errors import ConfigError
from bot.settings import Settings, load_settings
from tests.processes import supportbot


def test_the_platforms_read_their_variables_from_the_environment_the_env_file_and_the_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SLACK_SIGNING_SECRET").write_text("signing-from-a-file")
    (tmp_path / ".env").write_text("DISCORD_BOT_TOKEN=discord-from-dotenv\nDISCORD_REVIEW_CHANNEL=42\n")
    monkeypatch.setenv("SUPPORTBOT_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    slack = SlackSettings.from_settings(settings)
    discord = DiscordSettings.from_settings(settings)
    assert slack is not None and discord is not None
    assert slack.bot_token.get_secret_value() == "xoxb-from-the-environment"
    assert slack.signing_secret is not None and slack.signing_secret.get_secret_value() == "signing-from-a-file"
    assert slack.review_channel is None, "the desk is on Discord, so Slack needs no review channel"
    assert discord.bot_token.get_secret_value() == "discord-from-dotenv" and discord.review_channel_id == 42
    shown = repr(settings.platforms)
    assert "xoxb-from" not in shown and "signing-from" not in shown and "discord-from" not in shown


def test_slack_needs_a_review_channel_unless_discord_hosts_the_desk() -> None:
    half = Settings(_env_file=None, slack_bot_token="xoxb-1", slack_signing_secret="s-1")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"^Slack is enabled but these settings are missing: SLACK_REVIEW_CHANNEL$"):
        SlackSettings.from_settings(half)
    with_discord_desk = Settings(  # type: ignore[call-arg]
        _env_file=None, slack_bot_token="xoxb-1", slack_signing_secret="s-1", discord_review_channel="42"
    )
    assert SlackSettings.from_settings(with_discord_desk) is not None
    assert with_discord_desk.platform(SlackVariables).bot_token is not None


def test_a_half_configured_or_invalid_platform_is_a_configuration_error_naming_the_variable(tmp_path: Path) -> None:
    half = supportbot(tmp_path, "run", MOONSHOT_API_KEY="sk-test", SLACK_BOT_TOKEN="xoxb-1")
    assert half.returncode == EXIT_CONFIG, half.stderr
    assert "Slack is enabled but these settings are missing: SLACK_SIGNING_SECRET, SLACK_REVIEW_CHANNEL" in half.stderr
    assert "xoxb-1" not in half.stderr

    invalid = supportbot(tmp_path, "run", MOONSHOT_API_KEY="sk-test", DISCORD_PENDING_INDICATOR="fireworks")
    assert invalid.returncode == EXIT_CONFIG, invalid.stderr
    assert "DISCORD_PENDING_INDICATOR: Value error, must be one of: reaction, typing, none" in invalid.stderr
