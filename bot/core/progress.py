"""What a forming card says drafting is doing: one plain line per tool call as it starts
("looking up order #W2611340"), for the agents watching the desk while Kimi works."""

from __future__ import annotations

import json

_LINES = {
    "get_order_status": "looking up order {order_id}",
    "check_refund_eligibility": "checking whether order {order_id} may be refunded",
    "propose_refund": "preparing a refund proposal for order {order_id}",
    "verify_customer": "checking who the customer is",
    "search_knowledge": "searching the knowledge base for “{query}”",
    "no_reply_needed": "deciding whether a reply is needed",
}


def step_line(name: str, arguments: str) -> str:
    """The line for one tool call; its arguments fill the line (an unknown tool is named)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = {}
    values = {key: str(value)[:80] for key, value in parsed.items()} if isinstance(parsed, dict) else {}
    template = _LINES.get(name)
    if template is None:
        return f"running {name[:60]}"
    try:
        return template.format_map(values)
    except KeyError:  # the model left out an argument: the line without it
        return template.split(" {", 1)[0].replace(" for order", "").replace(" order", " an order")
