"""Who a Slack user is: the profile e-mail (``users.info``), user-group membership
(``usergroups.list``) and review-channel membership (``conversations.members``); and whether a
channel is private (``conversations.info``); each cached for a while so a busy channel costs few
Web API calls."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import wire
from bot.events import Author

log = logging.getLogger(__name__)

#: How long a user's e-mail (or its absence) is remembered.
EMAIL_TTL = 600.0
#: How long the user-group membership list is remembered.
GROUPS_TTL = 60.0
#: How long the review channel's member list is remembered.
MEMBERS_TTL = 60.0
#: How long whether a channel is private is remembered.
CHANNEL_TTL = 600.0
#: Member pages read at most (200 members each).
MEMBER_PAGES = 10
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
        self._members: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._private: dict[str, tuple[float, bool | None]] = {}

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

    async def is_member(self, channel: str, user_id: str) -> bool | None:
        """Whether ``user_id`` is a member of ``channel`` (the review channel), or None when Slack
        will not say (no ``channels:read`` / ``groups:read``, or Slack unreachable)."""
        fetched_at, members = self._members.get(channel, (float("-inf"), None))
        if time.monotonic() - fetched_at > MEMBERS_TTL:
            try:
                members = await asyncio.wait_for(self._read_members(channel), LOOKUP_TIMEOUT)
            except SlackApiError as exc:
                log.info("the members of %s are unknown (%s)", channel, exc.response.get("error"))
                members = None
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.info("the members of %s are unknown for now (%s)", channel, type(exc).__name__)
                return None if members is None else user_id in members
            self._members[channel] = (time.monotonic(), members)
        return None if members is None else user_id in members

    async def person(self, user_id: str, review_channel: str) -> Author:
        """A user clicking or looking (not writing), with the facts the role classifier reads:
        their user groups and whether they are in the review channel (when there is one)."""
        member = await self.is_member(review_channel, user_id) if review_channel else None
        return Author(user_id, f"<@{user_id}>", groups=await self.groups_of(user_id), review_member=member)

    async def is_private(self, channel: str) -> bool | None:
        """Whether ``channel`` is private (:func:`wire.parse_channel_privacy`), or None when Slack
        will not say (no ``channels:read`` / ``groups:read``, or Slack unreachable)."""
        fetched_at, private = self._private.get(channel, (float("-inf"), None))
        if time.monotonic() - fetched_at <= CHANNEL_TTL:
            return private
        try:
            response = await asyncio.wait_for(self._client.conversations_info(channel=channel), LOOKUP_TIMEOUT)
            private = wire.parse_channel_privacy(response.data)
        except SlackApiError as exc:
            log.info("whether %s is private is unknown (%s)", channel, exc.response.get("error"))
            private = None
        except (TimeoutError, OSError, aiohttp.ClientError, wire.MalformedPayload) as exc:
            log.info("whether %s is private is unknown for now (%s)", channel, type(exc).__name__)
            return None
        if len(self._private) >= _EMAIL_CACHE_SIZE:
            self._private.clear()
        self._private[channel] = (time.monotonic(), private)
        return private

    async def _read_members(self, channel: str) -> frozenset[str]:
        found: set[str] = set()
        cursor = ""
        for _page in range(MEMBER_PAGES):
            response = await self._client.conversations_members(channel=channel, limit=200, cursor=cursor or None)
            raw = response.get("members")
            found.update(str(m) for m in (raw if isinstance(raw, list) else []) if isinstance(m, str))
            meta = response.get("response_metadata")
            cursor = str(meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
            if not cursor:
                break
        return frozenset(found)
