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
