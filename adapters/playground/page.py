"""The playground page, rendered on the server: one HTML page and the fragments it refreshes.

Every piece of customer or model text goes through :func:`html.escape`. The customer pane and
the desk's cards are in :mod:`adapters.playground.cards_html`; this module holds the page, the
edit form and the policy editor's answers.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from adapters.playground.cards_html import customer_pane, desk_pane, render_card
from adapters.playground.state import Thread
from bot.ports import EditForm

__all__ = ["customer_pane", "desk_pane", "edit_form", "page", "policy_result", "render_card", "thread_title"]


def edit_form(form: EditForm) -> str:
    draft = escape(form.draft_id, quote=True)
    refund = ""
    if form.refund_amount is not None:
        refund = (
            f'<label>Refund amount <input name="refund_amount" value="{escape(form.refund_amount, quote=True)}">'
            "</label><small>Checked against the policy again before anything happens.</small>"
        )
    return (
        f'<form class="edit-form" data-draft="{draft}"><textarea name="edited_text" rows="6">'
        f'{escape(form.text)}</textarea>{refund}<button type="submit">Approve &amp; send edited</button></form>'
    )


def policy_result(ok: bool, version: str, problems: list[str]) -> str:
    if ok:
        return f'<p class="ok">policy check: OK (policy version {escape(version)})</p>'
    items = "".join(f"<li>{escape(problem)}</li>" for problem in problems)
    return f'<div class="bad"><p>policy check: invalid</p><ul>{items}</ul></div>'


def thread_title(thread: Thread) -> str:
    return escape(thread.location)


#: The sample orders and the refund path each walks under the default policy.
SAMPLE_ORDERS = (
    ("#W2611340", "shipped, 89.90", "Where is my order? (status and tracking)"),
    ("#W2611341", "delivered 3 days ago, 39.00", "a refund an agent may approve"),
    ("#W2611342", "delivered 4 days ago, 180.00", "over 100.00: needs a manager"),
    ("#W2611343", "delivered 5 days ago, 420.00", "over 250.00: needs two different approvers, one a manager"),
    ("#W2611344", "delivered 80 days ago, 60.00", "a refund outside the 30-day window: refused"),
    ("40021", "another customer's order", "verification needed; nothing personal is shown"),
)


def _samples() -> str:
    rows = "".join(
        f"<tr><td><code>{escape(order)}</code></td><td>{escape(what)}</td><td>{escape(path)}</td></tr>"
        for order, what, path in SAMPLE_ORDERS
    )
    return (
        '<details id="samples"><summary>Sample orders: what each one shows</summary>'
        '<p class="meta">Click “Load sample orders”, then ask as the customer, e.g. “I want a refund for '
        "order #W2611342, the chair arrived broken”. Without them every order is unknown.</p>"
        f'<div class="scroll"><table><tr><th>Order</th><th>What it is</th><th>What it shows</th></tr>{rows}'
        "</table></div></details>"
    )


def page(*, has_desk: bool, can_apply: bool, policy_text: str, policy_path: str) -> str:
    """The whole page; the panes fill themselves from the fragments."""
    apply = (
        '<button id="policy-apply">Save and run the pending conversation again</button>'
        if can_apply
        else "<small>Next to a live platform the policy is checked here, not saved.</small>"
    )
    desk = '<section id="desk-side"><h2>Review desk</h2><div id="desk"></div></section>' if has_desk else ""
    return _PAGE.format(
        desk=desk,
        samples=_samples(),
        policy=escape(policy_text),
        policy_path=escape(policy_path),
        policy_name=escape(Path(policy_path).name),
        apply=apply,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>supportbot playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/playground/static/playground.css">
<link rel="icon" href="/playground/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header><h1>supportbot playground</h1>
<span class="buttons"><button id="orders">Load sample orders</button>
<button id="new-thread">New conversation</button></span>
<span id="flash" role="status" aria-live="polite"></span>
<span id="connection" role="alert" hidden></span></header>
<main>
<section id="customer-side"><h2>Customer</h2>{samples}<div id="customer"></div>
<form id="compose">
<textarea name="text" rows="3" placeholder="Write to support… (Enter sends, Shift+Enter: new line)"></textarea>
<div class="compose-row"><input type="file" name="image" accept="image/*">
<button type="submit">Send</button></div></form></section>
{desk}
<section id="policy-side"><h2>Policy <small title="{policy_path}">({policy_name})</small></h2>
<textarea id="policy" spellcheck="false">{policy}</textarea>
<div id="policy-result"></div>{apply}</section>
</main>
<script src="/playground/static/playground.js"></script>
</body></html>
"""
