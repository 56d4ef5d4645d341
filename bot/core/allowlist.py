"""Which Slack workspaces and Discord servers the bot serves (an operator's decision, in settings).

A message from a workspace or server not on its list is acknowledged and dropped before anything is
stored: no conversation, no card, no model call. It is counted (``messages_ignored_workspace``) and
logged once per workspace or server, never per message. An empty list serves everyone (as before
the lists existed); production should set them.

The workspace is the one the core sees in :attr:`bot.events.ThreadRef.workspace`: the event's team
id on Slack (in a Slack Connect channel, the writer's own team, so list partner teams too), the
guild id on Discord. Discord direct messages (workspace ``@me``) are served unless
``DISCORD_ALLOW_DMS=false``. Other platforms (the playground, the test desk) are not filtered.
"""

from __future__ import annotations

import logging
from collections import Counter

from bot.events import ThreadRef
from bot.settings import Settings

log = logging.getLogger(__name__)

#: The workspace of a Discord direct message (no guild).
DISCORD_DM = "@me"


def _ids(listed: str) -> frozenset[str]:
    return frozenset(part.strip() for part in listed.replace(" ", ",").split(",") if part.strip())


class WorkspaceAllowlist:
    """Decides from a thread's workspace whether the bot serves it."""

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self._listed = {
            "slack": _ids(settings.slack_workspace_allowlist),
            "discord": _ids(settings.discord_guild_allowlist),
        }
        self._discord_dms = settings.discord_allow_dms
        self._counters = counters
        self._reported: set[tuple[str, str]] = set()

    def allows(self, thread: ThreadRef) -> bool:
        """True when ``thread``'s workspace is served; otherwise count (and log once) the refusal."""
        if self._served(thread):
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

    def _served(self, thread: ThreadRef) -> bool:
        if thread.platform == "discord" and thread.workspace == DISCORD_DM:
            return self._discord_dms
        listed = self._listed.get(thread.platform)
        return not listed or thread.workspace in listed
