"""Slack adapter (slack-bolt AsyncApp): customer messages in, review cards and replies out.

Bolt and the Slack SDK are imported when the adapter is built (:func:`create`) or
:class:`SlackPlatform` is first named, not with the package: reading the settings
(``adapters.slack.settings``, a ``supportbot.settings`` entry point) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.slack.platform import SlackPlatform


def create(settings: object) -> SlackPlatform | None:
    """The ``supportbot.platforms`` entry point: a configured adapter, or None."""
    from adapters.slack.platform import SlackPlatform
    from bot.settings import Settings

    assert isinstance(settings, Settings)
    return SlackPlatform.from_settings(settings)


def __getattr__(name: str) -> Any:
    if name == "SlackPlatform":
        return importlib.import_module("adapters.slack.platform").SlackPlatform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SlackPlatform", "create"]
