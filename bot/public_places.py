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
from collections.abc import Iterable
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


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    ordered = sorted({v for v in values if v}, key=len, reverse=True)  # the longest value wins
    if not ordered:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in ordered) + r")(?!\w)", re.IGNORECASE)


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
    pattern = _pattern(ctx.order_details) if place is Place.PUBLIC else None
    if pattern is None:
        return PublicCheck(text)
    found = list(dict.fromkeys(m.group(0).casefold() for m in pattern.finditer(text)))
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
    kind_of = {value.casefold(): kind for value, kind in ctx.order_details.items()}
    kinds = {kind_of.get(f, "order details") for f in found}
    shown = ", ".join(kind for kind in (*KINDS, "order details") if kind in kinds)
    return PublicCheck(
        text,
        flags=(
            f"{FLAG}: the draft shows the customer's {shown} where others can read it. Approve only if "
            "the customer should see them there; otherwise edit them out or answer in a direct message.",
        ),
    )
