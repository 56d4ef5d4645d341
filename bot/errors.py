"""The one error hierarchy of supportbot.

::

    SupportbotError
    ├── ConfigError            settings missing or invalid at start-up (names each variable)
    ├── PolicyError            the policy file is invalid (each problem names line and field)
    ├── KimiError              the model API failed
    │   ├── KimiRetryableError     429 rate limit / overload, 5xx, timeouts (retried with backoff)
    │   └── KimiFatalError         bad key, quota exhausted, content filter, bad request (not retried)
    ├── DraftingError          the drafting loop could not produce a draft
    └── ImportFailed           ``supportbot orders import`` rejected a file (nothing imported)

Tool failures are :class:`tools.ToolError` (``tools/`` imports nothing of the core); the
drafting agent turns them into a short structured error the model can explain. Messages never
contain secrets.
"""

from __future__ import annotations


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
    """A transient failure: rate limit, overload, server error or timeout."""

    def __init__(
        self, message: str, *, status: int | None = None, kind: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, kind=kind)
        self.retry_after = retry_after


class KimiFatalError(KimiError):
    """A failure retrying cannot fix: authentication, quota, content filter, bad request."""


class DraftingError(SupportbotError):
    """The drafting agent could not produce a reply (the model failed or broke the rules)."""


class ImportFailed(SupportbotError):
    """An orders file was rejected; nothing from it was imported."""
