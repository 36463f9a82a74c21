/**
 * pg-boss as rowfleet uses it: the queue keeps at most one pending job per record, the sweep sends
 * each due record once and re-creates jobs lost behind pg-boss's back, a job whose record is not
 * claimable is a no-op, enqueue-on-upsert commits (or not) with the write, both engines run
 * against one database at once, and the event_log retention deletes only what is old.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { PgBoss } from 'pg-boss';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { loadConfig } from '../src/config.ts';
import { putRecord } from './helpers/records.ts';
import { waitFor } from './helpers/wait.ts';
import { silentLogger } from '../src/log.ts';
import { KindQueues, startBoss, stopBoss } from '../src/boss/boss.ts';
import { handlerFromExport } from '../src/worker/handler.ts';
import { inKeyOrder, recordJob, sweep, type SweepOptions } from '../src/boss/sweep.ts';
import { enqueuer } from '../src/boss/enqueue.ts';
import { applyRetention } from '../src/scheduler/scheduler.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { bossEngine, directEngine } from '../src/worker/engine.ts';
import { Worker } from '../src/worker/worker.ts';
import { buildServer } from '../src/http/server.ts';
import { createClient } from '../src/index.ts';

const b = loadConfig({}).boss;
let db: TestDatabase;
let boss: PgBoss;
beforeAll(async () => {
  db = await createTestDatabase({ poolSize: 12 });
  boss = await startBoss({ config: b, pool: db.pool, role: 'worker', log: silentLogger });
});
afterAll(async () => {
  if (boss) await stopBoss(boss);
  await db?.drop();
});
beforeEach(async () => {
  await db.pool.query(`TRUNCATE rowfleet.records, rowfleet.event_log, rowfleet.sweep_state`);
  await boss.deleteAllJobs(b.queue);
});

const messages = (ids: string[], data: object = {}) => ids.map((id) => parseMessage({ id, data }, { maxDepth: 64 }));
const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const options = (extra: Partial<SweepOptions> = {}): SweepOptions => ({ queue: b.queue, schema: b.schema, batch: 1000, ...extra });
const runSweep = (extra: Partial<SweepOptions> = {}) => sweep(db.pool, boss, options(extra));

/** Pending (created or retry) jobs per record. */
async function pendingJobs(): Promise<Map<string, number>> {
  const { rows } = await db.pool.query<{ key: string; n: number }>(
    `SELECT singleton_key AS key, count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state < 'active' GROUP BY 1`,
    [b.queue],
  );
  return new Map(rows.map((r) => [r.key, r.n]));
}

describe('the process queue', () => {
  it('keeps at most one pending job per record, whoever sends and however often', async () => {
    const all = ids('one-', 200);
    await upsertMessages(db.pool, messages(all));
    const send = enqueuer(boss, new KindQueues(boss, db.pool, b.queue, b.schema));
    // Sweeps racing each other, producers sending on upsert, and plain duplicate inserts.
    await Promise.all([
      runSweep({ batch: 37 }),
      runSweep({ batch: 50 }),
      runSweep(),
      upsertMessages(db.pool, messages(all.slice(0, 100), { again: true }), { enqueue: send }),
      // As a worker sends the jobs of records it gave back: in key order, like every rowfleet sender.
      boss.insert(b.queue, inKeyOrder([...all, ...all].map((id) => recordJob('default', id, '1')))),
      boss.insert(b.queue, inKeyOrder(all.map((id) => recordJob('default', id, '1')))),
    ]);
    const pending = await pendingJobs();
    expect(pending.size).toBe(200);
    expect(Math.max(...pending.values())).toBe(1);
    // Why it holds: the `short` policy's unique index covers created jobs, and with no retries a
    // job never enters `retry`, which that index does not cover.
    const queue = await boss.getQueue(b.queue);
    expect(queue).toMatchObject({ policy: 'short', retryLimit: 0 });
    const { rows } = await db.pool.query(`SELECT DISTINCT retry_limit FROM pgboss.job WHERE name = $1`, [b.queue]);
    expect(rows).toEqual([{ retry_limit: 0 }]);
  });
});

describe('the enqueue sweep', () => {
  it('sends one job per due record; a second run sends nothing', async () => {
    await upsertMessages(db.pool, messages(ids('s-', 120)));
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '1 hour' WHERE id = 's-0'`);
    await putRecord(db.pool, 's-1', { status: 'PROCESSED' });
    const progress: number[] = [];
    expect(await runSweep({ batch: 50, onProgress: (n) => progress.push(n) })).toMatchObject({ enqueued: 118, repaired: 0 });
    expect(progress).toEqual([50, 100, 118]);
    expect(await runSweep()).toMatchObject({ enqueued: 0, repaired: 0, checked: 118 });
    const pending = await pendingJobs();
    expect(pending.size).toBe(118);
    expect(pending.has('s-0') || pending.has('s-1')).toBe(false);
    const [job] = await boss.findJobs<{ id: string; version: string }>(b.queue, { key: 's-5' });
    expect(job?.data).toEqual({ kind: 'default', id: 's-5', version: expect.any(String) });
  });

  it('stops at --limit, and the next run sends the rest', async () => {
    await upsertMessages(db.pool, messages(ids('l-', 30)));
    expect((await runSweep({ limit: 12, batch: 5 })).enqueued).toBe(12);
    expect((await runSweep()).enqueued).toBe(18);
  });

  it('sends records due before the next tick now, deferred to when they are due', async () => {
    await upsertMessages(db.pool, messages(['soon', 'later']));
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '30 seconds' WHERE id = 'soon'`);
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '1 hour' WHERE id = 'later'`);
    expect((await runSweep({ lookaheadMs: 60_000 })).enqueued).toBe(1);
    const [job] = await boss.findJobs(b.queue, { key: 'soon' });
    const { rows } = await db.pool.query(`SELECT run_after FROM rowfleet.records WHERE id = 'soon'`);
    expect(job!.startAfter.getTime()).toBe((rows[0].run_after as Date).getTime());
  });

  it('sends each job with its record\'s priority, and one scheduled by runAt for then', async () => {
    const later = new Date(Date.now() + 30_000);
    await upsertMessages(db.pool, [
      parseMessage({ id: 'p-high', data: {}, priority: 9 }, { maxDepth: 64 }),
      parseMessage({ id: 'p-low', data: {}, priority: -4 }, { maxDepth: 64 }),
      parseMessage({ id: 'p-later', data: {}, priority: 2, runAt: later }, { maxDepth: 64 }),
    ]);
    expect((await runSweep({ lookaheadMs: 60_000 })).enqueued).toBe(3);
    const job = async (key: string) => (await boss.findJobs(b.queue, { key }))[0]!;
    expect((await job('p-high')).priority).toBe(9);
    expect((await job('p-low')).priority).toBe(-4);
    expect(await job('p-later')).toMatchObject({ priority: 2, startAfter: later });
  });

  it('re-creates jobs deleted behind pg-boss\'s back', async () => {
    await upsertMessages(db.pool, messages(ids('d-', 40)));
    expect((await runSweep()).enqueued).toBe(40);
    await db.pool.query(`DELETE FROM pgboss.job WHERE name = $1 AND singleton_key = ANY($2)`, [b.queue, ids('d-', 15)]);
    expect(await runSweep()).toMatchObject({ enqueued: 15, repaired: 15 });
    expect((await pendingJobs()).size).toBe(40);
    expect((await runSweep()).enqueued).toBe(0);
  });

  it('checks a large backlog for lost jobs one slice per sweep, wrapping around', async () => {
    await upsertMessages(db.pool, messages(ids('w-', 25)));
    await runSweep();
    await db.pool.query(`DELETE FROM pgboss.job WHERE name = $1`, [b.queue]);
    const rounds = [];
    for (let i = 0; i < 4; i++) rounds.push(await runSweep({ repairLimit: 10 }));
    expect(rounds.map((r) => r.repaired)).toEqual([10, 10, 5, 0]);
    expect((await pendingJobs()).size).toBe(25);
  });
});

describe('the boss engine', () => {
  it('completes jobs whose record is not claimable as no-ops, and leaves a COMPLETED record to be sent again', async () => {
    await upsertMessages(db.pool, messages(['done', 'held', 'notdue', 'gone-not-really']));
    await putRecord(db.pool, 'done', { status: 'PROCESSED' });
    await putRecord(db.pool, 'held', { lease: { owner: 'other', expiresInMs: 60_000 } });
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '1 hour', enqueued_at = now() WHERE id = 'notdue'`);
    await boss.insert(b.queue, ['done', 'held', 'notdue', 'missing'].map((id) => recordJob('default', id, '1')));
    const engine = bossEngine(db.pool, boss, b.queue, b.schema);
    expect(await engine.claim(10, { owner: 'w1', leaseMs: 30_000 })).toEqual([]);
    const { rows: states } = await db.pool.query(`SELECT DISTINCT state FROM pgboss.job WHERE name = $1`, [b.queue]);
    expect(states).toEqual([{ state: 'completed' }]);
    const { rows } = await db.pool.query(`SELECT id, status, enqueued_at IS NOT NULL AS marked FROM rowfleet.records WHERE id IN ('done', 'held', 'notdue') ORDER BY id`);
    expect(rows).toEqual([
      { id: 'done', status: 'PROCESSED', marked: false },
      { id: 'held', status: 'PROCESSING', marked: false },
      // Its job is spent: unmarked, so that the sweep sends it again.
      { id: 'notdue', status: 'COMPLETED', marked: false },
    ]);
  });

  it('runs beside the direct engine on one database: every record processed, none by both', async () => {
    const all = ids('mix-', 400);
    await upsertMessages(db.pool, messages(all));
    await runSweep();
    const seen = new Map<string, string[]>();
    // Each engine's first handlers wait until the other engine has started one, so both take part
    // however fast either one starts (the direct engine alone once drained all 400 first).
    const started = { direct: Promise.withResolvers<void>(), boss: Promise.withResolvers<void>() };
    const handler = (engine: 'direct' | 'boss') => async (record: { id: string }) => {
      seen.set(record.id, [...(seen.get(record.id) ?? []), engine]);
      started[engine].resolve();
      await started[engine === 'direct' ? 'boss' : 'direct'].promise;
      await new Promise((r) => setTimeout(r, 2));
    };
    const common = {
      pool: db.pool,
      databaseUrl: db.url,
      log: silentLogger,
      concurrency: 8,
      batch: 16,
      leaseMs: 30_000,
      timeoutMs: 10_000,
      maxAttempts: 3,
      backoff: { baseMs: 1000, capMs: 1000 },
      maxExpirations: 3,
      pollMs: 50,
      rescueEveryMs: 60_000,
      graceMs: 1000,
    };
    const workers = [
      new Worker({ ...common, engine: directEngine(db.pool), handler: handlerFromExport(handler('direct'), 'direct', false) }),
      new Worker({
        ...common,
        engine: bossEngine(db.pool, boss, b.queue, b.schema),
        handler: handlerFromExport(handler('boss'), 'boss', false),
      }),
    ];
    const stop = new AbortController();
    const running = workers.map((w) => w.run(stop.signal));
    try {
      await waitFor(
        async () => (await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status <> 'PROCESSED'`)).rows[0].n === 0,
        30_000,
        'every record to be PROCESSED',
      );
    } finally {
      stop.abort();
      await Promise.all(running);
    }
    expect(seen.size).toBe(400);
    expect([...seen.values()].filter((runs) => runs.length !== 1)).toEqual([]);
    // Both engines did part of the work.
    const byEngine = [...seen.values()].map((runs) => runs[0]);
    expect(byEngine).toContain('direct');
    expect(byEngine).toContain('boss');
  });
});

describe('enqueue on upsert', () => {
  it('sends a job for each applied record in the upsert\'s transaction, none for stale messages', async () => {
    const send = enqueuer(boss, new KindQueues(boss, db.pool, b.queue, b.schema));
    await upsertMessages(db.pool, [parseMessage({ id: 'e1', data: { v: 2 }, version: 2 }, { maxDepth: 64 })], { enqueue: send });
    await boss.deleteAllJobs(b.queue);
    const results = await upsertMessages(
      db.pool,
      [
        parseMessage({ id: 'e1', data: { v: 1 }, version: 1 }, { maxDepth: 64 }),
        parseMessage({ id: 'e2', data: {} }, { maxDepth: 64 }),
        parseMessage({ id: 'e2', data: { again: 1 } }, { maxDepth: 64 }),
      ],
      { enqueue: send },
    );
    expect(results.map((r) => r.reason)).toEqual(['stale', 'applied', 'applied']);
    expect([...(await pendingJobs()).keys()]).toEqual(['e2']);

    // The job carries the applied message's priority and runAt.
    const later = new Date(Date.now() + 3_600_000);
    await upsertMessages(db.pool, [parseMessage({ id: 'e3', data: {}, priority: 5, runAt: later }, { maxDepth: 64 })], { enqueue: send });
    expect((await boss.findJobs(b.queue, { key: 'e3' }))[0]).toMatchObject({ priority: 5, startAfter: later });
  });

  it('works through POST /upsert and the library when ROWFLEET_ENQUEUE_ON_UPSERT is on', async () => {
    const config = loadConfig({ ROWFLEET_ENQUEUE_ON_UPSERT: '1' }, { databaseUrl: db.url });
    const app = buildServer({ config, pool: db.pool, log: silentLogger, enqueue: enqueuer(boss, new KindQueues(boss, db.pool, b.queue, b.schema)) });
    const single = await app.inject({ method: 'POST', url: '/upsert', payload: { id: 'http-1', data: { a: 1 } } });
    const batch = await app.inject({ method: 'POST', url: '/upsert', payload: { items: [{ id: 'http-2', data: {} }, { id: 'http-3', data: {} }] } });
    expect([single.statusCode, batch.statusCode]).toEqual([200, 200]);
    await app.close();
    process.env.ROWFLEET_ENQUEUE_ON_UPSERT = '1';
    const client = createClient({ pool: db.pool, databaseUrl: db.url });
    try {
      await client.upsert({ id: 'lib-1', data: { a: 1 } });
    } finally {
      delete process.env.ROWFLEET_ENQUEUE_ON_UPSERT;
      await client.close();
    }
    expect([...(await pendingJobs()).keys()].sort()).toEqual(['http-1', 'http-2', 'http-3', 'lib-1']);
  });

  it('writes nothing when the job cannot be sent: the write and its job commit together', async () => {
    const failing = async () => {
      throw new Error('pg-boss refused the job');
    };
    await expect(upsertMessages(db.pool, messages(['atomic']), { enqueue: failing })).rejects.toThrow('pg-boss refused the job');
    const { rows } = await db.pool.query(`SELECT (SELECT count(*) FROM rowfleet.records)::int AS records, (SELECT count(*) FROM rowfleet.event_log)::int AS events`);
    expect(rows[0]).toEqual({ records: 0, events: 0 });
  });
});

describe('event_log retention', () => {
  it('deletes events older than the retention, oldest first, and keeps the rest', async () => {
    await upsertMessages(db.pool, messages(ids('old-', 30)));
    await db.pool.query(`UPDATE rowfleet.event_log SET received_at = now() - interval '40 days'`);
    await upsertMessages(db.pool, messages(ids('new-', 5)));
    expect(await applyRetention(db.pool, 30 * 24 * 3600_000)).toBe(30);
    expect(await applyRetention(db.pool, 30 * 24 * 3600_000)).toBe(0);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log`);
    expect(rows[0].n).toBe(5);
  });
});
