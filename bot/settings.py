"""Operator settings: environment variables, a ``.env`` file, or a secrets directory.

The variable names are part of the interface (see README): operators and tests rely on them.
Secrets are :class:`pydantic.SecretStr` and never logged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

DEFAULT_SECRETS_DIR = "/run/secrets"


class Settings(BaseSettings):
    """Every setting the bot reads. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    moonshot_api_key: SecretStr | None = None
    kimi_base_url: str = "https://api.moonshot.ai/v1"
    kimi_model: str = "kimi-k2.5"
    kimi_fallback_model: str | None = None
    kimi_timeout_seconds: float = 120.0
    kimi_max_retries: int = 4
    # The account's limits (README: tiers). Defaults: 90 % of tier 1 (50 / 200 / 2,000,000).
    kimi_max_concurrency: int = Field(45, ge=1)
    kimi_rpm: int = Field(180, ge=1)
    kimi_tpm: int = Field(1_800_000, ge=1)
    kimi_instances: int = Field(1, ge=1)  # instances sharing one account: each takes 1/N of the limits
    kimi_max_tokens: int = Field(16384, ge=1)  # sent when a caller names none (TPM charges it)
    kimi_rate_limit_max_wait_seconds: float = 600.0
    kimi_breaker_failures: int = Field(5, ge=1)
    kimi_breaker_cooldown_seconds: float = 30.0
    kimi_prices: str = ""  # JSON {"model": [cache_hit, cache_miss, output]} USD per 1M, over the defaults
    kimi_default_price: str = ""  # JSON [hit, miss, out] for unlisted models; empty: refuse them at start-up
    kimi_web_search_fee_usd: float = 0.005
    kimi_check_models: bool = True  # GET /v1/models at start-up
    kimi_exact_tokens: bool = False  # charge TPM with Kimi's token-count endpoint (one more request per call)

    database_url: str = "sqlite+aiosqlite:///./supportbot.db"
    policy_file: Path = Path("./policy.toml")
    policy_reload_seconds: float = 2.0

    # Work in flight (a draft, a card post, a reply) is leased for this long and renewed while
    # its worker lives; after a crash another worker takes it over once the lease expires.
    work_lease_seconds: float = 10.0
    sweep_seconds: float = 1.0
    # On SIGTERM, work in flight gets this long to finish before it is cancelled (and resumed by
    # the next run); keep it under the orchestrator's kill timeout (Docker's is 10 s by default).
    shutdown_grace_seconds: float = Field(8.0, ge=0)
    # The draft forms on its review card as Kimi streams it, updated at most every
    # STREAM_UPDATE_SECONDS (Slack's chat.update and Discord's edits are rate-limited).
    stream_drafts_to_card: bool = False
    stream_update_seconds: float = 1.0
    drafting_concurrency: int = 32
    delivery_concurrency: int = 8

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_review_channel: str | None = None

    discord_bot_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_review_channel: str | None = None
    discord_pending_indicator: str = "reaction"

    orders_backend: str = "sql"
    orders_api_url: str | None = None
    orders_api_token: SecretStr | None = None

    host: str = "0.0.0.0"  # noqa: S104 - a container serves on all interfaces
    port: int = 8080
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection whose request headers are not complete this long after its first byte"
        " (or after it opened) is closed: a slow-loris cannot hold it.",
    )
    http_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A request whose body has not fully arrived this long after its headers is closed.",
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        description="Inbound connections held at once (both ports). At the cap a new one makes room by"
        " closing the oldest with incomplete headers, then idle keep-alive ones, then slow bodies; never"
        " one being answered. Lowered at start-up to what the open-files limit allows.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="When set, /metrics and the detailed /readyz are served on this port only (on"
        " METRICS_HOST), not on PORT.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="The interface METRICS_PORT listens on: loopback, or an internal interface (never publish it).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, /metrics and the detailed /readyz need 'Authorization: Bearer <token>'."
        " With neither METRICS_PORT nor METRICS_TOKEN they answer loopback peers only (not forwarded requests).",
    )
    metrics_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="The SQL-backed figures of /metrics (backlog) and /readyz (database reachable) are"
        " reused this long: a flood of scrapes runs at most one query per interval.",
    )
    log_level: str = "INFO"

    @field_validator("discord_pending_indicator")
    @classmethod
    def _indicator(cls, value: str) -> str:
        if value not in {"reaction", "typing", "none"}:
            raise ValueError("must be one of: reaction, typing, none")
        return value

    @field_validator("orders_backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value not in {"sql", "http"}:
            raise ValueError("must be 'sql' or 'http'")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _separate_metrics_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and value == info.data.get("port"):
            raise ValueError("must differ from PORT (leave it unset to serve /metrics on PORT)")
        return value

    def require(self, platform: str, names: list[str]) -> None:
        """Raise one ConfigError naming every missing variable of an enabled platform."""
        missing = [name.upper() for name in names if not getattr(self, name)]
        if missing:
            raise ConfigError(f"{platform} is enabled but these settings are missing: {', '.join(missing)}")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, ``.env`` and the secrets directory
    (``SUPPORTBOT_SECRETS_DIR``, default ``/run/secrets``, one file per variable)."""
    import os

    secrets_dir = os.environ.get("SUPPORTBOT_SECRETS_DIR", DEFAULT_SECRETS_DIR)
    kwargs: dict[str, object] = dict(overrides)
    if Path(secrets_dir).is_dir():
        kwargs["_secrets_dir"] = secrets_dir
    try:
        return Settings(**kwargs)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
