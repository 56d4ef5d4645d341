"""The playground page, rendered on the server: one HTML page and the fragments it refreshes.

Every piece of customer or model text goes through :func:`html.escape`. The card shows the
same content as Slack's review card (:class:`bot.ports.ReviewCard`): draft, lookups,
proposals with the policy's verdict, flags, and the four buttons.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from adapters.playground.state import PlaygroundState, Thread
from bot.events import DecisionAction
from bot.ports import CardState, EditForm, ReviewCard

_STATE_LINES = {
    CardState.APPROVED: "Approved by {who}{when}; sending…",
    CardState.EDITED: "Edited and approved by {who}{when}; sending…",
    CardState.SENT: "Approved by {who}{when} and sent to the customer.",
    CardState.REJECTED: "Rejected by {who}{when}. Nothing was sent.",
    CardState.SUPERSEDED: "Superseded{by}.",
    CardState.FAILED: "No draft: answer the customer by hand.",
    CardState.SEND_FAILED: "Approved by {who}{when}, but sending failed. Nothing reached the customer.",
}


def customer_pane(state: PlaygroundState) -> str:
    thread = state.current
    lines = [_chat_line(line.role, line.text, line.attachments) for line in thread.lines]
    if not lines:
        lines.append('<p class="hint">Write as a customer would, e.g. “Where is my order #W2611340?”</p>')
    if thread.pending:
        lines.append('<p class="pending" id="pending">A team member is reviewing an answer…</p>')
    return f'<h3>{escape(thread.location)}</h3><div class="chat">{"".join(lines)}</div>'


def _chat_line(role: str, text: str, attachments: tuple[str, ...]) -> str:
    files = "".join(f'<span class="file">📎 {escape(name)}</span>' for name in attachments)
    who = "You" if role == "customer" else "Support"
    return f'<div class="msg {role}"><b>{who}</b><div class="text">{escape(text)}</div>{files}</div>'


def desk_pane(state: PlaygroundState, *, has_desk: bool) -> str:
    if not has_desk:
        return '<p class="hint">Cards go to the configured review desk (Slack or Discord).</p>'
    notices = "".join(f'<div class="notice">{escape(text)}</div>' for text in state.notices[-3:])
    cards = [render_card(ref, card) for ref, card in reversed(state.cards.items())]
    if not cards:
        cards.append('<p class="hint">Cards appear here once the model has drafted a reply.</p>')
    return notices + "".join(cards)


def render_card(ref: str, card: ReviewCard) -> str:
    parts = [
        f"<p><b>{escape(card.asked_by)}</b> asked in {escape(card.where)}:</p>",
        f"<blockquote>{escape(card.customer_text)}</blockquote>",
    ]
    if card.attachments:
        parts.append(f'<p class="meta">Attachments: {escape(", ".join(card.attachments))}</p>')
    if card.identity:
        parts.append(f'<p class="meta">{escape(card.identity)}</p>')
    if card.flags:
        items = "".join(f"<li>{escape(flag)}</li>" for flag in card.flags)
        parts.append(f'<div class="flag">🛑 <b>Check before approving:</b><ul>{items}</ul></div>')
    if card.escalation:
        tag = f"@{escape(card.on_call)} " if card.on_call else ""
        parts.append(f'<p class="flag">🚨 {tag}Escalation: {escape(card.escalation)}</p>')
    if card.failure:
        parts.append(
            f'<p class="flag">⚠️ <b>Drafting failed</b>: {escape(card.failure)}<br>'
            "Please answer the customer by hand.</p>"
        )
    if card.draft_text:
        label = "Reply sent" if card.state is CardState.SENT else "Draft reply"
        parts.append(f'<p><b>{label}</b></p><div class="draft">{escape(card.draft_text)}</div>')
    if card.lookups:
        items = "".join(
            f'<li class="{"" if lookup.ok else "failed"}"><code>{escape(lookup.name)}</code>: '
            f"{escape(lookup.summary)}</li>"
            for lookup in card.lookups
        )
        parts.append(f'<p><b>Looked up</b></p><ul class="lookups">{items}</ul>')
    for proposal in card.proposals:
        icon = "💰" if proposal.allowed else "⛔"
        parts.append(
            f'<div class="proposal">{icon} <b>Proposed {escape(proposal.kind)}</b> ({escape(proposal.status)})<br>'
            f"{escape(proposal.summary)}<br><i>Policy: {escape(proposal.verdict)}</i></div>"
        )
    meta = f"Draft <code>{escape(card.draft_id[:8])}</code> · rev {card.revision}"
    if card.model:
        meta += f" · {escape(card.model)}"
    if card.notice:
        meta += f" · {escape(card.notice)}"
    parts.append(f'<p class="meta">{meta}</p>')
    if card.actionable:
        draft = escape(card.draft_id, quote=True)
        parts.append(
            '<div class="actions">'
            f'<button class="approve" data-action="approve" data-draft="{draft}">Approve &amp; send</button>'
            f'<button class="edit" data-edit="{draft}">Edit</button>'
            f'<button class="reject" data-action="reject" data-draft="{draft}">Reject</button>'
            f'<button class="regenerate" data-action="regenerate" data-draft="{draft}">Regenerate</button>'
            f'<input class="instruction" data-for="{draft}" placeholder="instruction for Regenerate (optional)">'
            f'</div><div class="editor" id="edit-{draft}"></div>'
        )
    else:
        when = f" at {card.decided_at:%Y-%m-%d %H:%M} UTC" if card.decided_at else ""
        by = f" ({escape(card.notice)})" if card.notice and card.state is CardState.SUPERSEDED else ""
        line = _STATE_LINES.get(card.state, "").format(who=escape(card.decided_by), when=when, by=by)
        if line:
            parts.append(f'<p class="outcome">{line}</p>')
    parts.append(_conversation(card))
    return (
        f'<div class="card state-{escape(card.state.value)}" id="card-{escape(ref, quote=True)}">{"".join(parts)}</div>'
    )


#: The conversation's buttons (issue 19); playground.js posts ``data-action`` as the decision.
_CONVERSATION_LABELS = {
    DecisionAction.TAKE_OVER: "Take over",
    DecisionAction.HAND_BACK: "Hand back",
    DecisionAction.CLAIM: "Claim",
    DecisionAction.RESOLVE: "Resolve",
}


def _conversation(card: ReviewCard) -> str:
    """The card's conversation: what the customer wrote since (a human answers), its status,
    owner and assignee, and its buttons."""
    view = card.conversation
    html = ""
    if view.customer_wrote:
        html += (
            '<p class="flag">💬 <b>The customer wrote since</b> (no draft):</p>'
            f"<blockquote>{escape(view.customer_wrote)}</blockquote>"
        )
    html += f'<p class="meta conversation">{escape(view.line)}</p>'
    if view.actions:
        draft = escape(card.draft_id, quote=True)
        buttons = "".join(
            f'<button class="conversation" data-action="{escape(action.value, quote=True)}" data-draft="{draft}">'
            f"{_CONVERSATION_LABELS[action]}</button>"
            for action in view.actions
        )
        html += f'<div class="actions conversation-actions">{buttons}</div>'
    return html


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
        policy=escape(policy_text),
        policy_path=escape(policy_path),
        policy_name=escape(Path(policy_path).name),
        apply=apply,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>supportbot playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/playground/static/playground.css">
</head>
<body>
<header><h1>supportbot playground</h1>
<button id="orders">Load sample orders</button><button id="new-thread">New conversation</button>
<span id="flash" role="status"></span></header>
<main>
<section id="customer-side"><h2>Customer</h2><div id="customer"></div>
<form id="compose"><textarea name="text" rows="3" placeholder="Write to support…"></textarea>
<input type="file" name="image" accept="image/*"><button type="submit">Send</button></form></section>
{desk}
<section id="policy-side"><h2>Policy <small title="{policy_path}">({policy_name})</small></h2>
<textarea id="policy" spellcheck="false">{policy}</textarea>
<div id="policy-result"></div>{apply}</section>
</main>
<script src="/playground/static/playground.js"></script>
</body></html>
"""
