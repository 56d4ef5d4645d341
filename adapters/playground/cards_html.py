"""The customer pane and the review desk's cards as HTML fragments.

A card shows the same content as Slack's and Discord's (:class:`bot.ports.ReviewCard`): who
asks, identity and flags, the steps of a draft still being written, the draft, lookups,
proposals with the policy's verdict, its buttons, and its conversation's line and buttons.
Every element the agent types into carries ``data-keep`` so the page keeps it across updates;
every card carries ``data-sig`` (a hash of its HTML) so an unchanged card is not redrawn.
Long texts are folded; a card of a later revision shows the customer's message folded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from html import escape

from adapters.playground.state import ChatLine, PlaygroundState, Thread
from bot.domain.states import ConversationOwner, ConversationStatus
from bot.events import DecisionAction
from bot.ports import CardState, ReviewCard

#: Texts longer than this (or with more lines than :data:`LONG_LINES`) are folded.
LONG_CHARS = 600
LONG_LINES = 12

_BADGES = {
    CardState.DRAFTING: "Drafting…",
    CardState.AWAITING_REVIEW: "Awaiting review",
    CardState.APPROVED: "Approved · sending",
    CardState.EDITED: "Edited · sending",
    CardState.SENT: "Sent",
    CardState.REJECTED: "Rejected",
    CardState.SUPERSEDED: "Superseded",
    CardState.FAILED: "Drafting failed",
    CardState.SEND_FAILED: "Sending failed",
}

_STATE_LINES = {
    CardState.APPROVED: "Approved by {who}{when}; sending…",
    CardState.EDITED: "Edited and approved by {who}{when}; sending…",
    CardState.SENT: "Approved by {who}{when} and sent to the customer.",
    CardState.REJECTED: "Rejected by {who}{when}. Nothing was sent.",
    CardState.SUPERSEDED: "{by}",
    CardState.FAILED: "No draft. Retry, or reply by hand.",
    CardState.SEND_FAILED: "Approved by {who}{when}, but sending failed. Nothing reached the customer.",
}

_EDITED_AND_SENT = "Edited and approved by {who}{when}, and sent to the customer."

#: What the customer is told about the newest card of their conversation (None: nothing).
_CUSTOMER_NOTES = {
    CardState.DRAFTING: "An answer is being written; a person reviews it before it is sent to you.",
    CardState.AWAITING_REVIEW: "A team member is reviewing an answer…",
    CardState.APPROVED: "An answer was approved and is on its way…",
    CardState.EDITED: "An answer was approved and is on its way…",
    CardState.REJECTED: "The team rejected the suggested answer: nothing was sent.",
    CardState.FAILED: "No answer could be drafted: a person will answer you.",
    CardState.SEND_FAILED: "An approved answer could not be delivered: a person will follow up.",
}

#: The conversation's buttons (issue 19); playground.js posts ``data-action`` as the decision.
_CONVERSATION_LABELS = {
    DecisionAction.TAKE_OVER: "Take over",
    DecisionAction.HAND_BACK: "Hand back",
    DecisionAction.CLAIM: "Claim",
    DecisionAction.RESOLVE: "Resolve",
}


def folded(text: str, *, always: bool = False, preview: int = 160) -> str:
    """``text`` escaped; a long one (or any, with ``always``) folded behind its first words."""
    if not always and len(text) <= LONG_CHARS and text.count("\n") < LONG_LINES:
        return escape(text)
    if len(text) <= preview and "\n" not in text:
        return escape(text)
    head = " ".join(text[:preview].split())
    return (
        f'<details class="long"><summary><span class="preview">{escape(head)}…</span> '
        f'<span class="more">show all {len(text):,} characters</span></summary>'
        f'<div class="full">{escape(text)}</div></details>'
    )


# -- the customer pane ----------------------------------------------------------------------


def customer_pane(state: PlaygroundState) -> str:
    thread = state.current
    lines = [_chat_line(line) for line in thread.lines]
    if not lines:
        lines.append('<p class="hint" id="hint">Write as a customer would, e.g. “Where is my order #W2611340?”</p>')
    note = _customer_note(state, thread)
    if note:
        lines.append(f'<p class="note" id="note" role="status">ℹ {escape(note)}</p>')
    return f'<h3 id="where">{escape(thread.location)}</h3><div class="chat">{"".join(lines)}</div>'


def _chat_line(line: ChatLine) -> str:
    files = "".join(f'<span class="file">attached: {escape(name)}</span>' for name in line.attachments)
    thumbs = _thumbnails(line.images)
    who = "You" if line.role == "customer" else ("Support (an agent, by hand)" if line.by_hand else "Support")
    return (
        f'<div class="msg {line.role}" id="line-{escape(line.id, quote=True)}"><b>{who}</b>'
        f'<div class="text">{folded(line.text)}</div>{thumbs}{files}</div>'
    )


def _thumbnails(images: Sequence[str]) -> str:
    return "".join(
        f'<a href="/playground/image/{escape(key, quote=True)}" target="_blank" rel="noopener">'
        f'<img class="thumb" src="/playground/image/{escape(key, quote=True)}" alt="attached image"></a>'
        for key in images
    )


def _customer_note(state: PlaygroundState, thread: Thread) -> str:
    """What the customer is told is happening: honest about a rejection or a failure."""
    if thread.drafting:
        return _CUSTOMER_NOTES[CardState.DRAFTING]
    cards = state.cards_of(thread)
    if not cards:
        return _CUSTOMER_NOTES[CardState.AWAITING_REVIEW] if thread.pending else ""
    if thread.lines and thread.lines[-1].role == "support":
        return ""  # answered: the last word is support's
    newest = cards[-1]
    if newest.conversation.owner is ConversationOwner.HUMAN:
        return "A person is answering this conversation."
    return _CUSTOMER_NOTES.get(newest.state, "")


# -- the review desk ------------------------------------------------------------------------


def desk_pane(state: PlaygroundState, *, has_desk: bool) -> str:
    """The review desk: the newest notices, a placeholder per draft being written, the cards
    (newest first)."""
    if not has_desk:
        return '<p class="hint">Cards go to the configured review desk (Slack or Discord).</p>'
    waiting = _drafting_placeholders(state)
    cards = _cards(state)
    if not cards and not waiting:
        cards.append('<p class="hint" id="desk-hint">Cards appear here while the model drafts a reply.</p>')
    return _notices(state) + "".join(waiting) + "".join(cards)


def _notices(state: PlaygroundState) -> str:
    first = len(state.notices) - 3
    return "".join(
        f'<div class="notice" id="notice-{i}">{escape(text)}</div>'
        for i, text in enumerate(state.notices)
        if i >= first
    )


def _drafting_placeholders(state: PlaygroundState) -> list[str]:
    """A placeholder for each conversation being drafted whose card has not formed yet."""
    forming = {card.thread for card in state.cards.values() if card.state is CardState.DRAFTING}
    return [
        _drafting_placeholder(thread)
        for thread in state.threads.values()
        if thread.drafting and thread.ref not in forming
    ]


def _cards(state: PlaygroundState) -> list[str]:
    newest: dict[object, str] = {}
    for ref, card in state.cards.items():
        newest[card.thread or ref] = ref
    by_hand = {t.ref: tuple(line.text for line in t.lines if line.by_hand) for t in state.threads.values()}
    images = {(t.ref, line.text): line.images for t in state.threads.values() for line in t.lines if line.images}
    rendered = []
    for ref, card in reversed(state.cards.items()):
        thread = card.thread
        rendered.append(
            render_card(
                ref,
                card,
                state.card_threads.get(ref, ()),
                newest=newest[thread or ref] == ref,
                by_hand=by_hand.get(thread, ()) if thread is not None else (),
                images=images.get((thread, card.customer_text), ()) if thread is not None else (),
            )
        )
    return rendered


def _drafting_placeholder(thread: Thread) -> str:
    return _signed(
        f'<article class="card state-drafting placeholder" id="drafting-{escape(thread.ref.thread, quote=True)}">'
        f'<p class="card-head"><span class="badge">Drafting…</span> {escape(thread.location)}</p>'
        f"<blockquote>{folded(thread.drafting)}</blockquote>"
        '<p class="meta"><span class="spinner" aria-hidden="true"></span> The model is looking things up and '
        "writing; the card is ready for review in a moment (with STREAM_DRAFTS_TO_CARD=true each step and "
        "the draft show here as they happen).</p></article>"
    )


def render_card(
    ref: str,
    card: ReviewCard,
    thread: Sequence[str] = (),
    *,
    newest: bool = True,
    by_hand: Sequence[str] = (),
    images: Sequence[str] = (),
) -> str:
    """One card as HTML: its sections in the order every desk shows them. The newest card of a
    conversation offers Reply by hand and shows the replies written so (``by_hand``); ``images``
    are the thumbnails of the customer's message."""
    later = card.revision > 1 or card.state is CardState.SUPERSEDED
    parts = (
        _head_html(card),
        _customer_html(card, folded_always=later) + _thumbnails(images),
        _checks_html(card),
        _progress_html(card),
        _draft_html(card),
        _proposals_html(card),
        _meta_html(card),
        _decision_html(card),
        _conversation(card),
        *(f'<p class="hand-reply">↳ <b>Answered by hand</b>: {folded(text)}</p>' for text in by_hand if newest),
        _by_hand_html(card) if newest and card.state is not CardState.DRAFTING else "",
        *(f'<p class="notice">↳ {escape(post)}</p>' for post in thread),
    )
    return _signed(
        f'<article class="card state-{escape(card.state.value)}{" newest" if newest else ""}" '
        f'id="card-{escape(ref, quote=True)}">'
        f"{''.join(parts)}</article>"
    )


def _signed(html: str) -> str:
    """The element with ``data-sig``: the page redraws a card only when this changes."""
    sig = hashlib.sha256(html.encode()).hexdigest()[:16]
    tag_end = html.index(">")
    return f'{html[:tag_end]} data-sig="{sig}"{html[tag_end:]}'


def _head_html(card: ReviewCard) -> str:
    badge = "Edited · sent" if card.edited and card.state is CardState.SENT else _BADGES[card.state]
    view = card.conversation
    if view.status is ConversationStatus.RESOLVED:
        badge += " · resolved"
    elif view.owner is ConversationOwner.HUMAN and card.state is not CardState.DRAFTING:
        badge += " · taken over"
    return (
        f'<p class="card-head"><span class="badge">{escape(badge)}</span> <b>{escape(card.asked_by)}</b> '
        f'<span class="meta">in {escape(card.where)} · rev {card.revision}</span></p>'
    )


def _customer_html(card: ReviewCard, *, folded_always: bool) -> str:
    html = f"<blockquote>{folded(card.customer_text, always=folded_always)}</blockquote>"
    if card.attachments:
        html += f'<p class="meta">Attached: {escape(", ".join(card.attachments))}</p>'
    if card.translation is not None:
        html += f'<p class="translation">{escape(card.translation.customer_line())}</p>'
    return html


def _checks_html(card: ReviewCard) -> str:
    """Identity, flags, escalation and a drafting failure."""
    html = f'<p class="meta identity">Identity: {escape(card.identity)}</p>' if card.identity else ""
    if card.flags:
        items = "".join(f"<li>{escape(flag)}</li>" for flag in card.flags)
        html += f'<div class="flag">⚠ <b>Check before approving:</b><ul>{items}</ul></div>'
    if card.overdue:
        html += f'<p class="flag">⚑ {escape(card.overdue)}</p>'
    if card.escalation:
        tag = f"@{escape(card.on_call)} " if card.on_call else ""
        html += f'<p class="flag">⚑ {tag}Escalation: {escape(card.escalation)}</p>'
    if card.failure:
        html += f'<p class="flag">⚠ <b>Drafting failed</b>: {escape(card.failure)}</p>'
    return html


def _progress_html(card: ReviewCard) -> str:
    if card.state is not CardState.DRAFTING:
        return ""
    steps = "".join(f"<li>{escape(step)}</li>" for step in card.progress)
    return '<p class="meta"><span class="spinner" aria-hidden="true"></span> Drafting…</p>' + (
        f'<ol class="progress">{steps}</ol>' if steps else ""
    )


def _draft_html(card: ReviewCard) -> str:
    if not card.draft_text:
        return ""
    label = "Reply sent" if card.state is CardState.SENT else "Draft reply"
    if card.edited:
        label += " (edited by the agent)"
    text = escape(card.draft_text)
    if card.state is CardState.SUPERSEDED:
        return f'<details class="old-draft"><summary>{label}</summary><div class="draft">{text}</div></details>'
    shown = f'<p><b>{label}</b></p><div class="draft">{text}</div>'
    if card.translation is not None:  # for reading: the reply goes out as written above
        shown += f'<p class="translation">{escape(card.translation.draft_line())}</p>'
    return shown


def _proposals_html(card: ReviewCard) -> str:
    """What the drafter looked up and the actions it proposes."""
    html = ""
    if card.lookups:
        items = "".join(
            f'<li class="{"" if lookup.ok else "failed"}"><code>{escape(lookup.name)}</code>: '
            f"{escape(lookup.summary)}</li>"
            for lookup in card.lookups
        )
        html += f'<p><b>Looked up</b></p><ul class="lookups">{items}</ul>'
    for proposal in card.proposals:
        icon = "✓" if proposal.allowed else "✗"
        html += (
            f'<div class="proposal">{icon} <b>Proposed {escape(proposal.kind)}</b> ({escape(proposal.status)})<br>'
            f"{escape(proposal.summary)}<br><i>Policy: {escape(proposal.verdict)}</i></div>"
        )
    return html


def _meta_html(card: ReviewCard) -> str:
    meta = f"Draft <code>{escape(card.draft_id[:8])}</code>"
    if card.model:
        meta += f" · {escape(card.model)}"
    if card.notice and card.state is not CardState.SUPERSEDED:  # a superseded card's outcome line says it
        meta += f" · {escape(card.notice)}"
    return f'<p class="meta">{meta}</p>'


def _decision_html(card: ReviewCard) -> str:
    """The draft's buttons while it can be decided (Retry on a failed one), else who decided what."""
    draft = escape(card.draft_id, quote=True)
    if card.actionable:
        return (
            '<div class="actions">'
            f'<button class="approve" data-action="approve" data-draft="{draft}">Approve &amp; send</button>'
            f'<button class="edit" data-edit="{draft}">Edit</button>'
            f'<button class="reject" data-action="reject" data-draft="{draft}">Reject</button>'
            f'<button class="regenerate" data-action="regenerate" data-draft="{draft}">Regenerate</button>'
            f'<input class="instruction" data-for="{draft}" data-keep="instruction-{draft}" '
            'placeholder="instruction for Regenerate (optional)" aria-label="instruction for Regenerate">'
            f'</div><div class="editor" id="edit-{draft}" data-keep="editor-{draft}"></div>'
        )
    when = f" at {card.decided_at:%Y-%m-%d %H:%M} UTC" if card.decided_at else ""
    by = _superseded(card.notice) if card.state is CardState.SUPERSEDED else ""
    template = _EDITED_AND_SENT if card.edited and card.state is CardState.SENT else _STATE_LINES.get(card.state, "")
    line = template.format(who=escape(card.decided_by), when=when, by=by)
    html = f'<p class="outcome">{line}</p>' if line else ""
    if card.retryable:
        html += (
            '<div class="actions">'
            f'<button class="retry" data-action="regenerate" data-draft="{draft}">Retry</button></div>'
        )
    return html


def _superseded(notice: str) -> str:
    """ "Superseded: Retried by Ana. Nothing was sent." (the notice once, and what it meant)."""
    line = notice if notice.lower().startswith("superseded") else f"Superseded: {notice}" if notice else "Superseded"
    line = line.rstrip(".") + "."
    return escape(line if "nothing was sent" in line.lower() else f"{line} Nothing was sent.")


def _conversation(card: ReviewCard) -> str:
    """The card's conversation: what the customer wrote since (a human answers), its status,
    owner and assignee, and its buttons."""
    view = card.conversation
    html = ""
    if view.customer_wrote:
        html += (
            '<p class="flag">✉ <b>The customer wrote since</b> (no draft):</p>'
            f"<blockquote>{folded(view.customer_wrote)}</blockquote>"
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


def _by_hand_html(card: ReviewCard) -> str:
    """Reply by hand on the newest card of a conversation: the agent's own answer."""
    if card.thread is None:
        return ""
    draft = escape(card.draft_id, quote=True)
    return (
        f'<details class="by-hand" data-keep="hand-{draft}"><summary>Reply by hand</summary>'
        f'<form class="hand-form" data-draft="{draft}"><textarea name="text" rows="3" '
        'placeholder="Your answer to the customer (sent as yours; the conversation becomes yours)"></textarea>'
        '<button type="submit">Send my answer</button></form></details>'
    )
