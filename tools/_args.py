"""Shared configuration of the tools' argument models."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict


def _drop_description(schema: dict[str, Any]) -> None:
    # The model's docstring is for developers; the tool's description already tells the model.
    schema.pop("description", None)


ARGS_CONFIG = ConfigDict(str_strip_whitespace=True, json_schema_extra=_drop_description)
"""Strip surrounding whitespace from strings; keep the class docstring out of the JSON schema."""
