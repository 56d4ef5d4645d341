"""The model catalog from ``GET /v1/models``: context length and image support per model id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of ``GET /v1/models`` (unknown fields are ignored)."""

    id: str
    context_length: int | None = None
    supports_image_in: bool = False
    supports_video_in: bool = False
    supports_reasoning: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelInfo:
        context = raw.get("context_length")
        return cls(
            id=str(raw.get("id") or ""),
            context_length=int(context) if isinstance(context, int | float) else None,
            supports_image_in=bool(raw.get("supports_image_in")),
            supports_video_in=bool(raw.get("supports_video_in")),
            supports_reasoning=bool(raw.get("supports_reasoning")),
        )


def check_configured(catalog: dict[str, ModelInfo], configured: dict[str, str]) -> None:
    """Raise one :class:`ConfigError` naming every configured model Kimi does not serve, with the
    ids it does. ``configured`` maps where a model was configured (``KIMI_MODEL``) to its id."""
    missing = [f"{where}={model}" for where, model in configured.items() if model and model not in catalog]
    if missing:
        raise ConfigError(
            f"unknown Kimi model(s): {', '.join(missing)}; this key can use: {', '.join(sorted(catalog)) or 'none'}"
        )


def format_catalog(catalog: dict[str, ModelInfo]) -> list[str]:
    """The lines ``supportbot models`` prints."""
    lines = [f"{'model':<34} {'context':>9}  image  video  reasoning"]
    for info in sorted(catalog.values(), key=lambda m: m.id):
        context = f"{info.context_length:,}" if info.context_length else "?"
        lines.append(
            f"{info.id:<34} {context:>9}  {'yes' if info.supports_image_in else 'no':<5}  "
            f"{'yes' if info.supports_video_in else 'no':<5}  {'yes' if info.supports_reasoning else 'no'}"
        )
    return lines
