"""Slack adapter (slack-bolt AsyncApp): customer messages in, review cards and replies out."""

from adapters.slack.platform import SlackPlatform


def create(settings: object) -> SlackPlatform | None:
    """The ``supportbot.platforms`` entry point: a configured adapter, or None."""
    from bot.settings import Settings

    assert isinstance(settings, Settings)
    return SlackPlatform.from_settings(settings)


__all__ = ["SlackPlatform", "create"]
