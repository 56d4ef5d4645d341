// The playground page: long-polls the state, patches the panes in place (what the agent types
// survives: an unchanged card is not redrawn, a changed one keeps its [data-keep] parts and the
// focus), says when the bot does not answer, and posts clicks and messages.
const H = {'X-Playground': '1'};
const $ = (id) => document.getElementById(id);
let version = -1;
let boot = '';
let down = false;

function flash(text, error) { $('flash').textContent = text || ''; $('flash').className = error ? 'error' : ''; }

function connection(ok) {
  if (ok === !down) return;
  down = !ok;
  const c = $('connection');
  c.hidden = ok;
  c.textContent = ok ? '' : '⚠ The bot is not answering; retrying…';
  document.body.classList.toggle('offline', !ok);
}

async function post(path, body) {
  let r;
  try {
    r = await fetch('/playground/api/' + path, {method: 'POST', headers: H, body: body});
  } catch (e) {
    connection(false);
    flash('not sent: the bot is not answering', true);
    return null;
  }
  const data = await r.json().catch(() => ({}));
  const good = r.ok && data.ok !== false;
  if (r.status >= 502) connection(false);
  flash(good ? (data.message || '') : (data.message || r.statusText || 'the bot refused'), !good);
  return good ? data : null;
}

function patch(box, html) {
  const tpl = document.createElement('template');
  tpl.innerHTML = html;
  const active = document.activeElement;
  const selection = active && typeof active.selectionStart === 'number' ? [active.selectionStart, active.selectionEnd] : null;
  const old = new Map([...box.children].filter((n) => n.id).map((n) => [n.id, n]));
  const wanted = [];
  for (const fresh of [...tpl.content.children]) {
    const was = fresh.id ? old.get(fresh.id) : null;
    if (was && was.outerHTML === fresh.outerHTML) { wanted.push(was); continue; }
    if (was && was.dataset.sig && was.dataset.sig === fresh.dataset.sig) { wanted.push(was); continue; }
    if (was) keepTyped(was, fresh);
    wanted.push(fresh);
  }
  for (const n of [...box.children]) if (!wanted.includes(n)) n.remove();
  wanted.forEach((n, i) => { if (box.children[i] !== n) box.insertBefore(n, box.children[i] || null); });
  if (active && active.isConnected && document.activeElement !== active) {
    active.focus();
    if (selection) active.setSelectionRange(selection[0], selection[1]);
  }
}

function keepTyped(was, fresh) {
  for (const kept of was.querySelectorAll('[data-keep]')) {
    const slot = fresh.querySelector('[data-keep="' + CSS.escape(kept.dataset.keep) + '"]');
    if (slot) slot.replaceWith(kept);
  }
  for (const open of was.querySelectorAll('details[open][id]')) {
    const same = fresh.querySelector('#' + CSS.escape(open.id));
    if (same) same.open = true;
  }
}

function patchChat(html) {
  const tpl = document.createElement('template');
  tpl.innerHTML = html;
  const box = $('customer');
  const freshChat = tpl.content.querySelector('.chat');
  const chat = box.querySelector('.chat');
  if (!chat || !freshChat || box.querySelector('h3').textContent !== tpl.content.querySelector('h3').textContent) {
    box.innerHTML = html;
    return;
  }
  patch(chat, freshChat.innerHTML);
}

async function refresh() {
  let r;
  try {
    r = await fetch('/playground/api/state?since=' + version + '&boot=' + boot, {headers: H});
  } catch (e) {
    connection(false);
    throw e;
  }
  if (!r.ok) { connection(false); throw new Error('state ' + r.status); }
  connection(true);
  const data = await r.json();
  if (data.version === version && data.boot === boot) return;
  version = data.version;
  boot = data.boot;
  patchChat(data.customer);
  if ($('desk')) patch($('desk'), data.desk);
}

async function loop() {
  for (;;) {
    try { await refresh(); } catch (e) { await new Promise((r) => setTimeout(r, 1000)); }
  }
}

$('compose').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  if (!form.get('text').trim() && !form.get('image').size) return;
  if (await post('message', form)) e.target.reset();
});
$('compose').querySelector('textarea').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('compose').requestSubmit();
  }
});
$('orders').addEventListener('click', () => post('orders', new FormData()));
$('new-thread').addEventListener('click', () => post('thread', new FormData()));

document.addEventListener('click', async (e) => {
  const b = e.target.closest('button');
  if (!b) return;
  if (b.dataset.action) {
    const form = new FormData();
    form.set('draft_id', b.dataset.draft); form.set('action', b.dataset.action);
    const hint = document.querySelector('.instruction[data-for="' + CSS.escape(b.dataset.draft) + '"]');
    if (hint && hint.value) form.set('instruction', hint.value);
    await post('decide', form);
  } else if (b.dataset.edit) {
    const box = $('edit-' + b.dataset.edit);
    if (box.querySelector('form')) return;  // an edit in progress stays as it is
    let r;
    try {
      r = await fetch('/playground/api/edit/' + encodeURIComponent(b.dataset.edit), {headers: H});
    } catch (err) { connection(false); flash('the bot is not answering', true); return; }
    if (!r.ok) { flash('this draft cannot be edited any more', true); return; }
    box.innerHTML = await r.text();
    const area = box.querySelector('textarea');
    if (area) area.focus();
  }
});

document.addEventListener('submit', async (e) => {
  const form = e.target;
  if (form.classList.contains('edit-form')) {
    e.preventDefault();
    const data = new FormData(form);
    data.set('draft_id', form.dataset.draft); data.set('action', 'edit');
    if (await post('decide', data)) form.remove();
  } else if (form.classList.contains('hand-form')) {
    e.preventDefault();
    const data = new FormData(form);
    data.set('draft_id', form.dataset.draft);
    if (await post('reply', data)) { form.reset(); form.closest('details').open = false; }
  }
});

let timer = null;
async function check() {
  const form = new FormData(); form.set('policy', $('policy').value);
  try {
    const r = await fetch('/playground/api/policy/check', {method: 'POST', headers: H, body: form});
    $('policy-result').innerHTML = await r.text();
  } catch (e) { connection(false); }
}
$('policy').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 300); });
if ($('policy-apply')) $('policy-apply').addEventListener('click', async () => {
  const form = new FormData(); form.set('policy', $('policy').value);
  await post('policy/apply', form); check();
});
check(); loop();
