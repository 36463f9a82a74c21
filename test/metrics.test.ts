/**
 * The workers' metrics (issue 12): every outcome counted by kind and reason, the handler, claim-to-
 * completion and queue-wait histograms, and the lifecycle log lines, in a worker in this process;
 * then served by `rowfleet worker --metrics-port` and summed over a fleet's workers by `rowfleet
 * fleet --metrics-port`, and a port in use refused in one line.
 */
import http from 'node:http';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { waitFor } from './helpers/wait.ts';
import { Processes } from './helpers/processes.ts';
import { WorkerMetrics } from '../src/worker/metrics.ts';
import { PermanentError } from '../src/worker/handler.ts';
import { upsertMessages } from '../src/records/upsert.ts';

let db: TestDatabase;
const procs = new Processes();
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await procs.killAll();
  await db?.drop();
});

/** A metric's value (summed over its series matching `labels`) in a Prometheus text exposition. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) {
      sum += Number(m[3]);
      found = true;
    }
  }
  if (!found) throw new Error(`no ${name}${JSON.stringify(labels)} in:\n${text.slice(0, 3000)}`);
  return sum;
}

const statuses = async (kind: string) =>
  Object.fromEntries((await db.pool.query<{ id: string; status: string }>(`SELECT id, status FROM rowfleet.records WHERE kind = $1`, [kind])).rows.map((r) => [r.id, r.status]));

function scrape(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, body }));
    }).on('error', reject);
  });
}

describe('a worker\'s metrics and lifecycle logs', () => {
  it('counts each outcome by kind and reason, times handlers, claims and completions, and logs each event without data', async () => {
    const kind = 'm.job';
    const ids = ['ok-1', 'ok-2', 'ok-3', 'err', 'perm', 'slow', 'sup', 'retry'];
    await upsertMessages(db.pool, ids.map((id) => ({ kind, id, data: { secret: `data-secret-${id}` } })));
    let retried = false;
    const handler = {
      [kind]: {
        timeout: '200ms',
        async handler(record: { id: string }, ctx: { signal: AbortSignal }) {
          if (record.id === 'err') throw new Error('boom');
          if (record.id === 'perm') throw new PermanentError('never');
          if (record.id === 'slow') return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
          if (record.id === 'retry' && !retried) {
            retried = true;
            throw new Error('once');
          }
          // A newer version arrives while this one runs: its result is superseded.
          if (record.id === 'sup' && (await statuses(kind)).sup === 'PROCESSING' && !supDone) {
            supDone = true;
            await upsertMessages(db.pool, [{ kind, id: 'sup', data: { secret: 'data-secret-sup-2' } }]);
          }
          return { ok: true };
        },
      },
    };
    let supDone = false;
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l)); done(); } });
    const log = pino({ level: 'debug' }, sink);
    const metrics = new WorkerMetrics();
    const settled = async () => {
      const s = await statuses(kind);
      return ['ok-1', 'ok-2', 'ok-3', 'sup', 'retry'].every((id) => s[id] === 'PROCESSED') && ['err', 'perm', 'slow'].every((id) => s[id] === 'FAILED');
    };
    await runWorkerUntil(db, handler, () => waitFor(settled, 20_000, 'every record settled'), { metrics, log, maxAttempts: 2 });
    const text = await metrics.registry.metrics();
    const k = { kind };
    expect(value(text, 'rowfleet_worker_processed_total', k)).toBe(5); // ok ×3, retry's second attempt, sup's newer version
    expect(value(text, 'rowfleet_worker_superseded_total', k)).toBe(1);
    expect(value(text, 'rowfleet_worker_handler_failures_total', { kind, reason: 'error' })).toBe(3); // err twice, retry once
    expect(value(text, 'rowfleet_worker_handler_failures_total', { kind, reason: 'permanent' })).toBe(1);
    expect(value(text, 'rowfleet_worker_handler_failures_total', { kind, reason: 'timeout' })).toBe(2);
    expect(value(text, 'rowfleet_worker_retries_total', k)).toBe(3); // err, slow, retry
    expect(value(text, 'rowfleet_worker_failed_total', k)).toBe(3);
    const claims = value(text, 'rowfleet_worker_claimed_total', k);
    expect(claims).toBe(8 + 3 + 1); // each record once, the three retries, sup's newer version
    expect(value(text, 'rowfleet_worker_queue_wait_seconds_count', k)).toBe(claims);
    expect(value(text, 'rowfleet_worker_handler_duration_seconds_count', k)).toBe(claims);
    expect(value(text, 'rowfleet_worker_handler_duration_seconds_count', { kind, outcome: 'error' })).toBe(6);
    expect(value(text, 'rowfleet_worker_claim_to_completion_seconds_count', k)).toBe(5);
    expect(value(text, 'rowfleet_worker_in_flight')).toBe(0);

    // One line per lifecycle event, with the record's key, version, attempt and worker.
    const about = (msg: string) => lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith(msg));
    expect(about('claimed')).toHaveLength(claims);
    expect(about('completed')).toHaveLength(5);
    for (const line of [...about('claimed'), ...about('completed'), ...about('retried'), ...about('failed'), ...about('superseded')]) {
      expect(line).toMatchObject({ kind, recordId: expect.any(String), version: expect.any(String), attempt: expect.any(Number), worker: expect.any(String) });
    }
    for (const line of about('completed')) expect(line.durationMs).toEqual(expect.any(Number));
    expect(about('superseded')).toHaveLength(1);
    expect(about('retried').map((l) => [l.recordId, l.level])).toEqual(expect.arrayContaining([['err', 40], ['slow', 40], ['retry', 40]]));
    expect(about('failed').map((l) => [l.recordId, l.reason, l.level]).sort()).toEqual([['err', 'error', 40], ['perm', 'permanent', 40], ['slow', 'timeout', 40]]);
    // Record data and lease tokens are never logged.
    const tokens = (await db.pool.query<{ t: string }>(`SELECT DISTINCT lease_token::text AS t FROM rowfleet.records WHERE lease_token IS NOT NULL`)).rows.map((r) => r.t);
    const all = lines.map((l) => JSON.stringify(l)).join('\n');
    expect(all).not.toContain('data-secret');
    for (const t of tokens) expect(all).not.toContain(t);
    expect(all).not.toMatch(/leaseToken/);
  });

  it('counts rescues by kind', async () => {
    await upsertMessages(db.pool, [{ kind: 'm.rescue', id: 'r-1', data: {} }]);
    await db.pool.query(`UPDATE rowfleet.records SET status = 'PROCESSING', lease_owner = 'gone', lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 minute', attempts = 1 WHERE kind = 'm.rescue'`);
    const metrics = new WorkerMetrics();
    await runWorkerUntil(db, { 'm.rescue': async () => 1 }, () => waitFor(async () => (await statuses('m.rescue'))['r-1'] === 'PROCESSED', 20_000, 'rescued and processed'), {
      metrics,
      rescueEveryMs: 50,
      kinds: ['m.rescue'],
    });
    expect(value(await metrics.registry.metrics(), 'rowfleet_worker_rescued_total', { kind: 'm.rescue' })).toBe(1);
  });
});

describe('--metrics-port', () => {
  it('rowfleet worker serves its metrics', async () => {
    await upsertMessages(db.pool, Array.from({ length: 20 }, (_, i) => ({ kind: 'm.one', id: `w-${i}`, data: {} })));
    const worker = procs.start(['worker', '--handler', 'noop', '--kinds', 'm.one', '--metrics-port', '0'], { DATABASE_URL: db.url });
    const url = (await worker.waitForLog((l) => l.msg === 'serving metrics', 30_000, 'the metrics URL')).metrics as string;
    const done = await waitFor(async () => {
      const r = await scrape(url);
      return r.status === 200 && /^rowfleet_worker_processed_total\{kind="m.one"\} 20$/m.test(r.body) ? r.body : undefined;
    }, 30_000, '20 records processed, as the metrics say');
    expect(value(done, 'rowfleet_worker_claimed_total', { kind: 'm.one' })).toBe(20);
    expect(done).toContain('rowfleet_worker_process_resident_memory_bytes');
    expect((await scrape(url.replace('/metrics', '/other'))).status).toBe(404);
    expect(await worker.stop()).toEqual({ code: 0, signal: null });
  });

  it('rowfleet fleet serves the sum over its workers', async () => {
    await upsertMessages(db.pool, Array.from({ length: 60 }, (_, i) => ({ kind: 'm.fleet', id: `f-${i}`, data: {} })));
    const fleet = procs.start(['fleet', '--workers', '2', '--handler', 'noop', '--kinds', 'm.fleet', '--metrics-port', '0'], { DATABASE_URL: db.url });
    const url = (await fleet.waitForLog((l) => l.msg === 'serving metrics', 30_000, 'the fleet\'s metrics URL')).metrics as string;
    const body = await waitFor(async () => {
      const r = await scrape(url);
      if (r.status !== 200 || !/^rowfleet_fleet_workers_scraped 2$/m.test(r.body)) return undefined;
      return /^rowfleet_worker_processed_total\{kind="m.fleet"\} 60$/m.test(r.body) ? r.body : undefined;
    }, 60_000, 'both workers answering, and 60 records processed between them');
    expect(value(body, 'rowfleet_fleet_workers')).toBe(2);
    expect(value(body, 'rowfleet_worker_claimed_total', { kind: 'm.fleet' })).toBe(60);
    // Only the fleet binds the port: no worker said it serves metrics.
    expect(fleet.logs.filter((l) => l.msg === 'serving metrics')).toHaveLength(1);
    expect(await fleet.stop()).toEqual({ code: 0, signal: null });
  });

  it('a port in use is one line and exit code 1, before any work', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as { port: number }).port;
    try {
      const worker = procs.start(['worker', '--handler', 'noop', '--metrics-port', String(port)], { DATABASE_URL: db.url });
      expect(await worker.exited).toEqual({ code: 1, signal: null });
      expect(worker.lines.join('\n')).toContain(`metrics port 127.0.0.1:${port} is in use; choose another --metrics-port (ROWFLEET_METRICS_PORT)`);
      expect(worker.lines.join('\n')).not.toMatch(/\n\s+at /);
    } finally {
      taken.close();
    }
  });
});
