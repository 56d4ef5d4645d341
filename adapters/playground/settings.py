"""The playground's own settings (``PLAYGROUND_*``), read apart from the core's.

``PLAYGROUND_ENABLED`` (default true) lets the playground open by itself when no chat platform
is configured; the Docker image sets it to false. ``PLAYGROUND_TOKEN`` makes the page available
next to a configured platform, for agents who know the token. ``PLAYGROUND_APPROVER`` is the
approver id (a Slack or Discord user id from the policy's ``[approvers]`` lists) the token's
holder decides as; next to a live review desk the core takes no decision from the playground
without one. ``PLAYGROUND_ALLOWED_HOSTS`` names the host names (comma-separated) the page may be
reached under besides localhost and ``HOST`` (a reverse proxy's public name).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class PlaygroundSettings(BaseSettings):
    """``PLAYGROUND_ENABLED``, ``PLAYGROUND_TOKEN``, ``PLAYGROUND_APPROVER``, ``PLAYGROUND_ALLOWED_HOSTS``."""

    model_config = SettingsConfigDict(
        env_prefix="PLAYGROUND_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    enabled: bool = True
    token: SecretStr | None = None
    approver: str = ""
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value
