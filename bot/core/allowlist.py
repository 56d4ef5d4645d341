"""Which workspaces the bot serves (an operator's decision, in each platform's settings).

A message from a workspace the operator did not list is acknowledged and dropped before anything is
stored: no conversation, no card, no model call. It is counted (``messages_ignored_workspace``) and
logged once per workspace, never per message. An empty list serves everyone (as before the lists
existed); production should set them.

The workspace is the one the core sees in :attr:`bot.events.ThreadRef.workspace`; what a platform
lists is its settings' call (:meth:`bot.settings.PlatformSettings.serves`: ``SLACK_WORKSPACE_ALLOWLIST``,
``DISCORD_GUILD_ALLOWLIST`` and ``DISCORD_ALLOW_DMS``). Platforms without settings of their own (the
playground, the test desk) are not filtered.
"""

from __future__ import annotations

import logging
from collections import Counter

from bot.events import ThreadRef
from bot.settings import Settings

log = logging.getLogger(__name__)


class WorkspaceAllowlist:
    """Decides from a thread's workspace whether the bot serves it."""

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self._platforms = settings.platforms
        self._counters = counters
        self._reported: set[tuple[str, str]] = set()

    def allows(self, thread: ThreadRef) -> bool:
        """True when ``thread``'s workspace is served; otherwise count (and log once) the refusal."""
        own = self._platforms.get(thread.platform)
        if own is None or own.serves(thread.workspace):
            return True
        self._counters["messages_ignored_workspace"] += 1
        key = (thread.platform, thread.workspace)
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "ignoring messages from %s workspace %s: it is not on the allowlist (logged once per workspace)",
                thread.platform,
                thread.workspace,
            )
        return False
