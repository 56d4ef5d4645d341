"""Money: a decimal amount with two places and its currency, parsed once, formatted once.

An amount enters the program as text (a file an operator imports, an argument the model wrote,
an amount an agent typed on the card) through :meth:`Money.parse`, and is shown, to the model,
on a card or in the audit trail, through :meth:`Money.format`. THE refund rule and the order
backends count in integer cents (:attr:`Money.cents`, :meth:`Money.of_cents`). Every currency is
treated as having two decimal places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from tools.json_input import quoted

_CENT = Decimal("0.01")
_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,12}|[0-9]{1,3}(?:,[0-9]{3}){1,3})(?:\.(?P<frac>[0-9]{1,2}))?")
#: The digits a decimal may have before (12, as ``_AMOUNT``) and after the point before it is
#: refused unwritten: ``format(Decimal("1e999999999"), "f")`` would be a gigabyte of zeros.
_WHOLE_DIGITS, _FRACTION_DIGITS = 12, 20


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency (``currency`` "" when the context says which)."""

    amount: Decimal
    currency: str = ""

    def __post_init__(self) -> None:
        if not self.amount.is_finite() or self.amount != self.amount.quantize(_CENT):
            raise ValueError(f"not an amount with at most 2 decimal places ({self.amount})")
        object.__setattr__(self, "amount", self.amount.quantize(_CENT))

    @classmethod
    def of_cents(cls, cents: int, currency: str = "") -> Money:
        return cls(Decimal(cents).scaleb(-2), currency)

    @classmethod
    def parse(cls, value: str | int | Decimal, currency: str = "") -> Money:
        """A non-negative decimal amount such as ``"49.90"``, ``"49.9"``, ``"49"`` or
        ``"1,234.50"`` (commas only between groups of three digits). Accepts a string, an
        ``int`` (whole units) or a ``Decimal`` (as ``json`` parses numbers with
        ``parse_float=Decimal``), never a float. Raises ``ValueError`` naming the value."""
        text = _text(value)
        match = _AMOUNT.fullmatch(text)
        if match is None:
            if re.fullmatch(r"[0-9,]+\.[0-9]{3,}", text):
                raise ValueError(f"more than 2 decimal places ({quoted(text)})")
            if text.startswith("-"):
                raise ValueError(f"must not be negative ({quoted(text)})")
            raise ValueError(f"not a decimal amount ({quoted(text)})")
        whole = match.group("whole").replace(",", "")
        return cls(Decimal(f"{whole}.{(match.group('frac') or '').ljust(2, '0')}"), currency)

    @property
    def cents(self) -> int:
        return int(self.amount.scaleb(2))

    def format(self, *, currency: bool = True) -> str:
        """``49.90 USD`` (``49.90`` without its currency, or when it has none)."""
        number = f"{self.amount:.2f}"
        return f"{number} {self.currency}" if currency and self.currency else number

    def __str__(self) -> str:
        return self.format()


def _text(value: str | int | Decimal) -> str:
    if isinstance(value, bool):
        raise ValueError(f"not a decimal amount ({value!r})")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a decimal amount ({str(value)!r})")
        if value and value.adjusted() >= _WHOLE_DIGITS:
            raise ValueError(f"not a decimal amount ({str(value)!r} is too large)")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -_FRACTION_DIGITS:
            raise ValueError(f"more than 2 decimal places ({str(value)!r})")
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    return value.strip()
