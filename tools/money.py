"""Money as integer minor units.

Amounts travel as integer cents everywhere; they become decimal strings (``"49.90"``) only at
the edges: files an operator imports, arguments the model writes, and data shown to the model.
Every currency is treated as having two decimal places.
"""

from __future__ import annotations

import re
from decimal import Decimal

from tools.json_input import quoted

_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,12})(?:\.(?P<frac>[0-9]{1,2}))?")
#: The digits a decimal may have before (12, as ``_AMOUNT``) and after the point before it is
#: refused unwritten: ``format(Decimal("1e999999999"), "f")`` would be a gigabyte of zeros.
_WHOLE_DIGITS, _FRACTION_DIGITS = 12, 20


def parse_amount(value: str | int | Decimal) -> int:
    """The cents in a non-negative decimal amount such as ``"49.90"``, ``"49.9"`` or ``"49"``.

    Accepts a string, an ``int`` (whole units) or a ``Decimal`` (as ``json`` parses numbers
    with ``parse_float=Decimal``), never a float. Raises ``ValueError`` with a message naming
    the value otherwise.
    """
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
        text = format(value, "f")
    elif isinstance(value, int):
        text = str(value)
    else:
        text = value.strip()
    match = _AMOUNT.fullmatch(text)
    if match is None:
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", text):
            raise ValueError(f"more than 2 decimal places ({quoted(text)})")
        if text.startswith("-"):
            raise ValueError(f"must not be negative ({quoted(text)})")
        raise ValueError(f"not a decimal amount ({quoted(text)})")
    frac = (match.group("frac") or "").ljust(2, "0")
    return int(match.group("whole")) * 100 + int(frac)


def format_amount(cents: int) -> str:
    """``4990`` as ``"49.90"``."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"
