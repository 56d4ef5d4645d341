"""The playground's own settings (``PLAYGROUND_*``), read apart from the core's.

``PLAYGROUND_ENABLED`` (default true) lets the playground open by itself when no chat platform
is configured; the Docker image sets it to false. ``PLAYGROUND_TOKEN`` makes the page available
next to a configured platform, for agents who know the token.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlaygroundSettings(BaseSettings):
    """``PLAYGROUND_ENABLED`` and ``PLAYGROUND_TOKEN``."""

    model_config = SettingsConfigDict(
        env_prefix="PLAYGROUND_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    enabled: bool = True
    token: SecretStr | None = None
