"""Verified order details in public places: the rule, in code, whatever the model writes.

A conversation's :class:`~bot.events.Place` is what its adapter reported: ``public`` when people
other than the customer and the shop can read the thread. There the policy's ``[identity]
public_places`` decides what becomes of the verified customer's order details (name, e-mail,
postal code, tracking number, item names, amounts) that the order tools noted
(:attr:`tools.ToolContext.order_details`):

* ``"flag"``: the model sees them; when the draft repeats any, the card carries a flag naming
  them, so the agent decides before Approve;
* ``"withhold"``: the tools show the model an order's status and expected delivery only
  (:func:`withholds` sets :attr:`tools.ToolContext.public_place`), and :func:`check_draft` removes
  any detail the draft still holds (from the customer's own words, or an earlier turn) and says so
  on the card. The text the agent approves has none of them;
* ``"dm"``: the model sees them, and every reply approved there goes to the customer by direct
  message, the thread getting only the policy's fixed ``dm_notice`` (:func:`by_direct_message`;
  the dispatcher delivers both). Every card there says so (:data:`BY_DM`).

Private places (a direct message, a private channel or thread) change nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.events import Place
from bot.policy import IdentitySection
from tools import ToolContext

__all__ = ["BY_DM", "FLAG", "REMOVED", "PublicCheck", "by_direct_message", "check_draft", "withholds"]

#: What stands in the draft where a verified order detail was removed.
REMOVED = "[withheld]"
FLAG = "Verified order details in a public channel"
#: What the card of every draft in a public place says under ``public_places = "dm"``.
BY_DM = "This reply goes to the customer by direct message"
#: What an order detail can be (:attr:`tools.ToolContext.order_details`), in the order the flag names
#: them: the flag never repeats a value (it is stored with the draft and outlives erasure).
KINDS = ("name", "e-mail", "postal code", "tracking number", "item", "amount")


@dataclass(frozen=True, slots=True)
class PublicCheck:
    """The draft as it may go to its place, with what the card must say about it."""

    text: str
    flags: tuple[str, ...] = ()
    notice: str = ""


def withholds(place: Place, rules: IdentitySection) -> bool:
    """Whether the order tools keep a verified customer's details from the model here."""
    return place is Place.PUBLIC and rules.public_places == "withhold"


def by_direct_message(place: Place, rules: IdentitySection, notice: str = "") -> bool:
    """Whether a reply approved in ``place`` goes to the customer by direct message: the policy
    says so now, or its card said so (``notice``: the draft was made under ``"dm"`` and may show
    the details, whatever the policy became since)."""
    return place is Place.PUBLIC and (rules.public_places == "dm" or notice.startswith(BY_DM))


#: What may stand beside an amount written without its cents ("$900", "900 USD", "€900").
_CURRENCY = r"(?:[$€£¥]|\b(?:USD|EUR|GBP|CAD|AUD|CHF|JPY|dollars?|euros?|pounds?)\b)"
#: What may group an amount's thousands: a comma, a point, a space (also no-break and narrow), an apostrophe.
_GROUPING = "[,.\u00a0\u202f' ]?"


def _amount(value: str) -> str:
    """``1900.00`` as a draft may write it: ``1900.00``, ``1,900.00``, ``1.900,00``, ``1 900,00``;
    without its cents only beside a currency (``$1,900``, ``1900 USD``): a bare ``5`` is not ``5.00``."""
    whole, _, cents = value.partition(".")
    head = len(whole) % 3 or 3
    number = _GROUPING.join([whole[:head], *(whole[i : i + 3] for i in range(head, len(whole), 3))])
    written = rf"{number}[.,]{cents}"
    if cents != "00":
        return written
    return rf"{written}|{_CURRENCY}\s?{number}(?![.,]?\d)|{number}\s?{_CURRENCY}"


def _details(details: dict[str, str]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    """One pattern for every detail (each its own group, the longest value first, so it wins)
    and what each group is."""
    ordered = sorted((v for v in details if v), key=len, reverse=True)
    if not ordered:
        return None
    kinds: dict[str, str] = {}
    alternatives = []
    for n, value in enumerate(ordered):
        kinds[f"d{n}"] = details[value]
        amount = details[value] == "amount" and re.fullmatch(r"[0-9]+\.[0-9]{2}", value)
        alternatives.append(f"(?P<d{n}>{_amount(value) if amount else re.escape(value)})")
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE), kinds


def check_draft(text: str, place: Place, ctx: ToolContext, rules: IdentitySection) -> PublicCheck:
    """The draft for a conversation in ``place``, checked against the order details its run's
    tools noted (see the module's doc)."""
    if by_direct_message(place, rules):
        notice = (
            f'{BY_DM} (this conversation is in a public place; [identity] public_places = "dm"): '
            f"the thread gets only {rules.dm_notice!r}. If the customer accepts no direct message, "
            "nothing is posted and this card says so."
        )
        return PublicCheck(text, notice=notice)
    details = _details(ctx.order_details) if place is Place.PUBLIC else None
    if details is None:
        return PublicCheck(text)
    pattern, kind_of = details
    found = {str(m.lastgroup): kind_of[str(m.lastgroup)] for m in pattern.finditer(text)}
    if rules.public_places == "withhold":
        notice = (
            "This conversation is in a public place: the order's details beyond its status were kept "
            'from the model ([identity] public_places = "withhold").'
        )
        if found:
            text = pattern.sub(REMOVED, text)
            notice += f" {len(found)} verified order detail(s) in the draft were removed (shown as {REMOVED})."
        return PublicCheck(text, notice=notice)
    if not found:
        return PublicCheck(text)
    kinds = {kind if kind in KINDS else "order details" for kind in found.values()}
    shown = ", ".join(kind for kind in (*KINDS, "order details") if kind in kinds)
    return PublicCheck(
        text,
        flags=(
            f"{FLAG}: the draft shows the customer's {shown} where others can read it. Approve only if "
            "the customer should see them there; otherwise edit them out or answer in a direct message.",
        ),
    )
