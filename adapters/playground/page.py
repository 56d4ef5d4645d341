"""The playground page, rendered on the server: one HTML page and the fragments it refreshes.

Every piece of customer or model text goes through :func:`html.escape`. The card shows the
same content as Slack's review card (:class:`bot.ports.ReviewCard`): draft, lookups,
proposals with the policy's verdict, flags, and the four buttons.
"""

from __future__ import annotations

from html import escape

from adapters.playground.state import PlaygroundState, Thread
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
    return (
        f'<div class="card state-{escape(card.state.value)}" id="card-{escape(ref, quote=True)}">{"".join(parts)}</div>'
    )


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
        apply=apply,
        script=_SCRIPT,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>supportbot playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d1c1d; }}
header {{ padding: 10px 16px; background: #3f0e40; color: #fff; display: flex; gap: 12px; align-items: center; }}
header h1 {{ font-size: 17px; margin: 0; flex: 1; }}
main {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px; padding: 12px; }}
section {{ background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px #0002; }}
h2 {{ font-size: 15px; margin: 4px 0 8px; }} h3 {{ font-size: 13px; color: #555; margin: 0 0 6px; }}
.msg {{ margin: 6px 0; padding: 6px 10px; border-radius: 8px; max-width: 85%; white-space: pre-wrap; }}
.msg.customer {{ background: #e8f0fe; margin-left: auto; }} .msg.support {{ background: #e6f4ea; }}
.file {{ display: block; font-size: 12px; color: #555; }}
.pending, .hint, .meta {{ color: #666; font-size: 12px; }}
.card {{ border: 1px solid #ddd; border-left: 4px solid #1264a3; border-radius: 6px;
  padding: 6px 10px; margin: 0 0 10px; }}
.card.state-sent, .card.state-approved, .card.state-edited {{ border-left-color: #2eb67d; }}
.card.state-rejected, .card.state-failed, .card.state-send_failed {{ border-left-color: #e01e5a; }}
.card.state-superseded {{ opacity: .6; }}
blockquote {{ margin: 0 0 6px; padding-left: 8px; border-left: 3px solid #ccc; white-space: pre-wrap; }}
.draft {{ white-space: pre-wrap; background: #fafafa; padding: 6px; border-radius: 4px; }}
.flag {{ color: #b00; }} .proposal {{ background: #fff8e1; padding: 6px; border-radius: 4px; margin: 4px 0; }}
.lookups li.failed {{ color: #b00; }}
.actions button, #compose button {{ margin: 4px 4px 0 0; }} .approve {{ background: #007a5a; color: #fff; }}
.reject {{ background: #e01e5a; color: #fff; }}
button {{ border: 1px solid #bbb; border-radius: 4px; padding: 4px 10px; cursor: pointer; background: #fff; }}
textarea, input {{ font: inherit; width: 100%; box-sizing: border-box; }}
.instruction {{ margin-top: 4px; }}
#policy-side {{ grid-column: 1 / -1; }} #policy {{ font: 12px/1.35 monospace; height: 180px; }}
.ok {{ color: #007a5a; }} .bad {{ color: #b00; }} #flash {{ color: #fff; }} #flash.error {{ color: #ffb3b3; }}
</style></head>
<body>
<header><h1>supportbot playground</h1>
<button id="orders">Load sample orders</button><button id="new-thread">New conversation</button>
<span id="flash" role="status"></span></header>
<main>
<section id="customer-side"><h2>Customer</h2><div id="customer"></div>
<form id="compose"><textarea name="text" rows="3" placeholder="Write to support…"></textarea>
<input type="file" name="image" accept="image/*"><button type="submit">Send</button></form></section>
{desk}
<section id="policy-side"><h2>Policy <small>({policy_path})</small></h2>
<textarea id="policy" spellcheck="false">{policy}</textarea>
<div id="policy-result"></div>{apply}</section>
</main>
<script>{script}</script>
</body></html>
"""

_SCRIPT = """
const H = {'X-Playground': '1'};
const $ = (id) => document.getElementById(id);
let version = -1;
function flash(text, error) { $('flash').textContent = text || ''; $('flash').className = error ? 'error' : ''; }
async function post(path, body) {
  const r = await fetch('/playground/api/' + path, {method: 'POST', headers: H, body: body});
  const data = await r.json().catch(() => ({}));
  const good = r.ok && data.ok !== false;
  flash(good ? (data.message || '') : (data.message || r.statusText), !good);
  return data;
}
async function refresh() {
  const r = await fetch('/playground/api/state?since=' + version, {headers: H});
  if (!r.ok) { flash('the bot is not answering'); return; }
  const data = await r.json();
  if (data.version === version) return;
  version = data.version;
  $('customer').innerHTML = data.customer;
  if ($('desk')) {
    const open = document.activeElement && document.activeElement.closest && document.activeElement.closest('#desk');
    if (!open || !document.querySelector('.edit-form')) $('desk').innerHTML = data.desk;
  }
}
async function loop() {
  for (;;) { try { await refresh(); } catch (e) { await new Promise(r => setTimeout(r, 1000)); } }
}
$('compose').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  if (!form.get('text').trim() && !form.get('image').size) return;
  await post('message', form);
  e.target.reset();
});
$('orders').addEventListener('click', () => post('orders', new FormData()));
$('new-thread').addEventListener('click', () => post('thread', new FormData()));
document.addEventListener('click', async (e) => {
  const b = e.target.closest('button');
  if (!b) return;
  if (b.dataset.action) {
    const form = new FormData();
    form.set('draft_id', b.dataset.draft); form.set('action', b.dataset.action);
    const hint = document.querySelector('.instruction[data-for="' + b.dataset.draft + '"]');
    if (hint && hint.value) form.set('instruction', hint.value);
    await post('decide', form);
  } else if (b.dataset.edit) {
    const r = await fetch('/playground/api/edit/' + encodeURIComponent(b.dataset.edit), {headers: H});
    $('edit-' + b.dataset.edit).innerHTML = await r.text();
  }
});
document.addEventListener('submit', async (e) => {
  if (!e.target.classList.contains('edit-form')) return;
  e.preventDefault();
  const form = new FormData(e.target);
  form.set('draft_id', e.target.dataset.draft); form.set('action', 'edit');
  e.target.remove();
  await post('decide', form);
  version = -1;
});
let timer = null;
async function check() {
  const form = new FormData(); form.set('policy', $('policy').value);
  const r = await fetch('/playground/api/policy/check', {method: 'POST', headers: H, body: form});
  $('policy-result').innerHTML = await r.text();
}
$('policy').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 300); });
if ($('policy-apply')) $('policy-apply').addEventListener('click', async () => {
  const form = new FormData(); form.set('policy', $('policy').value);
  await post('policy/apply', form); check();
});
check(); loop();
"""
