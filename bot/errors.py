"""The one error hierarchy of supportbot.

::

    SupportbotError
    ├── ConfigError            settings missing or invalid at start-up (names each variable)
    ├── PolicyError            the policy file is invalid (each problem names line and field)
    ├── KimiError              the model API failed (``kind`` is Moonshot's ``error.type``)
    │   ├── KimiRetryableError     transient: the client retries it
    │   │   ├── KimiRateLimited        429 rate_limit_reached_error / engine_overloaded_error: wait as
    │   │   │                          Kimi says (``retry_after``) plus jitter; spends no retry budget
    │   │   ├── KimiServerError        5xx, a malformed or cut stream: exponential backoff
    │   │   ├── KimiTimeout            timeouts and connection failures: exponential backoff
    │   │   └── KimiCircuitOpen        the model's breaker is open and no fallback can take the call
    │   └── KimiFatalError         retrying cannot fix it
    │       ├── KimiQuotaExhausted     exceeded_current_quota_error: alert, drafts wait or fail visibly
    │       ├── KimiContentFiltered    content_filter: the draft fails with that reason on its card
    │       ├── KimiContextTooLong     prompt + max_tokens over the window: shrink the prompt, retry once
    │       ├── KimiAuthError          401/403: bad key (fatal at start-up)
    │       ├── KimiModelNotFound      404: the model id does not exist (start-up lists the ids)
    │       └── KimiBadRequest         any other 400
    ├── PlatformError          a port call (reply, card, notice) failed; adapters translate their SDK's errors
    │   ├── PlatformUnavailable    the platform could not be reached or failed (5xx, timeout): transient
    │   ├── PlatformRateLimited    the platform asked to slow down past its client's retries: transient
    │   ├── PlatformNotFound       the thread, channel or card the call names is gone
    │   └── PlatformRefused        the platform refused the call (permissions, a bad request): retrying
    │                              will not fix it
    ├── DraftingError          the drafting loop could not produce a draft
    ├── FileNotFetched         a customer's file was refused or not downloaded (``reason`` is for the card)
    └── ImportFailed           ``supportbot orders import`` rejected a file (nothing imported)

Tool failures are :class:`tools.ToolError` (``tools/`` imports nothing of the core); the
drafting agent turns them into a short structured error the model can explain. Messages never
contain secrets.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar


class SupportbotError(Exception):
    """Base class of every error supportbot raises on purpose."""


class ConfigError(SupportbotError):
    """Settings are missing or invalid. The message is meant for the operator, as is."""


class PolicyError(SupportbotError):
    """The managers' policy file is invalid. ``problems`` holds one line per error, each naming
    the line number and the field."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class KimiError(SupportbotError):
    """The Kimi API call failed. ``kind`` is Moonshot's ``error.type`` when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "") -> None:
        self.status = status
        self.kind = kind
        super().__init__(message)


class KimiRetryableError(KimiError):
    """A transient failure; ``retry_after`` is the wait Kimi named, when it named one."""

    def __init__(
        self, message: str, *, status: int | None = None, kind: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, kind=kind)
        self.retry_after = retry_after


class KimiRateLimited(KimiRetryableError):
    """The account hit a limit (``rate_limit_reached_error``) or Kimi is overloaded
    (``engine_overloaded_error``). Waiting fixes it; it never spends a draft's retry budget."""

    @property
    def overloaded(self) -> bool:
        return self.kind == "engine_overloaded_error"


class KimiServerError(KimiRetryableError):
    """A 5xx, or a body or stream that was malformed or cut short."""


class KimiTimeout(KimiRetryableError):
    """No answer in time, or Kimi could not be reached."""


class KimiCircuitOpen(KimiRetryableError):
    """The model failed repeatedly and is skipped for a cool-down; no fallback could take over.
    ``retry_after`` is when the breaker lets a trial call through."""


class KimiFatalError(KimiError):
    """A failure retrying cannot fix: authentication, quota, content filter, bad request."""


class KimiQuotaExhausted(KimiFatalError):
    """The account's balance or quota is used up (``exceeded_current_quota_error``, 429 or 403).
    The core raises one alert card (at most hourly); drafts wait or fail visibly."""


class KimiContentFiltered(KimiFatalError):
    """Kimi's moderation rejected the input or the output (400 ``content_filter``)."""


class KimiContextTooLong(KimiFatalError):
    """The prompt plus ``max_tokens`` exceeds the model's context window."""


class KimiAuthError(KimiFatalError):
    """The API key is wrong, for another platform (.ai vs .cn) or not allowed (401/403)."""


class KimiModelNotFound(KimiFatalError):
    """The model id does not exist or the key may not use it (404 ``resource_not_found_error``)."""


class KimiBadRequest(KimiFatalError):
    """Kimi rejected the request (400 ``invalid_request_error``) for another reason."""


class PlatformError(SupportbotError):
    """A call through a port (:class:`bot.ports.CustomerChannel`, :class:`bot.ports.ReviewDesk`)
    failed. Adapters translate their SDK's exceptions into one of the subclasses at the port
    boundary, so the core catches these and nothing broader. ``platform`` names the platform; the
    message says what failed in the platform's own words ("Slack: channel_not_found")."""

    def __init__(self, platform: str, message: str) -> None:
        super().__init__(message)
        self.platform = platform


class PlatformUnavailable(PlatformError):
    """The platform could not be reached, timed out or failed on its side (5xx)."""


class PlatformNotFound(PlatformError):
    """The thread, channel, message or card the call names does not exist (any more)."""


class PlatformRefused(PlatformError):
    """The platform refused the call: missing permission or scope, a request it rejects."""


class DirectMessageRefused(PlatformRefused):
    """A direct message to the user cannot be opened (they accept none from the bot: Discord's
    50007, Slack's ``cannot_dm_bot``/``user_disabled``). Retrying does not help."""


class PlatformRateLimited(PlatformError):
    """Slack or Discord asked the bot to slow down and its client library's own retries are
    used up (or the wait it asked for is too long to sit through). Transient: the core tries
    again later and says so in one warning, without a traceback. ``retry_after`` is the wait
    the platform named, in seconds, when it named one."""

    def __init__(self, platform: str, retry_after: float | None = None) -> None:
        wait = f" (it asked to wait {retry_after:.1f} s)" if retry_after is not None else ""
        super().__init__(platform, f"{platform} rate limited the bot{wait}")
        self.retry_after = retry_after


class DraftingError(SupportbotError):
    """The drafting agent could not produce a reply (the model failed or broke the rules)."""


class FileNotFetched(SupportbotError):
    """A customer's file was not downloaded: refused (not on the platform's file host, over the
    size cap, redirected) or failed (an HTTP error, the deadline). ``reason`` is what the review
    card says after the file's name, e.g. ``"over 5 MB"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImportFailed(SupportbotError):
    """An orders file was rejected; nothing from it was imported."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def translating(
    translate: Callable[[Exception], PlatformError | None],
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """A decorator for an adapter's port methods: an SDK exception ``translate`` knows leaves as
    the port's :class:`PlatformError` (raised from it, so the cause stays in the traceback);
    anything else, a bug, passes through as it is."""

    def decorate(call: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(call)
        async def told(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                translated = translate(exc)
                if translated is None:
                    raise
                raise translated from exc

        return told

    return decorate
