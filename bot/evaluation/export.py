"""``supportbot eval export``: sent conversations (:mod:`bot.store.exports`) as eval cases
(EVAL.md), so the test set grows from real traffic.

The facts of the sent text that came from the tools (order ids, amounts, statuses, carriers,
tracking numbers) become ``reply_must_include``; the tools the draft used become
``tool_calls_required``; executed refunds become ``refunds_executed``. Order ids and personal data
(names, e-mails, postal codes, customer and chat account ids) are replaced by placeholders, the
same value by the same placeholder throughout one export (:class:`Pseudonyms`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from bot.evaluation.cases import Case
from bot.store.exports import SentConversation, SentTurn
from tools.orders import Order

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Keys of a tool result whose values are personal data: never a fact to expect.
PERSONAL_KEYS = frozenset(
    {"customer_id", "customer_name", "customer_email", "email", "name", "customer_postal_code", "postal_code"}
)
# Values of these keys are facts though they hold no digit; any other value is a fact only when it
# is a short token with a digit (an id, an amount, a date, a tracking number), never prose.
FACT_KEYS = frozenset({"status", "order_status", "carrier", "currency"})
_MIN_FACT = 3
_MAX_FACT = 40


class Pseudonyms:
    """Consistent placeholders for one export: ``#X1001`` for order ids, ``Customer 1`` for
    names, ``customer1@example.com``, ``00001`` postal codes, ``cust-001`` customer ids, ``U_CUSTOMER1``
    and ``U_AGENT1`` for chat accounts. :meth:`scrub` replaces every known value in a text."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self._texts: dict[str, str] = {}
        self._accounts: dict[str, str] = {}  # replaced after names: a chat id may be a first name too

    def _next(self, kind: str, key: str, shape: str) -> str:
        if (kind, key) not in self._known:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._known[(kind, key)] = shape.format(n=self._counts[kind])
        return self._known[(kind, key)]

    def order(self, order_id: str) -> str:
        bare = order_id.lstrip("#")
        placeholder = self._next("order", bare, "#X{n:04d}")
        self._texts[f"#{bare}"] = placeholder
        self._texts[bare] = placeholder
        return placeholder

    def customer(self, customer_id: str) -> str:
        placeholder = self._next("customer", customer_id, "cust-{n:03d}")
        self._texts[customer_id] = placeholder
        return placeholder

    def name(self, full_name: str) -> str:
        key = " ".join(full_name.split()).lower()
        number = self._next("name", key, "{n}")
        placeholder = f"Customer {number}"
        self._texts[full_name] = placeholder
        parts = full_name.split()
        for index, part in enumerate(parts):
            if len(part) >= 2:
                self._texts.setdefault(part, "Customer" if index == 0 else number)
        return placeholder

    def email(self, address: str) -> str:
        placeholder = self._next("email", address.lower(), "customer{n}@example.com")
        self._texts[address] = placeholder
        return placeholder

    def postal_code(self, code: str) -> str:
        placeholder = self._next("postal", code, "{n:05d}")
        self._texts[code] = placeholder
        return placeholder

    def account(self, user_id: str, *, agent: bool = False) -> str:
        placeholder = self._next("agent" if agent else "account", user_id, "U_AGENT{n}" if agent else "U_CUSTOMER{n}")
        self._accounts[user_id] = placeholder
        return placeholder

    def scrub(self, text: str) -> str:
        """``text`` with every known value replaced (longest first, whole words) and any other
        e-mail address replaced too."""
        text = _EMAIL.sub(lambda m: self._texts.get(m.group(0)) or self.email(m.group(0)), text)
        for known in (self._texts, self._accounts):
            for original in sorted(known, key=len, reverse=True):
                pattern = rf"(?<![\w#]){re.escape(original)}(?!\w)"
                text = re.sub(pattern, known[original], text, flags=re.IGNORECASE)
        return text

    def originals(self) -> list[str]:
        """Every value replaced (for a check that none is left)."""
        return [*self._texts, *self._accounts]


def _amount(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _leaves(value: Any, key: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, key)
    elif isinstance(value, bool) or value is None:
        return
    else:
        yield key, str(value)


def facts_of(turn: SentTurn) -> list[str]:
    """What the sent text says that a tool returned (personal data left out), in text order."""
    sent = turn.sent.lower()
    facts: dict[str, int] = {}
    for tool in turn.tools:
        for key, value in _leaves(tool.result):
            if key in PERSONAL_KEYS or key.endswith("_cents") or not _MIN_FACT <= len(value) <= _MAX_FACT:
                continue
            if key not in FACT_KEYS and (not any(ch.isdigit() for ch in value) or any(ch.isspace() for ch in value)):
                continue
            where = re.search(rf"(?<![\w.]){re.escape(value.lower())}(?![\w]|\.\d)", sent)
            if where is not None and value not in facts:
                facts[value] = where.start()
    return sorted(facts, key=lambda fact: facts[fact])


def _order_row(order: Order, names: Pseudonyms, refunded_here: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "order_id": names.order(order.order_id),
        "customer_id": names.customer(order.customer_id) if order.customer_id else None,
        "customer_name": names.name(order.customer_name) if order.customer_name else None,
        "customer_email": names.email(order.customer_email) if order.customer_email else None,
        "status": order.status,
        "currency": order.currency,
        "total": _amount(order.total_cents),
        "refunded": _amount(max(order.refunded_cents - refunded_here, 0)),
        "placed_at": order.placed_at.isoformat(),
        "delivered_at": order.delivered_at.isoformat() if order.delivered_at else None,
        "carrier": order.carrier,
        "tracking_number": order.tracking_number,
        "estimated_delivery": order.estimated_delivery.isoformat() if order.estimated_delivery else None,
        "items": [
            {"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_price": _amount(i.unit_price_cents)}
            for i in order.items
        ],
        "customer_postal_code": names.postal_code(order.customer_postal_code) if order.customer_postal_code else None,
    }
    return {k: v for k, v in row.items() if v is not None}


def case_of(conversation: SentConversation, names: Pseudonyms, number: int) -> Case:
    """One eval case from a sent conversation, every id and piece of personal data replaced."""
    c = conversation
    user_id = names.account(c.user_id)
    display_name = names.name(c.display_name) if c.display_name else ""
    email = names.email(c.email) if c.email else ""
    linked = c.linked_customer is not None and any(o.customer_id == c.linked_customer for o in c.orders)
    refunded = c.refunds
    orders = [_order_row(o, names, refunded.get(o.order_id, 0)) for o in c.orders]
    deciders = [names.account(t.decided_by_id or "agent", agent=True) for t in c.turns]
    approver: list[dict[str, Any]] = []
    for turn, decider in zip(c.turns, deciders, strict=True):
        action: dict[str, Any] = {"action": "approve", "as": decider}
        if turn.edited:
            action |= {"action": "edit", "text": names.scrub(turn.sent)}
        if len(turn.refunds) == 1:  # the amount the human let through, whatever a model proposes
            action |= {"action": "edit", "amount": _amount(turn.refunds[0][1])}
        approver.append(action)
    required: dict[tuple[str, str], dict[str, Any]] = {}
    for turn in c.turns:
        for tool in turn.tools:
            asked_for = tool.arguments.get("order_id")
            args = {"order_id": names.order(asked_for)} if isinstance(asked_for, str) and asked_for else {}
            required.setdefault((tool.name, str(args)), {"name": tool.name, "args": args})
    expected: dict[str, Any] = {
        "tool_calls_required": list(required.values()),
        "refunds_executed": [{"order_id": names.order(o), "amount": _amount(n)} for o, n in refunded.items()],
        "reply_must_include": [names.scrub(fact) for turn in c.turns for fact in facts_of(turn)],
    }
    customer: dict[str, Any] = {
        "platform": c.platform,
        "user_id": user_id,
        "display_name": display_name,
        "accounts_linked": linked,
    }
    if email:
        customer["email"] = email
    if c.linked_customer is not None:
        customer["customer_id"] = names.customer(c.linked_customer)
    raw: dict[str, Any] = {
        "id": f"exported-{c.started_at:%Y%m%d}-{number:03d}",
        "category": "exported",
        "clock": c.started_at.isoformat().replace("+00:00", "Z"),
        "source": "supportbot eval export",
        "orders": orders,
        "customer": customer,
        "turns": [{"text": names.scrub(t.asked)} for t in c.turns],
        "approver": approver,
        "expected": expected,
    }
    if refunded:
        raw["policy"] = {"approvers": {"managers": sorted(set(deciders))}}
    return Case.model_validate(raw)


def export_cases(conversations: Sequence[SentConversation]) -> tuple[list[Case], Pseudonyms]:
    """The cases of ``conversations``, numbered in order, with one set of placeholders."""
    names = Pseudonyms()
    return [case_of(c, names, n) for n, c in enumerate(conversations, start=1)], names
