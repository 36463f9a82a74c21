/**
 * Takes docs/dashboard.png and docs/dashboard-login.png: the dashboard on a fleet at work (three
 * kinds, two live workers holding records, some failures, a record's timeline open) and its login
 * form when ROWFLEET_API_TOKENS is set.
 *
 *   node --import tsx scripts/screenshot-dashboard.ts [outDir=docs]
 *
 * Runs against a throwaway embedded Postgres in a temporary folder (never DATABASE_URL: it writes
 * made-up records) and the system's Chromium (ROWFLEET_CHROMIUM, else /usr/bin/chromium).
 * A fresh database has counted only the current minute, so the 14 minutes before it get made-up
 * throughput rows in rowfleet.stats, for the chart to show a curve.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { chromium } from 'playwright-core';
import { ensureEmbedded, stopEmbedded } from '../src/db/embedded.ts';
import { migrateAll } from '../src/boss/migrate.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { buildServer } from '../src/http/server.ts';
import { handlerFromExport, type HandlerContext, type HandlerRecord } from '../src/worker/handler.ts';
import { directEngine } from '../src/worker/engine.ts';
import { Worker } from '../src/worker/worker.ts';

const outDir = path.resolve(process.argv[2] ?? 'docs');
const executablePath = process.env.ROWFLEET_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'screenshot-token';

const home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-shot-'));
const cleanups: Array<() => Promise<unknown>> = [async () => fs.rm(home, { recursive: true, force: true }), () => stopEmbedded(home, silentLogger)];
try {
  const { url } = await ensureEmbedded({ home, log: silentLogger });
  await migrateAll(url, loadConfig({}).boss, silentLogger);
  const pool = new pg.Pool({ connectionString: url, max: 12 });
  cleanups.push(() => pool.end());

  const open = buildServer({ config: loadConfig({}, { databaseUrl: url }), pool, log: silentLogger });
  const locked = buildServer({ config: loadConfig({}, { databaseUrl: url, apiTokens: [TOKEN] }), pool, log: silentLogger });
  const address = await open.listen({ port: 0, host: '127.0.0.1' });
  const lockedAddress = await locked.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => open.close(), () => locked.close());

  const upsert = async (items: unknown[]) => {
    const res = await fetch(`${address}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items }) });
    if (res.status !== 200) throw new Error(`upsert: ${res.status} ${await res.text()}`);
  };

  // The handlers: orders are quick (the "slow-" ones take a while), some invoices and mails fail.
  const work = (ms: number, ctx: HandlerContext) => delay(ms + Math.random() * ms, undefined, { signal: ctx.signal });
  const handler = {
    'order.paid': async (r: HandlerRecord, ctx: HandlerContext) => {
      await work(r.id.startsWith('slow-') ? 20_000 : 20, ctx);
      return { charged: true };
    },
    'invoice.render': async (r: HandlerRecord, ctx: HandlerContext) => {
      await work(30, ctx);
      if (Number(r.id.split('-')[1]) % 9 === 4) throw new Error(`PDF renderer timed out after 30s (template ${r.id.endsWith('4') ? 'eu-vat' : 'us'})`);
      return { pages: 2 };
    },
    'email.send': async (r: HandlerRecord, ctx: HandlerContext) => {
      await work(25, ctx);
      if (Number(r.id.split('-')[1]) % 13 === 7) throw new Error(`SMTP 550 5.1.1 <${r.id}@example.com>: mailbox unavailable`);
      return { queued: true };
    },
  };
  const stop = new AbortController();
  const workers = [0, 1].map(
    () =>
      new Worker({
        pool, databaseUrl: url, engine: directEngine(pool), handler: handlerFromExport(handler, 'screenshot', false), log: silentLogger,
        concurrency: 4, batch: 4, leaseMs: 60_000, timeoutMs: 60_000, maxAttempts: 2, backoff: { baseMs: 100, capMs: 200 },
        maxExpirations: 3, pollMs: 100, rescueEveryMs: 60_000, graceMs: 100,
      }),
  );
  const running = workers.map((w) => w.run(stop.signal));
  cleanups.push(async () => {
    stop.abort();
    await Promise.all(running);
  });

  const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${1000 + i}`);
  await upsert([
    ...ids('ord', 160).map((id, i) => ({ kind: 'order.paid', id, data: { total: (i * 37) % 500, currency: 'EUR' } })),
    ...ids('inv', 90).map((id) => ({ kind: 'invoice.render', id, data: { order: id.replace('inv', 'ord') } })),
    ...ids('mail', 120).map((id) => ({ kind: 'email.send', id, data: { template: 'receipt' } })),
  ]);
  const settled = async () =>
    (await pool.query(`SELECT 1 FROM rowfleet.records WHERE status NOT IN ('PROCESSED', 'FAILED')`)).rowCount === 0;
  for (let i = 0; !(await settled()); i++) {
    if (i > 600) throw new Error('the records did not settle in a minute');
    await delay(100);
  }
  // The 14 minutes before this one, as a fleet that had been running would have counted them.
  await pool.query(
    `INSERT INTO rowfleet.stats (minute, backend, processed, failed, retried)
     SELECT date_trunc('minute', now()) - m * interval '1 minute', 0,
            round(420 + 260 * sin(m / 2.2) + 40 * cos(m * 1.7)), round(3 + 3 * sin(m)), round(9 + 6 * cos(m / 1.5))
       FROM generate_series(1, 14) AS m`,
  );
  // Work in flight: slow orders hold both workers' slots, the rest wait their turn (due).
  await upsert(ids('slow', 11).map((id) => ({ kind: 'order.paid', id, data: { total: 999, currency: 'EUR' } })));
  for (let i = 0; (await pool.query(`SELECT 1 FROM rowfleet.records WHERE status = 'PROCESSING'`)).rowCount! < 8; i++) {
    if (i > 100) throw new Error('the workers did not pick up the slow orders');
    await delay(50);
  }
  await delay(1500); // a due age of a second or two

  const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
  cleanups.push(() => browser.close());
  await fs.mkdir(outDir, { recursive: true });

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  await page.goto(address);
  await page.getByTestId('dashboard').waitFor();
  await page.locator('[data-testid="throughput-chart"] .uplot canvas').waitFor();
  const failure = page.locator('[data-testid="failure-row"][data-kind="invoice.render"] button').first();
  await failure.click();
  await page.getByTestId('timeline-row').first().waitFor();
  await page.evaluate('window.scrollTo(0, 0)');
  await page.screenshot({ path: path.join(outDir, 'dashboard.png'), fullPage: true });

  const login = await browser.newPage({ viewport: { width: 1280, height: 560 }, deviceScaleFactor: 1 });
  await login.goto(lockedAddress);
  await login.getByTestId('login-token').fill('not-the-token');
  await login.getByTestId('login-submit').click();
  await login.getByText('That token was refused').waitFor();
  await login.screenshot({ path: path.join(outDir, 'dashboard-login.png') });
  console.log(`wrote ${path.join(outDir, 'dashboard.png')} and ${path.join(outDir, 'dashboard-login.png')}`);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => console.error(`cleanup: ${(err as Error).message}`));
}
