"""The verification pass over a draft before its card (the guide's "verification steps for
high-stakes tasks"): a pure function (:func:`verify_draft`) from the draft and what this
conversation established (:func:`evidence` gathers it) to flags for the reviewing agent.
Nothing is rewritten: what fails is shown on the card, and a flagged first draft is
regenerated once with the reason (:func:`retry_once`).

Checks:

* every amount in the draft (``12.50``, ``$12.50``, ``12,50 €``) comes from this conversation's
  tool results or proposals;
* every order-id- or tracking-number-like token (letters and digits, at least 5 characters with
  at least 4 digits) comes from them too;
* a claim that money moved ("your refund has been processed") matches an executed refund; with
  only a proposal it is flagged as a promise the agent has not made yet;
* no personal data of another customer (kept from the model by the order tools) appears;
* every link shows where it goes (:func:`link_flags`): a Markdown ``[label](url)`` or Slack
  ``<url|label>`` whose label is not its own address is flagged, and a label that is itself an
  address on another site (``[https://shop.example/orders](https://evil.example)``) is flagged as
  the worst case. The customer sees only the label once the platform renders the link. Link
  flags are shown but never regenerate the draft (a descriptive label is often meant).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.agent import DraftResult
from bot.domain.states import ActionStatus
from bot.store import Draft, ProposedAction, ToolCall
from bot.store.proposals import params_of, proposal_of
from tools import ToolContext
from tools.money import Money
from tools.refunds import RefundProposal

__all__ = [
    "Evidence",
    "conversation_evidence",
    "draft_evidence",
    "link_flags",
    "may_retry",
    "regenerated_notice",
    "retry_instruction",
    "verify_draft",
]

_AMOUNT = re.compile(r"(?<![\w.,])(?:[$€£]\s?)?(\d{1,3}(?:,\d{3})+|\d+)[.,](\d{2})(?![\d])")
_IDENTIFIER = re.compile(r"(?<![\w-])#?[A-Za-z0-9][A-Za-z0-9-]{4,}(?![\w-])")
_MONEY_MOVED = re.compile(
    r"\b(refund(?:ed)?|money|amount|credit)\b(?:[^.!?\n]|\.\d){0,60}\b(has been|have been|was|were|is now|got)\s+"
    r"(processed|issued|completed|sent|refunded|credited|returned|paid|done|made)\b"
    r"|\bwe(?:'ve| have)?\s+(?:just\s+)?(refunded|credited|reimbursed)\b"
    r"|\bi(?:'ve| have)\s+(?:just\s+)?(refunded|credited|reimbursed|processed)\b",
    re.IGNORECASE,
)

# Links as the customer's platform renders them. Every repeated part is a negated class that stops
# at the delimiter the pattern waits for, so a draft full of "[a](" is scanned in linear time.
_MARKDOWN_LINK = re.compile(
    r"\[([^\[\]\n]*)\]\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+\"[^\"\n]*\")?\s*\)"
)
_SLACK_LINK = re.compile(r"<([^<>|\s]+)\|([^<>\n]*)>")
# A label that reads as an address: an optional scheme, a host with a dotted name, then anything.
_ADDRESS_LIKE = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s]+@)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?::\d+)?(?:[/?#]\S*)?",
    re.IGNORECASE,
)
#: Every link flag starts so; :func:`may_retry` does not regenerate a draft for these alone.
LINK_FLAG_PREFIX = "Link: "
_SHOWN = 120


@dataclass(frozen=True, slots=True)
class Evidence:
    """What this conversation established: tool results and arguments (JSON texts), the draft's
    refund proposals, the refunds executed in this conversation (cents), and personal data of
    other customers the tools withheld."""

    tool_texts: Sequence[str] = ()
    proposals: Sequence[RefundProposal] = ()
    executed_refunds_cents: Sequence[int] = ()
    withheld: Iterable[str] = ()


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, int) and not isinstance(item, bool) and key.endswith("_cents"):
                yield Money.of_cents(item).format()
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _known_text(evidence: Evidence) -> str:
    parts: list[str] = []
    for text in evidence.tool_texts:
        parts.append(text)
        with contextlib.suppress(ValueError):
            parts.extend(_strings(json.loads(text)))
    for proposal in evidence.proposals:
        parts.extend(_strings(params_of(proposal)))
    return "\n".join(parts)


def _amounts(text: str) -> set[int]:
    found = set()
    for match in _AMOUNT.finditer(text):
        whole = int(match.group(1).replace(",", ""))
        found.add(whole * 100 + int(match.group(2)))
    return found


def verify_draft(draft: str, evidence: Evidence) -> tuple[str, ...]:
    """The flags for a draft (empty when every check passes)."""
    flags: list[str] = []
    known = _known_text(evidence)
    known_amounts = _amounts(known)
    known_amounts |= {p.amount.cents for p in evidence.proposals}
    for cents in sorted(_amounts(draft) - known_amounts):
        flags.append(
            f"The draft quotes the amount {Money.of_cents(cents).format()}, which no tool result or proposal gave."
        )
    amount_spans = [m.span() for m in _AMOUNT.finditer(draft)]
    known_folded = known.casefold()
    for match in _IDENTIFIER.finditer(draft):
        token = match.group(0)
        if sum(c.isdigit() for c in token) < 4 or any(s <= match.start() < e for s, e in amount_spans):
            continue
        if token.casefold() not in known_folded and token.lstrip("#").casefold() not in known_folded:
            flags.append(f"The draft names {token!r} (an order id or tracking number?), which no tool result gave.")
    claim = _MONEY_MOVED.search(draft)
    if claim and not evidence.executed_refunds_cents:
        what = "only proposed, not executed" if evidence.proposals else "never made"
        flags.append(f"The draft says money moved ({claim.group(0)!r}), but the refund was {what}.")
    folded = draft.casefold()
    for value in sorted(set(evidence.withheld)):
        if value.casefold() in folded:
            flags.append("The draft contains personal data of another customer, which the tools withheld.")
            break
    flags.extend(link_flags(draft))
    return tuple(dict.fromkeys(flags))


def _links(draft: str) -> Iterator[tuple[str, str]]:
    """``(label, target)`` of every Markdown and Slack-style link in the draft."""
    for match in _MARKDOWN_LINK.finditer(draft):
        yield match.group(1), match.group(2)
    for match in _SLACK_LINK.finditer(draft):
        yield match.group(2), match.group(1)


def _host(address: str) -> str:
    """The host an address points at, lower-case and without ``www.`` ("" when it has none)."""
    if address.lower().startswith("mailto:"):
        host = address.partition("@")[2].partition("?")[0]
    elif re.match(r"[a-z][a-z0-9+-]*:(?!//)(?!\d)", address, re.IGNORECASE):
        return ""  # javascript:, tel:, data:… name no host
    else:
        try:
            host = urlsplit(address if "//" in address else f"//{address}").hostname or ""
        except ValueError:
            return ""
    host = host.lower().rstrip(".")
    return host.removeprefix("www.")


def _same_address(label: str, target: str) -> bool:
    def plain(address: str) -> str:
        address = address.lower().removeprefix("mailto:")
        address = re.sub(r"^[a-z][a-z0-9+.-]*://", "", address).removeprefix("www.")
        return address.rstrip("/")

    return plain(label) == plain(target)


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


def link_flags(draft: str) -> list[str]:
    """A flag for every link whose visible text is not where it goes (see the module's doc)."""
    flags: list[str] = []
    for raw_label, target in _links(draft):
        label = raw_label.strip().strip("*_~`").strip()
        if not target or _same_address(label, target):
            continue
        host = _host(target)
        where = f" ({host})" if host else ""
        address = _ADDRESS_LIKE.fullmatch(label)
        if address is None:
            flags.append(
                f"{LINK_FLAG_PREFIX}the text {_shown(raw_label)} hides where the link goes: "
                f"{_shown(target)}{where}. Check it before approving."
            )
        elif _host(label) != _host(target):
            flags.append(
                f"{LINK_FLAG_PREFIX}the text shows the address {_shown(label)} but the link opens "
                f"{_shown(target)}, a different site{where}: the worst case of a misleading link (the "
                "customer trusts one address and lands on another). Do not approve it as it is."
            )
        else:
            flags.append(
                f"{LINK_FLAG_PREFIX}the text shows the address {_shown(label)} but the link opens "
                f"{_shown(target)} (the same site{where}, another page)."
            )
    return flags


def draft_evidence(result: DraftResult, ctx: ToolContext) -> Evidence:
    """What this draft's own run established (no database): most drafts verify on this alone."""
    return Evidence(
        tool_texts=[t for c in result.tool_calls if not c.error for t in (c.arguments, c.result)],
        proposals=list(result.proposals),
        withheld=ctx.withheld,
    )


async def conversation_evidence(
    conn: AsyncConnection, conversation_id: str, result: DraftResult, ctx: ToolContext
) -> Evidence:
    """What the whole conversation established so far, for :func:`verify_draft`: this draft's
    tool calls and proposals and the earlier drafts' ones, and the refunds executed in it."""
    t, a = ToolCall.__table__.c, ProposedAction.__table__.c
    drafts = select(Draft.__table__.c.id).where(Draft.__table__.c.conversation_id == conversation_id)
    earlier_calls = await conn.execute(select(t.arguments, t.result).where(t.draft_id.in_(drafts), t.error == ""))
    actions = list(await conn.execute(select(a.params, a.status, a.result).where(a.draft_id.in_(drafts))))
    own = draft_evidence(result, ctx)
    return Evidence(
        tool_texts=[*own.tool_texts, *(text for c in earlier_calls for text in (c.arguments, c.result))],
        proposals=[
            *own.proposals,
            *(
                proposal_of(x.params or {})
                for x in actions
                if x.status not in (ActionStatus.REFUSED, ActionStatus.SUPERSEDED)
            ),
        ],
        executed_refunds_cents=[
            int((x.result or {}).get("amount_cents", 0)) for x in actions if x.status == ActionStatus.EXECUTED
        ],
        withheld=ctx.withheld,
    )


RETRY_PREFIX = "The verification pass flagged the previous draft: "


def retry_instruction(flags: Sequence[str]) -> str:
    """The instruction a draft is regenerated with once when the verification pass flagged it."""
    return (
        RETRY_PREFIX
        + " ".join(flags)
        + " Write the reply again: state only amounts, order ids and tracking numbers the tools returned, "
        "and never say money moved unless a refund was executed."
    )[:500]


def regenerated_notice(instruction: str | None) -> str:
    """The card's notice for a draft that is the one retry after a flagged draft ("" otherwise)."""
    if not (instruction or "").startswith(RETRY_PREFIX):
        return ""
    return "Regenerated once after the verification pass flagged the first draft."


def may_retry(flags: Sequence[str], result: DraftResult, revision: int, instruction: str | None) -> bool:
    """Whether a flagged draft is regenerated once with the reason. Not retried: a draft already
    regenerated or carrying an agent's instruction, and a draft whose run checked a customer's
    identity (a retry must not spend verification attempts), and a draft flagged only for its
    links (a label other than the address is often meant; the agent judges it on the card)."""
    if not any(not f.startswith(LINK_FLAG_PREFIX) for f in flags):
        return False
    if any(c.name == "verify_customer" for c in result.tool_calls):
        return False
    return revision == 1 and not instruction
