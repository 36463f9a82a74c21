// rowfleet dashboard: plain JS, no build step. It reads only the index-backed endpoints
// (GET /stats, /stats/throughput, /records?recent=1, /records/:id/timeline) and POST /requeue,
// polls every few seconds while the tab is visible, and sends the token (when the API asks for
// one) as `Authorization: Bearer`. Record data only ever reaches the DOM as text (textContent /
// text nodes), never as HTML.

const TOKEN_KEY = 'rowfleet.token';
const POLL_MS = 3000;
const FAILURES_SHOWN = 25;
const STATUSES = ['COMPLETED', 'PROCESSING', 'PROCESSED', 'FAILED', 'DELETED'];

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const state = {
  /** The API answered a data request: the dashboard is shown. */
  authed: false,
  /** A sign-in is being tried (a 401 then means the token typed was wrong). */
  signingIn: false,
  timer: undefined,
  running: false,
  again: false,
  plot: null,
  kinds: [],
  /** The filter applied to the latest failures and to requeue. */
  filter: { kind: '', error: '' },
  /** The API did not answer before the dashboard was first shown: try again in POLL_MS. */
  retrying: false,
  /** The record looked up, refreshed with each poll. */
  looked: null,
  pendingRequeue: null,
};

// ---------------------------------------------------------------- the API

const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';

async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  const t = token();
  if (t !== '') headers.authorization = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    // Relative: the page works under a path prefix behind a proxy too.
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'unreachable', `the API did not answer (${err instanceof Error ? err.message : String(err)})`);
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.status === 401) {
    unauthorized(data && typeof data.message === 'string' ? data.message : '');
    throw new ApiError(401, 'unauthorized', 'unauthorized');
  }
  if (!res.ok) {
    const message = data && typeof data.message === 'string' ? data.message : `HTTP ${res.status}`;
    throw new ApiError(res.status, data && typeof data.error === 'string' ? data.error : 'http_error', message);
  }
  return data;
}

const isUnauthorized = (err) => err instanceof ApiError && err.status === 401;
const messageOf = (err) => (err instanceof Error ? err.message : String(err));

// ---------------------------------------------------------------- DOM helpers

/** An element; string children become text nodes (never parsed as HTML). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  return node;
}

function setText(id, text, value) {
  const node = $(id);
  node.textContent = text;
  if (value === undefined) delete node.dataset.value;
  else node.dataset.value = String(value);
}

const fmt = (n) => (n === null || n === undefined ? '?' : Number(n).toLocaleString('en-US'));

/** 42s, 3m05s, 2h10m: as `rowfleet status` prints ages. */
function formatAge(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A time cell: local time shown, the exact instant on hover. */
const timeCell = (iso, extra = {}) => el('td', { title: iso, ...extra }, formatTime(iso));

function short(value, max = 160) {
  const text = JSON.stringify(value) ?? 'null';
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

const firstLine = (text, max = 300) => {
  const line = String(text ?? '').split('\n')[0];
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
};

// ---------------------------------------------------------------- sign-in

function showLogin(message, detail = '') {
  $('main').hidden = true;
  $('logout').hidden = true;
  $('banner').hidden = true;
  $('login').hidden = false;
  $('login-message').textContent = message;
  $('login-message').title = detail;
  setPollState('signed out');
  const input = $('login-token');
  input.value = '';
  input.focus();
}

/** A 401 from any call: stop, forget the data and the token, ask for a token again. */
function unauthorized(serverMessage = '') {
  // Another call of the same refresh already brought the form back: keep its message.
  if (!state.authed && !state.signingIn && !$('login').hidden) return;
  const hadToken = token() !== '';
  sessionStorage.removeItem(TOKEN_KEY);
  const wasShown = state.authed;
  state.authed = false;
  stopPolling();
  clearData();
  if ($('confirm').open) $('confirm').close('cancel');
  let message;
  if (state.signingIn) message = 'That token was refused (401). Check it against ROWFLEET_API_TOKENS.';
  else if (hadToken && wasShown) message = 'The API no longer accepts your token (401): sign in again.';
  else if (hadToken) message = 'The saved token was refused (401): sign in again.';
  else message = 'This API needs a bearer token: sign in to see the dashboard.';
  state.signingIn = false;
  // The server's own words on hover, for whoever looks closer.
  showLogin(message, serverMessage);
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('login-token').value.trim();
  if (value === '') return;
  sessionStorage.setItem(TOKEN_KEY, value);
  state.signingIn = true;
  $('login-message').textContent = '';
  tick();
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.authed = false;
  stopPolling();
  clearData();
  showLogin('Signed out.');
});

function showDashboard() {
  state.authed = true;
  state.signingIn = false;
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = token() === '';
}

/** Forgets everything shown, so that nothing stays on screen behind the login form. */
function clearData() {
  for (const id of ['kinds', 'workers', 'failures', 'timeline', 'record-facts']) $(id).replaceChildren();
  for (const s of STATUSES) setText(`total-${s}`, '');
  for (const id of ['total-due', 'oldest-due', 'throughput-rates', 'throughput-sum', 'workers-sum', 'requeue-result', 'filter-message', 'lookup-message']) {
    setText(id, '');
    for (const key of Object.keys($(id).dataset)) if (key !== 'testid') delete $(id).dataset[key];
  }
  $('record').hidden = true;
  state.looked = null;
  if (state.plot !== null) {
    state.plot.destroy();
    state.plot = null;
  }
}

// ---------------------------------------------------------------- polling

function setPollState(text, stale = false) {
  const node = $('poll-state');
  node.textContent = text;
  node.classList.toggle('stale', stale);
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = undefined;
}

function schedule() {
  stopPolling();
  if ((state.authed || state.retrying) && document.visibilityState === 'visible') state.timer = setTimeout(tick, POLL_MS);
  // A refresh that was under way when the tab was hidden has just written "live" over "paused".
  else if (state.authed && document.visibilityState === 'hidden') setPollState('paused (tab hidden)');
}

/** One refresh now (or right after the one running), then the next in POLL_MS. */
async function tick() {
  stopPolling();
  if (state.running) {
    state.again = true;
    return;
  }
  state.running = true;
  try {
    do {
      state.again = false;
      await refresh();
    } while (state.again);
  } finally {
    state.running = false;
    schedule();
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') {
    stopPolling();
    if (state.authed) setPollState('paused (tab hidden)');
  } else if (state.authed || state.retrying) {
    tick();
  }
});

async function refresh() {
  // /stats alone first: without a valid token it is the one request that 401s.
  let stats;
  try {
    stats = await api('stats');
  } catch (err) {
    state.retrying = false;
    if (isUnauthorized(err)) return;
    if (!state.authed && !$('login').hidden) {
      $('login-message').textContent = `Could not reach the API: ${messageOf(err)}`;
      state.signingIn = false;
      return;
    }
    showBanner(`Could not read the status: ${messageOf(err)}. Retrying every ${POLL_MS / 1000} s.`);
    setPollState('stale: the API did not answer', true);
    if (!state.authed) state.retrying = true;
    return;
  }
  state.retrying = false;
  if (!state.authed) showDashboard();
  hideBanner();
  renderStats(stats);
  await Promise.all([refreshThroughput(), refreshFailures(), refreshLookup()]);
  if (state.authed) setPollState(`live · every ${POLL_MS / 1000} s · updated ${new Date(stats.at).toLocaleTimeString()}`);
}

function showBanner(text) {
  $('banner').textContent = text;
  $('banner').hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
}

// ---------------------------------------------------------------- status

function renderStats(s) {
  for (const st of STATUSES) setText(`total-${st}`, `${s.estimated.includes(st) ? '≈' : ''}${fmt(s.counts[st])}`, s.counts[st]);
  setText('total-due', fmt(s.due), s.due);
  setText('oldest-due', s.due > 0 ? formatAge(s.oldestDueAgeSeconds) : '—', s.oldestDueAgeSeconds);
  setText('throughput-rates', `${s.throughput['1m']} · ${s.throughput['5m']} · ${s.throughput['15m']}`);

  const rows = s.kinds.map((k) =>
    el(
      'tr',
      { testid: 'kind-row', dataset: { kind: k.kind } },
      el('td', { class: 'mono' }, k.kind),
      ...STATUSES.map((st) => el('td', { class: 'num', testid: `count-${st}` }, fmt(k.counts[st]))),
      el('td', { class: 'num', testid: 'kind-due' }, fmt(k.due)),
      el('td', { class: 'num', testid: 'kind-oldest-due' }, k.due > 0 ? formatAge(k.oldestDueAgeSeconds) : '—'),
    ),
  );
  if (s.kinds.length > 1) {
    rows.push(
      el(
        'tr',
        { class: 'totals', testid: 'totals-row' },
        el('td', {}, 'all'),
        ...STATUSES.map((st) => el('td', { class: 'num' }, `${s.estimated.includes(st) ? '≈' : ''}${fmt(s.counts[st])}`)),
        el('td', { class: 'num' }, fmt(s.due)),
        el('td', { class: 'num' }, s.due > 0 ? formatAge(s.oldestDueAgeSeconds) : '—'),
      ),
    );
  }
  $('kinds').replaceChildren(...rows);
  $('kinds-empty').hidden = s.kinds.length > 0;
  updateKinds(s.kinds.map((k) => k.kind));

  const now = Date.parse(s.at);
  const alive = s.workers.filter((w) => w.alive).length;
  setText('workers-sum', `${alive} alive${s.workers.length > alive ? `, ${s.workers.length - alive} silent` : ''}`);
  $('workers').replaceChildren(
    ...s.workers.map((w) =>
      el(
        'tr',
        { testid: 'worker-row', dataset: { worker: w.id } },
        el('td', { class: 'mono' }, w.id),
        el('td', {}, `${w.host} · ${w.pid}`),
        el('td', {}, w.engine),
        el('td', { class: 'num', testid: 'worker-inflight' }, `${fmt(w.inFlight)} / ${fmt(w.concurrency)}`),
        el('td', { title: w.lastSeenAt }, `${formatAge((now - Date.parse(w.lastSeenAt)) / 1000)} ago`),
        el('td', { class: w.alive ? 'alive' : 'silent' }, w.alive ? 'alive' : 'silent'),
      ),
    ),
  );
  $('workers-empty').hidden = s.workers.length > 0;
}

/** The kind filter's options and the lookup's suggestions follow the kinds there are. */
function updateKinds(kinds) {
  if (kinds.length === state.kinds.length && kinds.every((k, i) => k === state.kinds[i])) return;
  state.kinds = kinds;
  const select = $('filter-kind');
  const chosen = select.value;
  const names = chosen !== '' && !kinds.includes(chosen) ? [...kinds, chosen] : kinds;
  select.replaceChildren(el('option', { value: '' }, 'all kinds'), ...names.map((k) => el('option', { value: k }, k)));
  select.value = chosen;
  $('kind-list').replaceChildren(...kinds.map((k) => el('option', { value: k })));
}

// ---------------------------------------------------------------- throughput chart

const SERIES = [
  { key: 'processed', label: 'processed', color: '#2f6fed' },
  { key: 'failed', label: 'failed', color: '#d32f2f' },
  { key: 'retried', label: 'retried', color: '#ef8f00' },
  { key: 'rescued', label: 'rescued', color: '#8e24aa' },
];

async function refreshThroughput() {
  let body;
  try {
    body = await api('stats/throughput?minutes=15');
  } catch (err) {
    if (!isUnauthorized(err)) setText('throughput-sum', `could not read: ${messageOf(err)}`);
    return;
  }
  if (!state.authed) return;
  const minutes = body.minutes;
  const data = [minutes.map((m) => Date.parse(m.at) / 1000), ...SERIES.map((s) => minutes.map((m) => Number(m[s.key]) || 0))];
  const sums = Object.fromEntries(SERIES.map((s, i) => [s.key, data[i + 1].reduce((a, b) => a + b, 0)]));
  const sum = $('throughput-sum');
  sum.textContent = SERIES.map((s) => `${s.label} ${fmt(sums[s.key])}`).join(' · ');
  Object.assign(sum.dataset, Object.fromEntries(SERIES.map((s) => [s.key, String(sums[s.key])])));
  drawChart(data);
}

function drawChart(data) {
  const box = $('chart');
  if (typeof window.uPlot !== 'function') {
    box.textContent = 'the chart library did not load';
    return;
  }
  if (state.plot !== null) {
    state.plot.setData(data);
    return;
  }
  const css = getComputedStyle(document.documentElement);
  const muted = css.getPropertyValue('--muted').trim() || '#667085';
  const line = css.getPropertyValue('--line').trim() || '#e3e6ea';
  const axis = { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
  const opts = {
    width: Math.max(box.clientWidth, 300),
    height: 240,
    cursor: { drag: { x: false, y: false } },
    legend: { live: false },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(max, 1) * 1.1] } },
    axes: [axis, { ...axis, label: 'per minute', size: 60 }],
    series: [{}, ...SERIES.map((s) => ({ label: s.label, stroke: s.color, width: 2, fill: s.key === 'processed' ? 'rgba(47,111,237,0.10)' : undefined, points: { size: 5 } }))],
  };
  box.replaceChildren();
  state.plot = new window.uPlot(opts, data, box);
}

new ResizeObserver(() => {
  const box = $('chart');
  if (state.plot !== null && box.clientWidth > 0) state.plot.setSize({ width: box.clientWidth, height: 240 });
}).observe($('chart'));

// ---------------------------------------------------------------- latest failures, requeue

function readFilter() {
  state.filter = { kind: $('filter-kind').value, error: $('filter-error').value.trim() };
}

function filterQuery() {
  const q = new URLSearchParams({ status: 'FAILED', recent: '1', limit: String(FAILURES_SHOWN) });
  if (state.filter.kind !== '') q.set('kind', state.filter.kind);
  if (state.filter.error !== '') q.set('error', state.filter.error);
  return q.toString();
}

async function refreshFailures() {
  let page;
  try {
    page = await api(`records?${filterQuery()}`);
  } catch (err) {
    if (isUnauthorized(err)) return;
    $('filter-message').textContent = messageOf(err);
    $('failures').replaceChildren();
    $('failures-empty').hidden = true;
    return;
  }
  if (!state.authed) return;
  $('filter-message').textContent = '';
  $('failures').replaceChildren(
    ...page.records.map((r) =>
      el(
        'tr',
        { testid: 'failure-row', dataset: { kind: r.kind, id: r.id } },
        el('td', { class: 'mono' }, r.kind),
        el('td', { class: 'mono' }, el('button', { type: 'button', class: 'lookup', title: 'show its timeline', onclick: () => lookup(r.kind, r.id) }, r.id)),
        el('td', { class: 'num' }, fmt(r.attempts)),
        timeCell(r.updatedAt),
        el('td', { class: 'error', title: r.lastError ?? '', testid: 'failure-error' }, firstLine(r.lastError)),
      ),
    ),
  );
  $('failures-empty').hidden = page.records.length > 0;
}

$('filter').addEventListener('submit', (event) => {
  event.preventDefault();
  readFilter();
  $('requeue-result').textContent = '';
  tick();
});
$('filter-kind').addEventListener('change', () => {
  readFilter();
  tick();
});

/** The requeue the current filter means: those it shows, or every FAILED record (all: true). */
function requeueRequest() {
  const body = {};
  if (state.filter.kind !== '') body.kinds = [state.filter.kind];
  if (state.filter.error !== '') body.error = state.filter.error;
  if (body.kinds === undefined && body.error === undefined) body.all = true;
  return body;
}

function describeFilter(f) {
  const parts = [];
  if (f.kind !== '') parts.push(`of kind ${f.kind}`);
  if (f.error !== '') parts.push(`whose last error matches /${f.error}/`);
  return parts.length === 0 ? '(every kind)' : parts.join(' and ');
}

$('requeue').addEventListener('click', async () => {
  readFilter();
  $('requeue-result').textContent = '';
  $('filter-message').textContent = '';
  const request = requeueRequest();
  let dry;
  try {
    dry = await api('requeue', { method: 'POST', body: { ...request, dryRun: true } });
  } catch (err) {
    if (!isUnauthorized(err)) $('filter-message').textContent = `Requeue: ${messageOf(err)}`;
    return;
  }
  state.pendingRequeue = { request, description: describeFilter(state.filter) };
  const text = $('confirm-text');
  const button = $('confirm-button');
  if (dry.matched === 0) {
    text.replaceChildren('No FAILED records ', state.pendingRequeue.description, ' match: there is nothing to requeue.');
    button.hidden = true;
  } else {
    text.replaceChildren(
      el('strong', { testid: 'requeue-count', dataset: { value: String(dry.matched) } }, fmt(dry.matched)),
      ` FAILED record${dry.matched === 1 ? '' : 's'} ${state.pendingRequeue.description} would be moved back to COMPLETED and processed again.`,
    );
    button.hidden = false;
    button.textContent = `Requeue ${fmt(dry.matched)}`;
  }
  const dialog = $('confirm');
  dialog.returnValue = '';
  dialog.showModal();
});

$('confirm').addEventListener('close', async () => {
  const pending = state.pendingRequeue;
  state.pendingRequeue = null;
  if ($('confirm').returnValue !== 'confirm' || pending === null || !state.authed) return;
  try {
    const done = await api('requeue', { method: 'POST', body: pending.request });
    const result = $('requeue-result');
    result.textContent = `Requeued ${fmt(done.requeued)} record${done.requeued === 1 ? '' : 's'} ${pending.description}${done.matched !== done.requeued ? ` (${fmt(done.matched)} matched; the others changed meanwhile)` : ''}${done.interrupted ? '; interrupted, run it again for the rest' : ''}.`;
    result.dataset.requeued = String(done.requeued);
  } catch (err) {
    if (!isUnauthorized(err)) $('filter-message').textContent = `Requeue failed: ${messageOf(err)}`;
    return;
  }
  tick();
});

// ---------------------------------------------------------------- record lookup

$('lookup').addEventListener('submit', (event) => {
  event.preventDefault();
  const kind = $('lookup-kind').value.trim() || 'default';
  const id = $('lookup-id').value;
  if (id === '') return;
  lookup(kind, id);
});

async function lookup(kind, id) {
  $('lookup-kind').value = kind;
  $('lookup-id').value = id;
  $('lookup-message').textContent = '';
  state.looked = { kind, id };
  try {
    renderRecord(await fetchTimeline(kind, id));
  } catch (err) {
    if (isUnauthorized(err)) return;
    state.looked = null;
    $('record').hidden = true;
    $('lookup-message').textContent = messageOf(err);
  }
  $('record').scrollIntoView({ block: 'nearest' });
}

const fetchTimeline = (kind, id) => api(`records/${encodeURIComponent(id)}/timeline?kind=${encodeURIComponent(kind)}`);

/** With each poll, the record shown is read again (one record: cheap). */
async function refreshLookup() {
  const looked = state.looked;
  if (looked === null) return;
  try {
    const inspection = await fetchTimeline(looked.kind, looked.id);
    if (state.looked === looked && state.authed) renderRecord(inspection);
  } catch {
    // Shown as it was; a lookup of its own says what is wrong.
  }
}

function renderRecord({ record: r, timeline }) {
  const facts = [
    ['record', `${r.kind} / ${r.id}`],
    ['status', r.status],
    ['version', String(r.version)],
    ['attempts', String(r.attempts)],
    ...(r.status === 'COMPLETED' ? [['due', formatTime(r.runAfter)]] : []),
    ...(r.lease !== null ? [['lease', `held by ${r.lease.owner ?? '?'} until ${r.lease.expiresAt === null ? '?' : formatTime(r.lease.expiresAt)}`]] : []),
    ...(r.lastError === null ? [] : [['last error', r.lastError]]),
    ['data', short(r.data)],
    ...(r.processedAt === null ? [] : [['result', `${short(r.result)} (version ${r.processedVersion}, ${formatTime(r.processedAt)})`]]),
    ['created', formatTime(r.createdAt)],
    ['updated', formatTime(r.updatedAt)],
  ];
  $('record-facts').replaceChildren(
    ...facts.flatMap(([name, value]) => [el('dt', {}, name), el('dd', { class: name === 'last error' ? 'err-text' : undefined, testid: `record-${name.replace(' ', '-')}` }, value)]),
  );
  $('timeline').replaceChildren(
    ...timeline.map((t) =>
      el(
        'tr',
        { testid: 'timeline-row' },
        timeCell(t.at),
        el('td', { testid: 'timeline-what' }, t.what),
        el('td', { class: 'num' }, t.version === null ? '' : `v${t.version}`),
        el('td', { class: t.what === 'failed' || t.what === 'retried' ? 'error' : undefined }, t.summary),
      ),
    ),
  );
  $('record').hidden = false;
}

// ---------------------------------------------------------------- start

tick();
