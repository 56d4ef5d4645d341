"""Who a Slack user is: the profile e-mail (``users.info``) and user-group membership
(``usergroups.list``), each cached for a while so a busy channel costs few Web API calls."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import wire

log = logging.getLogger(__name__)

#: How long a user's e-mail (or its absence) is remembered.
EMAIL_TTL = 600.0
#: How long the user-group membership list is remembered.
GROUPS_TTL = 60.0
#: A lookup made while Slack waits for an ack is bounded by this.
LOOKUP_TIMEOUT = 1.0
_EMAIL_CACHE_SIZE = 10_000


class SlackDirectory:
    """E-mails and user groups, looked up through the Web API and cached.

    The e-mail needs the ``users:read.email`` scope; without it Slack answers ``users.info``
    with no ``profile.email`` (or ``missing_scope``). Then the e-mail is empty and that is
    logged once, not per message.
    """

    def __init__(self, client: AsyncWebClient, *, email_ttl: float = EMAIL_TTL, groups_ttl: float = GROUPS_TTL) -> None:
        self._client = client
        self._email_ttl = email_ttl
        self._groups_ttl = groups_ttl
        self._emails: dict[str, tuple[float, str]] = {}
        self._groups: tuple[float, dict[str, frozenset[str]]] = (float("-inf"), {})
        self._told_no_email = False
        self._told_no_groups = False
        self._email_scope = True

    def grant(self, scopes: str | None) -> None:
        """The token's scopes, as Slack sends them in ``x-oauth-scopes`` (None: unknown). Without
        ``users:read.email`` no ``users.info`` is asked at all: the e-mail is known to be hidden."""
        if scopes is None:
            self._email_scope = True
            return
        granted = {scope.strip() for scope in scopes.split(",")}
        self._email_scope = {"users:read", "users:read.email"} <= granted
        if not self._email_scope:
            self._no_email("the bot token lacks users:read / users:read.email")

    async def email_of(self, user_id: str) -> str:
        """The user's profile e-mail, or "" when Slack does not share it (never raises)."""
        if not user_id or not self._email_scope:
            return ""
        cached = self._emails.get(user_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._email_ttl:
            return cached[1]
        email = ""
        try:
            response = await asyncio.wait_for(self._client.users_info(user=user_id), LOOKUP_TIMEOUT)
            email = wire.parse_user_info(response.data).get("email", "")
            if not email:
                self._no_email(f"users.info shared no e-mail for {user_id}")
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            self._no_email(
                f"users.info answered {error}" + (" (add users:read.email)" if error == "missing_scope" else "")
            )
        except (TimeoutError, OSError, aiohttp.ClientError, wire.MalformedPayload) as exc:
            # Not cached: a transient failure is tried again with the next message.
            log.info("the e-mail of %s is unknown for now (%s)", user_id, type(exc).__name__)
            return ""
        if len(self._emails) >= _EMAIL_CACHE_SIZE:
            self._emails.clear()
        self._emails[user_id] = (now, email)
        return email

    def _no_email(self, why: str) -> None:
        if not self._told_no_email:
            self._told_no_email = True
            log.info(
                "Slack e-mails are not available (%s); Author.email stays empty. E-mail matching needs the "
                "users:read.email scope: see deploy/slack-manifest-email-match.yaml",
                why,
            )

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The ids of the user groups ``user_id`` belongs to (empty when Slack will not say)."""
        fetched_at, groups = self._groups
        if time.monotonic() - fetched_at > self._groups_ttl:
            try:
                response = await asyncio.wait_for(self._client.usergroups_list(include_users=True), LOOKUP_TIMEOUT)
                raw = response.get("usergroups")
                groups = {
                    str(group["id"]): frozenset(str(u) for u in group.get("users") or [])
                    for group in (raw if isinstance(raw, list) else [])
                    if isinstance(group, dict) and isinstance(group.get("id"), str)
                }
            except SlackApiError as exc:
                if not self._told_no_groups:
                    self._told_no_groups = True
                    log.info(
                        "user groups unavailable (%s); approver lists use user ids only", exc.response.get("error")
                    )
                groups = {}
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.info("user groups unknown for now (%s)", type(exc).__name__)
                return frozenset(group for group, members in groups.items() if user_id in members)
            self._groups = (time.monotonic(), groups)
        return frozenset(group for group, members in groups.items() if user_id in members)
