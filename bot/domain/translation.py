"""A card's translation: the customer's message and the draft in the desk's language, for agents
who do not read the customer's (bot/core/translation.py makes it; every desk shows it)."""

from __future__ import annotations

from dataclasses import dataclass

#: What a card says where a translation could not be made (the card is shown anyway).
UNAVAILABLE = "translation unavailable"


@dataclass(frozen=True, slots=True)
class Translation:
    """``customer_text`` and ``draft_text`` translated from ``source`` (the customer's language)
    into ``target`` (the desk's); ``None``: that translation is unavailable. The reply itself goes
    out in ``source``: these are for reading only."""

    source: str
    target: str
    customer_text: str | None = None
    draft_text: str | None = None

    @property
    def label(self) -> str:
        """How the card marks the translation ("Machine translation de → en")."""
        return f"Machine translation {self.source} → {self.target}"

    def customer_line(self) -> str:
        return f"{self.label}: {self.customer_text if self.customer_text is not None else UNAVAILABLE}"

    def draft_line(self) -> str:
        return f"{self.label}: {self.draft_text if self.draft_text is not None else UNAVAILABLE}"


def needs_translation(customer: str | None, desk: str) -> bool:
    """The customer's language is known and is not the desk's (``pt-br`` is ``pt``'s)."""
    if not desk or not customer:
        return False
    return customer.split("-")[0].lower() != desk.split("-", maxsplit=1)[0].lower()
