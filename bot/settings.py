"""Operator settings: environment variables, a ``.env`` file, or a secrets directory.

The variable names are part of the interface (see README): operators and tests rely on them.
Secrets are :class:`pydantic.SecretStr` and never logged.

The core's own settings are :class:`Settings`. A platform adapter owns its settings (``SLACK_*``,
``DISCORD_*``): a :class:`PlatformSettings` subclass it registers in the ``supportbot.settings``
entry-point group under its platform's name, as it registers its factory in
``supportbot.platforms``. :class:`Settings` reads every registered one from the same sources, so
the core lists them (``supportbot run --help``) and asks them the questions it has of every
platform (which workspaces are served, where the review desk is) without naming a platform.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

DEFAULT_SECRETS_DIR = "/run/secrets"
#: Where the settings are read from (pydantic-settings' init arguments), shared by the core's and the platforms'.
_SOURCES = ("_env_file", "_env_file_encoding", "_secrets_dir")

_P = TypeVar("_P", bound="PlatformSettings")


class PlatformSettings(BaseSettings):
    """A platform adapter's own settings. A subclass sets ``env_prefix`` (``SLACK_``) in its
    ``model_config``; each field reads the variable prefix + name from the environment, the same
    ``.env`` file and the same secrets directory as :class:`Settings`."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    #: What an operator sets to enable the platform, as a start-up error tells them.
    enabled_by: ClassVar[str] = ""
    #: What an operator sets to put the review desk on the platform.
    desk_set_by: ClassVar[str] = ""

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field`` (``bot_token`` on Slack is ``SLACK_BOT_TOKEN``)."""
        return (str(cls.model_config.get("env_prefix") or "") + field).upper()

    @property
    def enabled(self) -> bool:
        """Whether the operator configured this platform (set any of its credentials)."""
        return False

    @property
    def hosts_review_desk(self) -> bool:
        """Whether the operator put the review desk on this platform: another platform's adapter
        then needs no review channel of its own."""
        return False

    def serves(self, workspace: str) -> bool:
        """Whether the operator lets the bot serve ``workspace`` (a thread's
        :attr:`~bot.events.ThreadRef.workspace` on this platform): the platform's allowlist."""
        return True

    def require(self, platform: str, fields: list[str]) -> None:
        """Raise one ConfigError naming the variable of every field in ``fields`` that is not set."""
        missing = [self.variable(name) for name in fields if not getattr(self, name)]
        if missing:
            raise ConfigError(f"{platform} is enabled but these settings are missing: {', '.join(missing)}")


@functools.cache
def platform_settings_classes() -> Mapping[str, type[PlatformSettings]]:
    """Every installed adapter's settings class, by platform name (``supportbot.settings``)."""
    found: dict[str, type[PlatformSettings]] = {}
    for point in sorted(entry_points(group="supportbot.settings"), key=lambda p: p.name):
        kind = point.load()
        if not (isinstance(kind, type) and issubclass(kind, PlatformSettings)):
            raise TypeError(f"supportbot.settings entry point {point.name!r} is not a PlatformSettings class")
        found[point.name] = kind
    return found


def listed(value: str) -> frozenset[str]:
    """A list setting (comma- or space-separated ids) as its items."""
    return frozenset(value.replace(",", " ").split())


def _problems(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line naming each variable: ``DISCORD_PENDING_INDICATOR: must be …``."""
    return "; ".join(
        f"{prefix.upper()}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
    )


class Settings(BaseSettings):
    """The core's settings. Field names map to upper-case environment variables; the platforms'
    own settings come with them (:meth:`platform`, :attr:`platforms`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    _platforms: dict[str, PlatformSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        """``values`` as pydantic-settings takes them; a value named by a platform's variable
        (``slack_bot_token=…``) goes to that platform's settings. An invalid platform value is a
        :class:`ConfigError` naming its variable."""
        sources = {key: values[key] for key in _SOURCES if key in values}
        own: dict[str, dict[str, Any]] = {}
        for name, kind in platform_settings_classes().items():
            prefix = str(kind.model_config.get("env_prefix") or "").lower()
            own[name] = {
                key[len(prefix) :].lower(): values.pop(key)
                for key in list(values)
                if prefix and key.lower().startswith(prefix) and key[len(prefix) :].lower() in kind.model_fields
            }
        super().__init__(**values)
        for name, kind in platform_settings_classes().items():
            try:
                self._platforms[name] = kind(**sources, **own[name])
            except ValidationError as exc:
                raise ConfigError("invalid settings: " + _problems(exc, kind.variable(""))) from None

    @property
    def platforms(self) -> Mapping[str, PlatformSettings]:
        """Every installed platform's settings, by platform name (``slack``, ``discord``)."""
        return dict(self._platforms)

    def platform(self, kind: type[_P]) -> _P:
        """The settings of the platform whose class is ``kind``."""
        for found in self._platforms.values():
            if isinstance(found, kind):
                return found
        raise LookupError(f"{kind.__name__} is not installed (the supportbot.settings entry points)")

    moonshot_api_key: SecretStr | None = Field(None, description="Kimi API key (required)")
    kimi_base_url: str = Field(
        "https://api.moonshot.ai/v1", description="Kimi API base URL (China: https://api.moonshot.cn/v1)"
    )
    kimi_model: str = Field("kimi-k2.5", description="default model id (the policy may override it per task)")
    kimi_fallback_model: str | None = Field(
        None, description="model drafts go to while the default one's breaker is open"
    )
    kimi_timeout_seconds: float = Field(120.0, description="timeout between streamed chunks of one Kimi call")
    kimi_max_retries: int = Field(
        4, description="retries of one call on 5xx and timeouts (rate limits never spend them)"
    )
    # The account's limits (README: tiers). Defaults: 90 % of tier 1 (50 / 200 / 2,000,000).
    kimi_max_concurrency: int = Field(45, ge=1, description="Kimi calls in flight at once (the account's limit)")
    kimi_rpm: int = Field(180, ge=1, description="Kimi requests per minute the client keeps to")
    kimi_tpm: int = Field(1_800_000, ge=1, description="Kimi tokens per minute the client keeps to")
    kimi_instances: int = Field(
        1, ge=1, description="instances sharing one Kimi account: each keeps to 1/N of the limits"
    )
    kimi_max_tokens: int = Field(
        16384, ge=1, description="max_tokens sent when a caller names none (TPM is charged with it)"
    )
    kimi_rate_limit_max_wait_seconds: float = Field(
        600.0, description="the longest one call waits out 429s before it fails"
    )
    kimi_breaker_failures: int = Field(5, ge=1, description="failures in a row that open a model's circuit breaker")
    kimi_breaker_cooldown_seconds: float = Field(30.0, description="how long an open circuit breaker stays open")
    kimi_prices: str = Field(
        "", description='JSON {"model": [cache_hit, cache_miss, output]} USD per 1M tokens, over the built-in table'
    )
    kimi_default_price: str = Field(
        "", description="JSON [hit, miss, output] for models without a price; empty: such a model stops the start"
    )
    kimi_web_search_fee_usd: float = Field(0.005, description="what one $web_search call costs")
    kimi_check_models: bool = Field(True, description="check at start-up that every configured model exists")
    kimi_exact_tokens: bool = Field(
        False, description="charge TPM with Kimi's token-count endpoint instead of a local estimate (one more request)"
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///./supportbot.db",
        description="sqlite+aiosqlite:///FILE, or postgresql+asyncpg://USER:PASSWORD@HOST/DB for several instances",
    )
    policy_file: Path = Field(
        Path("./policy.toml"), description="the managers' policy file (TOML); built-in defaults when absent"
    )
    policy_reload_seconds: float = Field(2.0, description="how often the policy file is checked for changes")

    work_lease_seconds: float = Field(
        10.0,
        description="how long work in flight is leased to its worker (renewed while it lives); resumed after a crash",
    )
    sweep_seconds: float = Field(1.0, description="how often the sweeper looks for expired work")
    shutdown_grace_seconds: float = Field(
        8.0, ge=0, description="on SIGTERM, how long work in flight gets to finish (keep it under the kill timeout)"
    )
    stream_drafts_to_card: bool = Field(False, description="show the draft forming on its card as Kimi streams it")
    stream_update_seconds: float = Field(1.0, description="the streamed card is updated at most this often")
    file_download_seconds: float = Field(
        10.0, gt=0, description="the most one message's images may take to download in all; then the card says so"
    )
    retention_sweep_seconds: float = Field(
        3600.0, gt=0, description="how often the retention job purges what is older than the policy's [retention] days"
        " (and forgets delivery ids older than a week)"
    )
    drafting_concurrency: int = Field(32, description="drafts written at once (the backlog waits in SQL)")
    delivery_concurrency: int = Field(8, description="replies posted at once (in order within a thread)")

    orders_backend: str = Field("sql", description="sql (the embedded order store) or http (your shop's API)")
    orders_api_url: str | None = Field(None, description="the shop API for ORDERS_BACKEND=http")
    orders_api_token: SecretStr | None = Field(None, description="the shop API's bearer token")

    host: str = Field("0.0.0.0", description="address the HTTP server listens on")  # noqa: S104 - a container serves on all interfaces
    port: int = Field(8080, description="its port: /slack/events, /healthz, /readyz, /metrics, the playground")
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a request whose headers are not complete this long after its first byte (or after the"
        " connection opened) is closed: a slow-loris cannot hold a connection",
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request whose body has not fully arrived this long after its headers is closed"
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        description="inbound connections held at once; at the cap a new one closes the oldest with incomplete"
        " headers, then idle keep-alive ones, then slow bodies, never one being answered; lowered at start-up"
        " to what the open-files limit allows",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve /metrics and the detailed /readyz on this port only (on METRICS_HOST), not on PORT",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="the interface METRICS_PORT listens on: loopback or an internal one (never publish it)"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="/metrics and the detailed /readyz need Authorization: Bearer <token>; with neither this"
        " nor METRICS_PORT they answer loopback peers only",
    )
    metrics_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="how long the SQL-backed figures of /metrics and /readyz are reused: a flood of scrapes"
        " runs one query per interval",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

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


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, ``.env`` and the secrets directory
    (``SUPPORTBOT_SECRETS_DIR``, default ``/run/secrets``, one file per variable)."""
    import os

    secrets_dir = os.environ.get("SUPPORTBOT_SECRETS_DIR", DEFAULT_SECRETS_DIR)
    kwargs: dict[str, object] = dict(overrides)
    if Path(secrets_dir).is_dir():
        kwargs["_secrets_dir"] = secrets_dir
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + _problems(exc)) from None
