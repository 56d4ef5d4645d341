"""Logging set-up with a filter that masks every configured secret, as a second line of
defence: secrets are SecretStr and never formatted on purpose, but a library might echo one."""

from __future__ import annotations

import logging
import sys

from pydantic import SecretStr

from bot.settings import Settings


class SecretMask(logging.Filter):
    """Replaces any secret value in a record's final message with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                if secret in text:
                    record.exc_info = None
                    masked += " (traceback withheld: it contained a secret)"
                    break
        if masked != message:
            record.msg, record.args = masked, None
        return True


def secret_values(settings: Settings) -> list[str]:
    return [
        value.get_secret_value()
        for value in vars(settings).values()
        if isinstance(value, SecretStr) and value.get_secret_value()
    ]


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secret_values(settings)))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
