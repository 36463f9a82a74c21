/**
 * The dashboard (GET /, dashboard/) in a real headless Chromium against a real API and Postgres:
 * it shows what GET /stats says, polls by itself, shows a record's timeline, requeues failed
 * records after a dry-run confirmation (audited as via "api"), and with ROWFLEET_API_TOKENS shows
 * nothing but a login form until a valid token is given. No console errors on the way.
 *
 * Needs Chromium: ROWFLEET_CHROMIUM, else /usr/bin/chromium. Skipped when absent, except under CI
 * (which installs it in .ci/run), where its absence fails the test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page, Request, Response } from 'playwright-core';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { CHROMIUM_PATH, chromiumPresent, failedLoad, launchChromium, watchedPage } from './helpers/browser.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { waitFor } from './helpers/wait.ts';
import { buildServer } from '../src/http/server.ts';
import { loadConfig, type ConfigOverrides } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import type { Status } from '../src/ops/status.ts';
import type { Inspection } from '../src/ops/inspect.ts';

const present = chromiumPresent();
const inCI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
if (!present && !inCI) {
  console.warn(`dashboard.test.ts skipped: no Chromium at ${CHROMIUM_PATH}; install it (apt-get install chromium) or set ROWFLEET_CHROMIUM to its executable`);
}

const TOKEN = 'dashboard-token-7f3a';
const STATUSES = ['COMPLETED', 'PROCESSING', 'PROCESSED', 'FAILED', 'DELETED'] as const;
const fmt = (n: number) => n.toLocaleString('en-US');
/** Waits on what the page shows: playwright's locators wait by themselves, values are polled. */
const poll = <T>(fn: () => Promise<T> | T) => expect.poll(fn, { timeout: 10_000, interval: 50 });

interface Served {
  app: FastifyInstance;
  url: string;
}

let db: TestDatabase;
let open: Served;
let locked: Served;
let browser: Browser;
let releaseSlow: () => void = () => {};
let slowWorker: Promise<unknown> | undefined;

async function serve(overrides: ConfigOverrides = {}): Promise<Served> {
  const app = buildServer({ config: loadConfig({}, { databaseUrl: db.url, ...overrides }), pool: db.pool, log: silentLogger });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url };
}

async function getJson<T>(path: string, headers: Record<string, string> = {}): Promise<T> {
  const res = await fetch(`${open.url}${path}`, { headers });
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
}

async function upsert(items: unknown[]): Promise<void> {
  const res = await fetch(`${open.url}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items }) });
  expect(res.status, await res.clone().text()).toBe(200);
}

const statusOf = async (kind: string, id: string) =>
  (await db.pool.query<{ status: string }>(`SELECT status FROM rowfleet.records WHERE kind = $1 AND id = $2`, [kind, id])).rows[0]?.status;

describe.skipIf(!present && !inCI)('the dashboard in Chromium', () => {
  beforeAll(async () => {
    if (!present) throw new Error(`no Chromium at ${CHROMIUM_PATH}: CI must install it (.ci/run: apt-get install chromium) or set ROWFLEET_CHROMIUM`);
    db = await createTestDatabase({ poolSize: 8 });
    [open, locked, browser] = await Promise.all([serve(), serve({ apiTokens: [TOKEN] }), launchChromium()]);

    // Two kinds through the API; a real worker processes them, failing the bad ones for good.
    await upsert([
      ...['o-1', 'o-2', 'o-3', 'o-4', 'o-5', 'o-6'].map((id, i) => ({ kind: 'shop.order', id, data: { total: 10 * (i + 1) } })),
      ...['m-1', 'm-2', 'm-3'].map((id) => ({ kind: 'shop.mail', id, data: { to: `${id}@example.com` } })),
    ]);
    const failing = new Set(['o-5', 'o-6', 'm-3']);
    const handler = async (record: { kind: string; id: string }) => {
      if (!failing.has(record.id)) return { ok: true };
      // Markup in an error: the page must show it as text.
      throw new Error(record.kind === 'shop.order' ? `payment declined for ${record.id} <b>card</b>` : `smtp 451 for ${record.id}`);
    };
    await runWorkerUntil(
      db,
      handler,
      () => waitFor(async () => (await db.pool.query(`SELECT 1 FROM rowfleet.records WHERE status NOT IN ('PROCESSED', 'FAILED')`)).rowCount === 0, 20_000, 'every record settled'),
      { maxAttempts: 1 },
    );
    // Two more orders left waiting (COMPLETED, due), and a worker that stays alive holding one record.
    await upsert([
      { kind: 'shop.order', id: 'o-7', data: { total: 70 } },
      { kind: 'shop.order', id: 'o-8', data: { total: 80 } },
      { kind: 'shop.slow', id: 's-1', data: {} },
    ]);
    const released = new Promise<void>((resolve) => (releaseSlow = resolve));
    slowWorker = runWorkerUntil(db, { 'shop.slow': async () => { await released; return { ok: true }; } }, () => released, { concurrency: 2, batch: 2 });
    await waitFor(async () => (await statusOf('shop.slow', 's-1')) === 'PROCESSING', 10_000, 's-1 held by the slow worker');
  });

  afterAll(async () => {
    releaseSlow();
    await slowWorker;
    await browser?.close();
    await open?.app.close();
    await locked?.app.close();
    await db?.drop();
  });

  it('serves the page and its assets with the right types, no-cache, and nothing else under /dashboard/', async () => {
    const expected: Record<string, RegExp> = {
      '/': /^text\/html/,
      '/dashboard/dashboard.js': /^text\/javascript/,
      '/dashboard/dashboard.css': /^text\/css/,
      '/dashboard/uplot.js': /^text\/javascript/,
      '/dashboard/uplot.css': /^text\/css/,
    };
    for (const [path, type] of Object.entries(expected)) {
      // Without a token, on the server that wants one: the files hold no data.
      const res = await fetch(`${locked.url}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toMatch(type);
      expect(res.headers.get('cache-control'), path).toBe('no-cache');
      expect((await res.text()).length, path).toBeGreaterThan(100);
    }
    expect((await fetch(`${locked.url}/`)).headers.get('content-security-policy')).toContain("script-src 'self'");
    for (const path of ['/dashboard/index.html', '/dashboard/../package.json', '/dashboard/%2e%2e/package.json', '/dashboard/uPlot.iife.min.js']) {
      expect((await open.app.inject({ method: 'GET', url: path })).statusCode, path).toBe(404);
    }
  });

  it('shows the counts GET /stats reports, the chart, workers and failures, and updates by itself', async () => {
    const { page, problems, close } = await watchedPage(browser);
    try {
      await page.goto(open.url);
      await page.getByTestId('dashboard').waitFor();
      const stats = await getJson<Status>('/stats');
      expect(stats.counts).toMatchObject({ COMPLETED: 2, PROCESSING: 1, PROCESSED: 6, FAILED: 3 });
      for (const st of STATUSES) await poll(() => page.getByTestId(`total-${st}`).textContent()).toBe(fmt(stats.counts[st]));
      await poll(() => page.getByTestId('total-due').textContent()).toBe(fmt(stats.due));
      const oldest = Number(await page.getByTestId('total-oldest-due').getAttribute('data-value'));
      expect(Math.abs(oldest - stats.oldestDueAgeSeconds)).toBeLessThan(30);

      // One row per kind, each with its counts.
      await poll(() => page.getByTestId('kind-row').count()).toBe(stats.kinds.length);
      for (const k of stats.kinds) {
        const row = page.locator(`[data-testid="kind-row"][data-kind="${k.kind}"]`);
        for (const st of STATUSES) expect(await row.getByTestId(`count-${st}`).textContent(), `${k.kind} ${st}`).toBe(fmt(k.counts[st]!));
        expect(await row.getByTestId('kind-due').textContent()).toBe(fmt(k.due));
      }

      // Throughput over 15 minutes: the chart is drawn, its totals are the endpoint's.
      const { minutes } = await getJson<{ minutes: { processed: number; failed: number }[] }>('/stats/throughput?minutes=15');
      const sum = page.getByTestId('throughput-sum');
      await poll(() => sum.getAttribute('data-processed')).toBe(String(minutes.reduce((n, m) => n + m.processed, 0)));
      expect(await sum.getAttribute('data-failed')).toBe(String(minutes.reduce((n, m) => n + m.failed, 0)));
      expect(await sum.getAttribute('data-processed')).toBe('6');
      await page.locator('[data-testid="throughput-chart"] .uplot canvas').waitFor();

      // The worker holding s-1: alive, one in flight.
      const worker = stats.workers.find((w) => w.alive && w.inFlight === 1)!;
      expect(worker).toBeDefined();
      const row = page.locator(`[data-testid="worker-row"][data-worker="${worker.id}"]`);
      await poll(() => row.getByTestId('worker-inflight').textContent()).toBe(`1 / ${worker.concurrency}`);
      expect(await row.textContent()).toContain('alive');

      // The latest failures with their errors, as text (the markup in one is not parsed).
      await poll(() => page.getByTestId('failure-row').count()).toBe(3);
      const o5 = page.locator('[data-testid="failure-row"][data-id="o-5"]');
      expect(await o5.getByTestId('failure-error').textContent()).toBe('payment declined for o-5 <b>card</b>');
      expect(await page.locator('[data-testid="failures-table"] b').count()).toBe(0);

      // A new record shows up without a reload (the page polls).
      await upsert([{ kind: 'shop.mail', id: 'm-4', data: {} }]);
      await poll(() => page.getByTestId('total-COMPLETED').textContent()).toBe(fmt(stats.counts.COMPLETED + 1));
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it('pauses polling while the tab is hidden and resumes when it is shown', async () => {
    const { page, problems, close } = await watchedPage(browser);
    try {
      // The page's clock is driven by the test; its calls to fetch('stats') are counted as they are made.
      await page.clock.install();
      await page.addInitScript(`{
        const fetch = window.fetch.bind(window);
        window.statsCalls = 0;
        window.fetch = (input, init) => { if (String(input) === 'stats') window.statsCalls++; return fetch(input, init); };
      }`);
      const calls = () => page.evaluate('window.statsCalls') as Promise<number>;
      // The next poll is scheduled when the last one's requests have all answered, which on a busy
      // machine can be after a single jump of the clock: move it on in steps until the call is made.
      const untilCall = (n: number) =>
        poll(async () => {
          await page.clock.runFor(500);
          return calls();
        }).toBe(n);
      await page.goto(open.url);
      await poll(() => page.getByTestId('poll-state').textContent()).toMatch(/^live/);
      expect(await calls()).toBe(1);
      // The next poll is due in 3 s: running the clock past it sends it.
      await untilCall(2);
      await poll(() => page.getByTestId('poll-state').textContent()).toMatch(/^live/);
      await setVisibility(page, 'hidden');
      await poll(() => page.getByTestId('poll-state').textContent()).toBe('paused (tab hidden)');
      await page.clock.runFor(30_000);
      expect(await calls()).toBe(2);
      // Shown again: a poll at once, then every 3 s again.
      await setVisibility(page, 'visible');
      await poll(calls).toBe(3);
      await poll(() => page.getByTestId('poll-state').textContent()).toMatch(/^live/);
      await untilCall(4);
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it('looks a record up and shows its timeline, as rowfleet inspect does', async () => {
    const { page, problems, close } = await watchedPage(browser, failedLoad(404, /\/records\/nope\/timeline/));
    try {
      await page.goto(open.url);
      // From the latest failures: its id opens its timeline.
      await page.locator('[data-testid="failure-row"][data-id="o-5"] button').click();
      const expected = await getJson<Inspection>('/records/o-5/timeline?kind=shop.order');
      expect(expected.timeline.map((t) => t.what)).toEqual(['applied', 'failed']);
      await poll(() => page.getByTestId('timeline-what').allTextContents()).toEqual(expected.timeline.map((t) => t.what));
      expect(await page.getByTestId('timeline-table').textContent()).toContain('FAILED after attempt 1: payment declined for o-5 <b>card</b>');
      expect(await page.getByTestId('record-status').textContent()).toBe('FAILED');

      // By kind and id from the form: a processed record, its completion in the timeline.
      await page.getByTestId('lookup-kind').fill('shop.order');
      await page.getByTestId('lookup-id').fill('o-1');
      await page.getByTestId('lookup-submit').click();
      const o1 = await getJson<Inspection>('/records/o-1/timeline?kind=shop.order');
      await poll(() => page.getByTestId('timeline-what').allTextContents()).toEqual(o1.timeline.map((t) => t.what));
      expect(o1.timeline.map((t) => t.what)).toContain('completed');

      // A record that is not there: the API's message.
      await page.getByTestId('lookup-id').fill('nope');
      await page.getByTestId('lookup-submit').click();
      await poll(() => page.getByTestId('lookup-message').textContent()).toBe('no record "shop.order/nope"');
      expect(await page.getByTestId('record').isHidden()).toBe(true);
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it('requeues the failed records the filter shows, then all, after a dry-run count and a confirmation', async () => {
    const { page, problems, close } = await watchedPage(browser);
    try {
      await page.goto(open.url);
      await poll(() => page.getByTestId('failure-row').count()).toBe(3);

      // Cancelled: nothing moves.
      await page.getByTestId('requeue-button').click();
      await page.getByTestId('requeue-dialog').waitFor();
      expect(await page.getByTestId('requeue-count').textContent()).toBe('3');
      await page.getByTestId('requeue-cancel').click();
      await page.getByTestId('requeue-dialog').waitFor({ state: 'hidden' });
      expect(await statusOf('shop.order', 'o-5')).toBe('FAILED');

      // Filtered by kind and error: the two declined orders.
      await page.getByTestId('filter-kind').selectOption('shop.order');
      await page.getByTestId('filter-error').fill('declined');
      await page.getByTestId('filter').locator('button[type="submit"]').click();
      await poll(() => page.getByTestId('failure-row').count()).toBe(2);
      await page.getByTestId('requeue-button').click();
      await page.getByTestId('requeue-dialog').waitFor();
      expect(await page.getByTestId('requeue-count').textContent()).toBe('2');
      expect(await page.getByTestId('requeue-text').textContent()).toContain('of kind shop.order and whose last error matches /declined/');
      await page.getByTestId('requeue-confirm').click();
      await poll(() => page.getByTestId('requeue-result').getAttribute('data-requeued')).toBe('2');
      expect([await statusOf('shop.order', 'o-5'), await statusOf('shop.order', 'o-6'), await statusOf('shop.mail', 'm-3')]).toEqual(['COMPLETED', 'COMPLETED', 'FAILED']);
      await poll(() => page.getByTestId('failures-empty').isVisible()).toBe(true);

      // No filter: every FAILED record (the page sends all: true).
      await page.getByTestId('filter-kind').selectOption('');
      await page.getByTestId('filter-error').fill('');
      await page.getByTestId('requeue-button').click();
      await page.getByTestId('requeue-dialog').waitFor();
      expect(await page.getByTestId('requeue-count').textContent()).toBe('1');
      await page.getByTestId('requeue-confirm').click();
      await poll(() => statusOf('shop.mail', 'm-3')).toBe('COMPLETED');
      await poll(() => page.getByTestId('total-FAILED').textContent()).toBe('0');

      const { rows } = await db.pool.query(`SELECT kind, record_id, detail FROM rowfleet.event_log WHERE reason = 'requeued' ORDER BY seq`);
      expect(rows).toEqual([
        { kind: 'shop.order', record_id: 'o-5', detail: { from: 'FAILED', lastError: 'payment declined for o-5 <b>card</b>', via: 'api' } },
        { kind: 'shop.order', record_id: 'o-6', detail: { from: 'FAILED', lastError: 'payment declined for o-6 <b>card</b>', via: 'api' } },
        { kind: 'shop.mail', record_id: 'm-3', detail: { from: 'FAILED', lastError: 'smtp 451 for m-3', via: 'api' } },
      ]);
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it('with tokens set: only a login form and no data until a valid token, sent on every call; a 401 brings the form back', async () => {
    const { page, problems, close } = await watchedPage(browser, failedLoad(401, /./));
    const data: Response[] = [];
    const assets: Response[] = [];
    const sent: Request[] = [];
    const isData = (url: string) => {
      const path = new URL(url).pathname;
      return path !== '/' && !path.startsWith('/dashboard/');
    };
    page.on('response', (r) => {
      (isData(r.url()) ? data : assets).push(r);
    });
    page.on('request', (r) => {
      if (isData(r.url())) sent.push(r);
    });
    try {
      await page.goto(locked.url);
      await page.getByTestId('login-form').waitFor();
      await poll(() => page.getByTestId('login-message').textContent()).toContain('needs a bearer token');
      expect(await page.getByTestId('dashboard').isHidden()).toBe(true);
      expect(await page.getByTestId('total-FAILED').textContent()).toBe('');
      expect(await page.getByTestId('kind-row').count()).toBe(0);
      expect(data.length).toBeGreaterThan(0);
      expect(data.map((r) => r.status())).toEqual(data.map(() => 401));
      // The page and its assets loaded without a token.
      expect(assets.map((r) => [new URL(r.url()).pathname, r.status()]).sort()).toEqual(
        ['/', '/dashboard/dashboard.css', '/dashboard/dashboard.js', '/dashboard/uplot.css', '/dashboard/uplot.js'].map((p) => [p, 200]),
      );

      // A wrong token: refused, still nothing shown.
      await page.getByTestId('login-token').fill('wrong-token');
      await page.getByTestId('login-submit').click();
      await poll(() => page.getByTestId('login-message').textContent()).toContain('That token was refused');
      expect(await page.getByTestId('dashboard').isHidden()).toBe(true);
      expect(data.map((r) => r.status())).toEqual(data.map(() => 401));

      // The right one: the dashboard, and every data request carries it.
      const before = sent.length;
      await page.getByTestId('login-token').fill(TOKEN);
      await page.getByTestId('login-submit').click();
      await page.getByTestId('dashboard').waitFor();
      const stats = await getJson<Status>('/stats');
      await poll(() => page.getByTestId('total-PROCESSED').textContent()).toBe(fmt(stats.counts.PROCESSED));
      await poll(() => sent.length - before).toBeGreaterThanOrEqual(3);
      for (const r of sent.slice(before)) expect(await r.headerValue('authorization'), r.url()).toBe(`Bearer ${TOKEN}`);
      expect(await page.evaluate('sessionStorage.getItem("rowfleet.token")')).toBe(TOKEN);
      expect(await page.getByTestId('login').isHidden()).toBe(true);

      // The token stops being accepted (here: replaced by a wrong one): the next poll's 401 brings the form back, data gone.
      await page.evaluate('sessionStorage.setItem("rowfleet.token", "revoked")');
      await poll(() => page.getByTestId('login-message').textContent()).toContain('no longer accepts your token');
      expect(await page.getByTestId('dashboard').isHidden()).toBe(true);
      expect(await page.getByTestId('total-PROCESSED').textContent()).toBe('');
      expect(await page.getByTestId('kind-row').count()).toBe(0);
      expect(await page.evaluate('sessionStorage.getItem("rowfleet.token")')).toBeNull();
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });
});

/** What a tab switch does to document.visibilityState, which headless Chromium keeps at "visible". */
async function setVisibility(page: Page, value: 'hidden' | 'visible'): Promise<void> {
  await page.evaluate(`Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => ${JSON.stringify(value)} });
    document.dispatchEvent(new Event('visibilitychange'));`);
}
