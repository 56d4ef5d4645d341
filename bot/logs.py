"""Logging: JSON lines or text, one event per step, secrets masked, personal data redacted
when the policy asks.

``LOG_FORMAT`` is ``json`` (one JSON object a line, the Docker image's default) or ``text``
(the default elsewhere). A step is logged with :func:`log_event`::

    log_event(log, "draft_ready", conversation=conv.id, draft=draft.id, platform="slack", model=model)

In JSON this is ``{"ts": ..., "level": "INFO", "logger": ..., "event": "draft_ready",
"conversation": ..., "draft": ..., "platform": ..., "model": ...}``; in text
``... INFO bot.core: draft_ready conversation=... draft=... platform=slack model=...``.

Every configured secret is replaced by ``***`` in the final line, whatever put it there (a
second line of defence: secrets are SecretStr and never formatted on purpose). When the
policy's ``[logs] redact_personal_data`` is true, the fields that carry customer data
(:data:`PERSONAL_FIELDS`) are replaced by ``[redacted]`` and e-mail addresses and phone
numbers are masked in every message; ids (conversation, draft, platform) are kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError
from bot.settings import Settings

EVENT_FIELDS = "supportbot_fields"
PERSONAL_FIELDS = frozenset(
    {"customer", "customer_name", "author", "email", "phone", "text", "customer_text", "reply", "draft_text"}
)
REDACTED = "[redacted]"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w/])\+?\d[\d ().-]{7,}\d(?![\w/])")
_QUIET = ("aiohttp.access", "alembic.runtime.plugins", "alembic.runtime.migration")
# Bolt warns on every start that the client's token wins over SLACK_BOT_TOKEN, which is how
# the adapter is meant to be built; nothing for an operator to do, so it is not shown.
_HARMLESS = {"slack_bolt.AsyncApp": ("As you gave `client` as well, `token` will be unused.",)}

_redact_personal: Callable[[], bool] = lambda: False  # noqa: E731 - replaced by follow_policy


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    conversation: str | None = None,
    draft: str | None = None,
    platform: str | None = None,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log one step (``message_received``, ``draft_ready``, ``card_posted``, ``decision``,
    ``refund_executed``, ``reply_sent``, ...) with the ids that tie it to a conversation."""
    if not logger.isEnabledFor(level):
        return
    ids = {"conversation": conversation, "draft": draft, "platform": platform}
    payload = {k: v for k, v in ids.items() if v is not None} | fields
    logger.log(level, event, extra={EVENT_FIELDS: payload})


def follow_policy(redact: Callable[[], bool]) -> None:
    """Ask ``redact()`` on every record whether personal data must be redacted (the app passes
    ``lambda: policy_store.current.logs.redact_personal_data``, so a reload takes effect)."""
    global _redact_personal  # noqa: PLW0603 - one process-wide switch, like logging itself
    _redact_personal = redact


def redact_text(text: str) -> str:
    return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, text))


class _Masking:
    """Secrets out of every line; personal data out when the policy asks."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = dict(getattr(record, EVENT_FIELDS, None) or {})
        if _safe_redact():
            for name, value in list(fields.items()):
                if name in PERSONAL_FIELDS and value:
                    fields[name] = REDACTED
        return fields

    @staticmethod
    def message(record: logging.LogRecord) -> str:
        message = record.getMessage()
        return redact_text(message) if _safe_redact() else message


def _safe_redact() -> bool:
    try:
        return bool(_redact_personal())
    except Exception:  # a broken switch must never stop logging; redacting is the safe side
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event (or message), the event's fields, and
    the traceback as ``exc``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._masking = _Masking(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        key = "event" if hasattr(record, EVENT_FIELDS) else "message"
        entry[key] = self._masking.message(record)
        for name, value in self._masking.fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._masking.mask(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """``2026-01-02 10:00:00,123 INFO bot.core: draft_ready conversation=... draft=...``"""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._masking = _Masking(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = self._masking.message(record)
        fields = self._masking.fields(record)
        if fields:
            record.message += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return self._masking.mask(super().format(record))


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or any(c in text for c in ' "=\n') else text


class _DropHarmless(logging.Filter):
    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__()
        self._messages = tuple(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self._messages))


def secret_values(settings: Settings) -> list[str]:
    """Every secret value to keep out of the logs: the core's, each platform's, and the environment's."""
    return [
        value.get_secret_value()
        for source in (settings, *settings.platforms.values())
        for value in vars(source).values()
        if isinstance(value, SecretStr) and value.get_secret_value()
    ] + [value for name, value in os.environ.items() if name.endswith(("_TOKEN", "_SECRET", "_KEY")) and value]


class LogSettings(BaseSettings):
    """``LOG_FORMAT`` (environment or ``.env``), read apart from the core's settings."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    log_format: Literal["json", "text"] = "text"


def log_format() -> str:
    """``LOG_FORMAT``: ``json`` or ``text`` (default). A ConfigError for anything else."""
    try:
        return LogSettings().log_format
    except ValidationError:
        raise ConfigError("LOG_FORMAT must be json or text") from None


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    secrets = secret_values(settings)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if log_format() == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name, messages in _HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless(messages))


def log_startup(
    logger: logging.Logger,
    *,
    address: str,
    policy_file: str,
    policy_version: str,
    policy_found: bool,
    platforms: Sequence[str],
    desk: str,
    models: dict[str, str],
) -> None:
    """The one start-up line: where it serves, which policy is in force, platforms, models."""
    fields: dict[str, Any] = {
        "address": address,
        "policy_file": policy_file if policy_found else f"{policy_file} (not found: built-in defaults)",
        "policy_version": policy_version,
        "platforms": ",".join(platforms) or "none",
        "review_desk": desk,
    } | {f"model_{task}": model for task, model in models.items() if model}
    log_event(logger, "started", **fields)
