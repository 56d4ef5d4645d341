"""The built-in policy as a TOML file: what is in force when there is no policy file (the
playground's policy editor starts from it). Amounts are written as the strings a manager
would type ("500.00"), never as the cents they are kept in."""

from __future__ import annotations

import json

from pydantic import BaseModel

from bot.policy import Policy, RefundsSection
from tools.money import Money

HEADER = (
    "# No policy file yet: these are the built-in defaults in force.\n"
    "# Every field is optional; edit and save to create the file (policy.example.toml explains each).\n"
)
#: The refund fields kept in cents (the ones its amount validator reads).
_AMOUNTS = frozenset(RefundsSection.__pydantic_decorators__.field_validators["_money"].info.fields)


def defaults_text() -> str:
    """The default :class:`bot.policy.Policy` as TOML that parses back to it."""
    policy = Policy()
    parts = [HEADER]
    for name in Policy.model_fields:
        section = getattr(policy, name)
        assert isinstance(section, BaseModel)
        parts.append(f"\n[{name}]\n")
        for key, value in section.model_dump(mode="json").items():
            parts.append(_line(name, key, value))
    return "".join(parts)


def _line(section: str, key: str, value: object) -> str:
    if section == "refunds" and key in _AMOUNTS and isinstance(value, int):
        return f'{key} = "{Money.of_cents(value).format()}"\n'
    if value is None or value == {}:
        return f"# {key}: not set\n"
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}\n"
    return f"{key} = {json.dumps(value, ensure_ascii=False)}\n"
