/**
 * The engine conformance suite: what every engine must do, run against each (`describe.each`).
 * Every case goes through the engine's own path (its claim, its way of bringing back a record due
 * again); the statements they share are exercised through them. Crash states are fabricated as a
 * crash leaves them (test/helpers/records.ts); time moves through the injected `now` of the
 * statements and, for a running worker, through its ManualClock (test/helpers/clock.ts).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { claimAlone, claimDue, claimIds, suspectsWaiting, type Claimed } from '../src/records/claim.ts';
import { extendLeases, release } from '../src/records/lease.ts';
import { complete, fail } from '../src/records/settle.ts';
import { rescueExpired } from '../src/records/rescue.ts';
import { bossEngine, directEngine, type Engine } from '../src/worker/engine.ts';
import { KindQueues, startBoss, stopBoss } from '../src/boss/boss.ts';
import { recordJob, sweep } from '../src/boss/sweep.ts';
import { enqueuer } from '../src/boss/enqueue.ts';
import { loadConfig } from '../src/config.ts';
import type { PgBoss } from 'pg-boss';
import type { Message } from '../src/records/message.ts';
import { Worker, type WorkerOptions } from '../src/worker/worker.ts';
import { handlerFromExport, PermanentError, type Handler } from '../src/worker/handler.ts';
import { silentLogger } from '../src/log.ts';
import { putRecord, recordRow, settleAll } from './helpers/records.ts';
import { waitFor } from './helpers/wait.ts';
import { advanceUntil, workerClock } from './helpers/clock.ts';
import { systemClock, type Clock } from '../src/worker/clock.ts';

let db: TestDatabase;
let boss: PgBoss;
const bossConfig = loadConfig({}).boss;
beforeAll(async () => {
  db = await createTestDatabase({ poolSize: 12 });
  boss = await startBoss({ config: bossConfig, pool: db.pool, role: 'worker', log: silentLogger });
});
afterAll(async () => {
  if (boss) await stopBoss(boss);
  await db?.drop();
});

/**
 * What a test needs from an engine: the engine itself, `offer()` to make due records visible to
 * it (the boss engine sees records through jobs, which the sweep sends), `write()` for producers
 * (the boss engine's producers send jobs in the upsert's transaction), and whether claims follow
 * due order (pg-boss fetches one sweep's jobs in no particular order).
 */
interface Fixture {
  make(pool: pg.Pool): Engine;
  offer(): Promise<void>;
  /** Makes exactly these records visible to the engine, whatever their state (the boss engine: a job each). */
  offerIds(ids: readonly string[]): Promise<void>;
  write(messages: Message[]): Promise<unknown>;
  reset(): Promise<void>;
  ordered: boolean;
  /**
   * The worker's clock for a retry: pg-boss defers a job by the database's own clock, so the boss
   * engine's retries run in real time; everything else runs on a ManualClock.
   */
  retryClock: Partial<WorkerOptions>;
}

const fixtures: Array<[string, Fixture]> = [
  [
    'direct',
    {
      make: (pool) => directEngine(pool),
      offer: async () => {},
      offerIds: async () => {},
      write: (messages) => upsertMessages(db.pool, messages),
      reset: async () => {},
      ordered: true,
      retryClock: {},
    },
  ],
  [
    'boss',
    {
      make: (pool) => bossEngine(pool, boss, bossConfig.queue, bossConfig.schema),
      offer: async () => {
        await sweep(db.pool, boss, { queue: bossConfig.queue, schema: bossConfig.schema, batch: 1000 });
      },
      offerIds: async (ids) => {
        await boss.insert(
          bossConfig.queue,
          ids.map((id) => recordJob('default', id, '1')),
        );
      },
      write: (messages) => upsertMessages(db.pool, messages, { enqueue: enqueuer(boss, new KindQueues(boss, db.pool, bossConfig.queue, bossConfig.schema)) }),
      reset: async () => {
        await boss.deleteQueuedJobs(bossConfig.queue);
      },
      ordered: false,
      retryClock: { clock: systemClock },
    },
  ],
];

const LEASE = 30_000;
const upsert = (id: string, data: object, version?: number) => upsertMessages(db.pool, [parseMessage({ id, data, version }, { maxDepth: 64 })]);
const row = (id: string) => recordRow(db.pool, id);
const claimFor = (engine: Engine, limit: number, owner = 'w1', leaseMs = LEASE, now?: Date): Promise<Claimed[]> => engine.claim(limit, { owner, leaseMs, now });
const later = (ms: number) => new Date(Date.now() + ms);

/**
 * Runs a worker in-process until `until` resolves, then stops it. The worker runs on a ManualClock
 * (test/helpers/clock.ts) unless `overrides.clock` says otherwise: its poll, heartbeats, timeouts,
 * rescues, retry wake-ups and drain wait for the test to move time, never for real time.
 */
async function runWorker(
  engine: Engine,
  handler: Handler,
  until: (worker: Worker, clock: Clock) => Promise<unknown>,
  overrides: Partial<WorkerOptions> = {},
  transactional = false,
): Promise<Worker> {
  const clock = workerClock();
  const options: WorkerOptions = {
    pool: db.pool,
    databaseUrl: db.url,
    engine,
    handler: handlerFromExport(handler, 'test', transactional),
    log: silentLogger,
    concurrency: 4,
    batch: 10,
    leaseMs: LEASE,
    timeoutMs: 10_000,
    maxAttempts: 3,
    backoff: { baseMs: 60_000, capMs: 60_000 },
    maxExpirations: 3,
    pollMs: 60_000,
    rescueEveryMs: 60_000,
    graceMs: 1_000,
    clock,
    ...overrides,
  };
  const worker = new Worker(options);
  const stop = new AbortController();
  let stopped = false;
  const running = worker.run(stop.signal).finally(() => (stopped = true));
  try {
    await until(worker, options.clock!);
  } finally {
    stop.abort();
    // The drain gives in-flight handlers the grace period on the worker's clock: move it along.
    await advanceUntil(options.clock!, 100, () => stopped, 10_000, 'the worker to stop');
    await running;
  }
  return worker;
}

describe.each(fixtures)('engine %s', (name, fx) => {
  let engine: Engine;
  let prefix: string;
  const offer = () => fx.offer();
  beforeEach(async (ctx) => {
    engine = fx.make(db.pool);
    prefix = `${name}-${ctx.task.id}-`;
    // Each test sees only its own records as due.
    await settleAll(db.pool);
    await fx.reset();
  });

  it('claims at most the limit, oldest due first, and never what is not due', async () => {
    for (let i = 0; i < 5; i++) await upsert(`${prefix}${i}`, { i });
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '1 hour' WHERE id = $1`, [`${prefix}0`]);
    await offer();
    const first = await claimFor(engine, 2);
    if (fx.ordered) expect(first.map((c) => c.id)).toEqual([`${prefix}1`, `${prefix}2`]);
    expect(first).toHaveLength(2);
    expect(first[0]).toMatchObject({ attempts: 1, version: expect.any(String) });
    const rest = await claimFor(engine, 10);
    expect([...first, ...rest].map((c) => c.id).sort()).toEqual([1, 2, 3, 4].map((i) => `${prefix}${i}`));
    expect(await row(`${prefix}1`)).toMatchObject({ status: 'PROCESSING' });
    expect(await claimFor(engine, 10)).toEqual([]);
  });

  it('claims only records that are due and not held, whatever points it at others', async () => {
    const [due, held, later_, done, missing] = ['due', 'held', 'later', 'done', 'missing'].map((x) => `${prefix}${x}`) as [string, string, string, string, string];
    await putRecord(db.pool, due, { enqueued: true });
    await putRecord(db.pool, held, { lease: { owner: 'other', expiresInMs: 60_000 }, enqueued: false });
    await putRecord(db.pool, later_, { dueInMs: 3_600_000, enqueued: true });
    await putRecord(db.pool, done, { status: 'PROCESSED' });
    await fx.offerIds([due, held, later_, done, missing]);
    const claimed = await claimFor(engine, 10);
    expect(claimed.map((c) => c.id)).toEqual([due]);
    expect(await row(held)).toMatchObject({ status: 'PROCESSING', lease_owner: 'other' });
    // Not due yet: still waiting, and (engine boss) its spent job's mark cleared, so the sweep sends it again.
    expect(await row(later_)).toMatchObject({ status: 'COMPLETED', ...(name === 'boss' && { enqueued_at: null }) });
    expect(await row(done)).toMatchObject({ status: 'PROCESSED' });
    expect(await claimFor(engine, 10, 'w2')).toEqual([]);
  });

  it('gives each record to exactly one of many concurrent claimers', async () => {
    const n = 300;
    await upsertMessages(db.pool, Array.from({ length: n }, (_, i) => parseMessage({ id: `${prefix}${i}`, data: { i } }, { maxDepth: 64 })));
    await offer();
    const claimers = Array.from({ length: 8 }, async (_, w) => {
      const got: Claimed[] = [];
      for (;;) {
        const batch = await claimFor(engine, 7, `w${w}`);
        if (batch.length === 0) return got;
        got.push(...batch);
      }
    });
    const ids = (await Promise.all(claimers)).flat().map((c) => c.id);
    expect(ids).toHaveLength(n);
    expect(new Set(ids).size).toBe(n);
  });

  it('completes with a versioned compare-and-set: PROCESSED with the result', async () => {
    await upsert(`${prefix}a`, { n: 1 }, 1);
    await offer();
    const [claimed] = await claimFor(engine, 1);
    const outcome = await complete(db.pool, [{ ...claimed!, result: { ok: 1 } }]);
    expect(outcome.get(`default/${prefix}a`)).toBe('processed');
    expect(await row(`${prefix}a`)).toMatchObject({ status: 'PROCESSED', result: { ok: 1 }, processed_version: '1' });
    // A second completion with the same (now cleared) token is refused.
    expect((await complete(db.pool, [{ ...claimed!, result: {} }])).get(`default/${prefix}a`)).toBe('lost');
  });

  it('conflates: a newer version during processing sends the record back, and it is processed with the newest data', async () => {
    await upsert(`${prefix}hot`, { n: 1 }, 1);
    await offer();
    const [claimed] = await claimFor(engine, 1);
    await upsert(`${prefix}hot`, { n: 2 }, 2);
    await upsert(`${prefix}hot`, { n: 3 }, 3);
    expect((await complete(db.pool, [{ ...claimed!, result: 'stale' }])).get(`default/${prefix}hot`)).toBe('superseded');
    expect(await row(`${prefix}hot`)).toMatchObject({ status: 'COMPLETED', version: '3', attempts: 0 });
    await offer();
    const [again] = await claimFor(engine, 1);
    expect(again).toMatchObject({ id: `${prefix}hot`, version: '3', data: { n: 3 } });
    expect((await complete(db.pool, [{ ...again!, result: 'fresh' }])).get(`default/${prefix}hot`)).toBe('processed');
    expect(await row(`${prefix}hot`)).toMatchObject({ status: 'PROCESSED', result: 'fresh', processed_version: '3' });
  });

  it('does not hand out a failed record before its backoff has passed, and does after', async () => {
    await upsert(`${prefix}f`, { n: 1 }, 1);
    await offer();
    const [claimed] = await claimFor(engine, 1);
    expect(await fail(db.pool, { ...claimed!, error: 'boom', permanent: false, maxAttempts: 3, backoffMs: 60_000 })).toBe('retry');
    // The engine's own way back for a record due again (engine boss: a job deferred to its due time).
    await engine.dueAgain({ kind: 'default', id: claimed!.id, version: claimed!.version, delayMs: 60_000 });
    expect(await claimFor(engine, 1)).toEqual([]);
    expect(await claimFor(engine, 1, 'w1', LEASE, later(120_000))).toEqual(fx.ordered ? [expect.objectContaining({ id: `${prefix}f`, attempts: 2 })] : []);
  });

  it('retries a failing handler with backoff until its attempts are exhausted, then FAILED with one event', async () => {
    await upsert(`${prefix}f`, { n: 1 }, 1);
    await offer();
    let calls = 0;
    const worker = await runWorker(
      engine,
      async () => {
        calls += 1;
        throw new Error(`boom ${calls}`);
      },
      // No sweep runs and the poll is long: only the engine's own way back brings each retry.
      (_worker, clock) => advanceUntil(clock, 20, async () => (await row(`${prefix}f`))?.status === 'FAILED', 20_000, 'the record to fail'),
      { pollMs: 600_000, maxAttempts: 3, backoff: { baseMs: 50, capMs: 50 }, ...fx.retryClock },
    );
    expect(calls).toBe(3);
    expect(worker.stats).toMatchObject({ retried: 2, failed: 1 });
    expect(await row(`${prefix}f`)).toMatchObject({ status: 'FAILED', last_error: 'boom 3', attempts: 3 });
    const { rows } = await db.pool.query(`SELECT reason, detail FROM rowfleet.event_log WHERE record_id = $1 AND reason IN ('retried', 'failed') ORDER BY seq`, [`${prefix}f`]);
    expect(rows.map((r) => r.reason)).toEqual(['retried', 'retried', 'failed']);
    expect(rows[2].detail).toEqual({ error: 'boom 3', attempts: 3, permanent: false });
  });

  it('wakes for a retry when it falls due, not at the next poll', async () => {
    await upsert(`${prefix}r`, { n: 1 });
    await offer();
    let calls = 0;
    let waited = 0;
    const worker = await runWorker(
      engine,
      async () => {
        calls += 1;
        if (calls === 1) throw new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) });
        return { ok: true };
      },
      // With a 10-minute poll, only the wake-up at the retry's due time brings it back within the test.
      async (_worker, clock) => {
        const start = clock.monotonic();
        await advanceUntil(clock, 20, async () => (await row(`${prefix}r`))?.status === 'PROCESSED', 30_000, 'the retry to be processed');
        waited = clock.monotonic() - start;
      },
      { pollMs: 600_000, backoff: { baseMs: 300, capMs: 300 }, random: () => 0.99, ...fx.retryClock },
    );
    // The backoff was 297 ms; the poll would have come after 600 s.
    expect(waited).toBeGreaterThanOrEqual(297);
    expect(waited).toBeLessThan(60_000);
    expect(calls).toBe(2);
    expect(worker.stats).toMatchObject({ retried: 1, processed: 1 });
    const { rows } = await db.pool.query(`SELECT detail->>'error' AS error FROM rowfleet.event_log WHERE record_id = $1 AND reason = 'retried'`, [`${prefix}r`]);
    // The cause is kept: "fetch failed" alone does not say what to fix.
    expect(rows).toEqual([{ error: 'TypeError: fetch failed; caused by: connect ECONNREFUSED 127.0.0.1:9' }]);
  });

  it('sends a PermanentError straight to FAILED', async () => {
    await upsert(`${prefix}p`, { n: 1 });
    await offer();
    const worker = await runWorker(
      engine,
      async () => {
        throw new PermanentError('bad data, no point retrying');
      },
      () => waitFor(async () => (await row(`${prefix}p`))?.status === 'FAILED', 10_000, 'the record to be FAILED'),
    );
    expect(worker.stats.failed).toBe(1);
    expect(await row(`${prefix}p`)).toMatchObject({ attempts: 1, last_error: 'PermanentError: bad data, no point retrying' });
  });

  it('aborts a handler past its timeout and counts a failed attempt', async () => {
    await upsert(`${prefix}t`, { n: 1 });
    await offer();
    let aborted: unknown;
    await runWorker(
      engine,
      (_record, ctx) =>
        new Promise((_, reject) => ctx.signal.addEventListener('abort', () => ((aborted = ctx.signal.reason), reject(ctx.signal.reason)))),
      async (_worker, clock) => {
        await waitFor(async () => (await row(`${prefix}t`))?.status === 'PROCESSING', 10_000, 'the handler to start');
        await advanceUntil(clock, 25, async () => (await row(`${prefix}t`))?.last_error !== null, 10_000, 'an error to be recorded');
      },
      { timeoutMs: 100 },
    );
    expect((aborted as Error).name).toBe('HandlerTimeoutError');
    expect(await row(`${prefix}t`)).toMatchObject({ status: 'COMPLETED', attempts: 1, last_error: 'HandlerTimeoutError: handler timed out after 100 ms' });
  });

  it('rescues leases a crash left behind, and fails a record whose lease expired too often (poison)', async () => {
    const [crashed, poison, suspect, alive] = ['crashed', 'poison', 'suspect', 'alive'].map((x) => `${prefix}${x}`) as [string, string, string, string];
    // What kill -9 leaves: PROCESSING with a lease that runs out. Poison: it already ran out 3
    // times, and this time it was held alone in its process. The suspect ran out as often, but
    // beside other records: any of them may have killed the process.
    await putRecord(db.pool, crashed, { lease: { owner: 'dead', expiresInMs: 10_000 } });
    await putRecord(db.pool, poison, { lease: { owner: 'dead', expiresInMs: 10_000, alone: true }, leaseExpirations: 3 });
    await putRecord(db.pool, suspect, { lease: { owner: 'dead', expiresInMs: 10_000 }, leaseExpirations: 3 });
    await putRecord(db.pool, alive, { lease: { owner: 'alive', expiresInMs: 3_600_000 } });
    expect(await rescueExpired(db.pool, { maxExpirations: 3 })).toEqual([]);
    const afterExpiry = later(20_000);
    const rescued = await rescueExpired(db.pool, { maxExpirations: 3, now: afterExpiry });
    expect(rescued.map((r) => [r.id, r.status, r.owner]).sort()).toEqual([
      [crashed, 'COMPLETED', 'dead'],
      [poison, 'FAILED', 'dead'],
      [suspect, 'COMPLETED', 'dead'],
    ]);
    expect(await row(poison)).toMatchObject({ status: 'FAILED', last_error: expect.stringMatching(/^poison: the lease expired 4 times/) });
    expect(await row(suspect)).toMatchObject({ status: 'COMPLETED', lease_expirations: 4 });
    expect(await row(alive)).toMatchObject({ status: 'PROCESSING' });
    const { rows } = await db.pool.query(
      `SELECT record_id, reason, detail->'alone' AS alone FROM rowfleet.event_log WHERE record_id IN ($1, $2, $3) AND reason IN ('rescued', 'failed') ORDER BY record_id`,
      [crashed, poison, suspect],
    );
    expect(rows.map((r) => [r.reason, r.alone])).toEqual([['rescued', false], ['failed', true], ['rescued', false]]);
  });

  it('leaves a suspect to claimAlone, whose lease alone makes it poison, and hands out fencing tokens that grow', async () => {
    await settleAll(db.pool);
    const [suspect, plain] = ['alone-suspect', 'alone-plain'].map((x) => `${prefix}${x}`) as [string, string];
    await putRecord(db.pool, suspect, { leaseExpirations: 2 });
    await putRecord(db.pool, plain, { leaseExpirations: 1 });
    const fenceOf = async (id: string) => Number((await db.pool.query(`SELECT fence FROM rowfleet.records WHERE id = $1`, [id])).rows[0].fence);
    const before = await fenceOf(suspect);
    expect(await suspectsWaiting(db.pool, { maxExpirations: 2 })).toBe(true);
    expect(await suspectsWaiting(db.pool, { maxExpirations: 3 })).toBe(false);
    // Expired twice, with max 2: the claims leave it (the engine's, as the worker makes them).
    await fx.offerIds([suspect, plain]);
    const claimed = await engine.claim(10, { owner: 'w', leaseMs: LEASE, maxExpirations: 2 });
    expect(claimed.map((c) => c.id)).toEqual([plain]);
    expect(await claimAlone(db.pool, { owner: 'w', leaseMs: LEASE, maxExpirations: 3 })).toBeUndefined();
    const alone = await claimAlone(db.pool, { owner: 'w', leaseMs: LEASE, maxExpirations: 2 });
    expect(alone).toMatchObject({ id: suspect, fence: String(before + 1) });
    expect(await suspectsWaiting(db.pool, { maxExpirations: 2 })).toBe(false);
    // Its lease runs out: held alone, so it is poison now.
    const rescued = await rescueExpired(db.pool, { maxExpirations: 2, now: later(LEASE + 10_000) });
    expect(rescued.filter((r) => r.id === suspect).map((r) => r.status)).toEqual(['FAILED']);
    // Requeued, claimed again: the fence grows with every claim.
    await db.pool.query(`UPDATE rowfleet.records SET status = 'COMPLETED', lease_expirations = 0, run_after = now() WHERE id = $1`, [suspect]);
    const [again] = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: LEASE, kinds: [{ kind: 'default', cap: 1, leaseMs: LEASE }] });
    expect(again).toMatchObject({ id: suspect, fence: String(before + 2) });
  });

  it('a worker rescues an expired lease and processes the record through its engine', async () => {
    const id = `${prefix}orphan`;
    await putRecord(db.pool, id, { lease: { owner: 'dead', expiresInMs: -1_000 }, data: { n: 1 } });
    const seen: unknown[] = [];
    const worker = await runWorker(
      engine,
      async (record) => {
        seen.push(record);
        return 'ok';
      },
      // No sweep and a long poll: the rescue (engine boss: its job sent at once) brings the record back.
      // Time moves only until the rescue has happened, so the new holder's lease stays good.
      async (_worker, clock) => {
        await advanceUntil(clock, 50, async () => (await row(id))?.lease_owner !== 'dead', 20_000, 'the expired lease to be rescued');
        await waitFor(async () => (await row(id))?.status === 'PROCESSED', 20_000, 'the rescued record to be processed');
      },
      { pollMs: 600_000, rescueEveryMs: 50 },
    );
    expect(seen).toEqual([{ kind: 'default', id, version: 1, data: { n: 1 }, attempts: 2, priority: 0 }]);
    expect(worker.stats).toMatchObject({ rescued: 1, processed: 1 });
  });

  it('refuses a late heartbeat, completion, failure or release once the lease has expired', async () => {
    await upsert(`${prefix}late`, { n: 1 });
    await offer();
    const [claimed] = await claimFor(engine, 1, 'old-holder', 1_000);
    const afterExpiry = later(5_000);
    expect((await extendLeases(db.pool, { leases: [claimed!], leaseMs: LEASE, now: afterExpiry })).map((l) => l.id)).toEqual([`${prefix}late`]);
    expect((await complete(db.pool, [{ ...claimed!, result: 1 }], afterExpiry)).get(`default/${prefix}late`)).toBe('lost');
    expect(await fail(db.pool, { ...claimed!, error: 'x', permanent: false, maxAttempts: 3, backoffMs: 0 }, afterExpiry)).toBe('lost');
    expect(await release(db.pool, [claimed!], afterExpiry)).toBe(0);
    expect(await row(`${prefix}late`)).toMatchObject({ status: 'PROCESSING' });
  });

  it('aborts the handler of a lost lease and refuses its writes', async () => {
    await upsert(`${prefix}lost`, { n: 1 }, 1);
    await offer();
    let reason: unknown;
    const worker = await runWorker(
      engine,
      (_record, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', () => ((reason = ctx.signal.reason), resolve('too late')))),
      async (_worker, clock) => {
        await waitFor(async () => (await row(`${prefix}lost`))?.status === 'PROCESSING', 10_000, 'the record to be PROCESSING');
        // Another holder took over (as after a rescue and a new claim); the next heartbeat (every 100 ms) finds out.
        await db.pool.query(`UPDATE rowfleet.records SET lease_token = gen_random_uuid(), lease_owner = 'thief' WHERE id = $1`, [`${prefix}lost`]);
        await advanceUntil(clock, 100, () => reason !== undefined, 10_000, 'the handler to see its lease lost');
      },
      { leaseMs: 300 },
    );
    expect((reason as Error).name).toBe('LeaseLostError');
    expect(worker.stats.lost).toBe(1);
    expect(await row(`${prefix}lost`)).toMatchObject({ status: 'PROCESSING', result: null });
  });

  it('releases unfinished records on shutdown without spending an attempt', async () => {
    await upsert(`${prefix}r`, { n: 1 });
    await offer();
    const worker = await runWorker(
      engine,
      (_record, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
      () => waitFor(async () => (await row(`${prefix}r`))?.status === 'PROCESSING', 10_000, 'the record to be PROCESSING'),
      { graceMs: 50 },
    );
    expect(worker.stats.released).toBe(1);
    expect(await row(`${prefix}r`)).toMatchObject({ status: 'COMPLETED', attempts: 0 });
  });

  it('processes records end to end, woken by the upsert', async () => {
    const seen: string[] = [];
    await runWorker(
      engine,
      async (record) => {
        seen.push(record.id);
        return { len: JSON.stringify(record.data).length };
      },
      async () => {
        await fx.write(Array.from({ length: 50 }, (_, i) => parseMessage({ id: `${prefix}${i}`, data: { i } }, { maxDepth: 64 })));
        await waitFor(async () => seen.length === 50, 10_000, 'all 50 records to be handled');
      },
      // No polling to speak of: only the notification can wake it in time.
      { pollMs: 60_000 },
    );
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id LIKE $1 || '%' AND status = 'PROCESSED'`, [prefix]);
    expect(rows[0].n).toBe(50);
  });

  it('gives a record back without spending an attempt when its completion loses a deadlock, and processes it again', async () => {
    await db.pool.query(`CREATE TABLE IF NOT EXISTS ledger (k int PRIMARY KEY, n int)`);
    await db.pool.query(`INSERT INTO ledger VALUES (1, 0) ON CONFLICT (k) DO NOTHING`);
    const id = `${prefix}deadlock`;
    await upsert(id, { n: 1 });
    await offer();
    // Another session holds the record, then wants the ledger row the handler's transaction holds:
    // a lock cycle. Its deadlock_timeout is longer, so the worker's session detects the cycle and is
    // the victim, as a completion meeting an upsert would be.
    const other = await db.pool.connect();
    let handled = 0;
    const held = Promise.withResolvers<void>();
    try {
      const worker = await runWorker(
        engine,
        async (record, ctx) => {
          handled += 1;
          await ctx.query!('UPDATE ledger SET n = n + 1 WHERE k = 1');
          if (handled === 1) await held.promise;
          return { handled };
        },
        async () => {
          await waitFor(async () => handled === 1, 10_000, 'the first execution');
          await other.query(`BEGIN; SET LOCAL deadlock_timeout = '10s'`);
          await other.query(`SELECT 1 FROM rowfleet.records WHERE id = $1 FOR UPDATE`, [id]);
          held.resolve();
          // The completion now waits for the record; this waits for the ledger row: a deadlock.
          await other.query(`UPDATE ledger SET n = n + 100 WHERE k = 1`);
          await other.query('COMMIT');
          await waitFor(async () => (await row(id))?.status === 'PROCESSED', 10_000, 'the record to be PROCESSED');
        },
        {},
        true,
      );
      expect(handled).toBe(2);
      expect(worker.stats).toMatchObject({ processed: 1, released: 1, retried: 0, failed: 0 });
      // The first execution's write rolled back with it; the attempt was given back.
      expect(await row(id)).toMatchObject({ status: 'PROCESSED', attempts: 1, result: { handled: 2 } });
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE record_id = $1 AND reason = 'retried'`, [id]);
      expect(rows[0].n).toBe(0);
    } finally {
      await other.query('ROLLBACK').catch(() => {});
      other.release();
    }
  });

  it('commits a transactional handler\'s writes with its completion, and rolls them back when superseded', async () => {
    await db.pool.query(`CREATE TABLE IF NOT EXISTS effects (record_id text, version bigint, note text)`);
    await upsert(`${prefix}tx`, { n: 1 }, 1);
    await offer();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const versions: unknown[] = [];
    await runWorker(
      engine,
      async (record, ctx) => {
        versions.push(record.version);
        await ctx.query!('INSERT INTO effects VALUES ($1, $2, $3)', [record.id, record.version, ctx.idempotencyKey]);
        if (record.version === 1) await gate;
        return { wrote: true };
      },
      async () => {
        await waitFor(async () => versions.length === 1, 10_000, 'the first version to be handled');
        // A newer version arrives while version 1 is being handled: its effects must not commit.
        await fx.write([parseMessage({ id: `${prefix}tx`, data: { n: 2 }, version: 2 }, { maxDepth: 64 })]);
        release();
        await waitFor(async () => (await row(`${prefix}tx`))?.status === 'PROCESSED', 10_000, 'the record to be PROCESSED');
      },
      {},
      true,
    );
    expect(versions).toEqual([1, 2]);
    const { rows } = await db.pool.query(`SELECT version, note FROM effects WHERE record_id = $1`, [`${prefix}tx`]);
    expect(rows).toEqual([{ version: '2', note: `default:${prefix}tx:2` }]);
    expect(await row(`${prefix}tx`)).toMatchObject({ processed_version: '2', result: { wrote: true } });
  });
});

describe('durability of the claim', () => {
  it('commits claims without waiting for the disk, and outcomes durably', async () => {
    await settleAll(db.pool);
    const ids = ['durable-a', 'durable-b'];
    for (const id of ids) await putRecord(db.pool, id, {});
    const client = await db.pool.connect();
    const setting = async () => (await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]!.synchronous_commit;
    try {
      // A lost claim is a record claimed again, fenced by its token: soft state.
      await client.query('BEGIN');
      const [claimed] = await claimDue(client, { owner: 'w', limit: 1, leaseMs: LEASE });
      expect(await setting()).toBe('off');
      await client.query('COMMIT');
      await client.query('BEGIN');
      await claimIds(client, { kind: 'default', ids: ['durable-b'], owner: 'w', leaseMs: LEASE });
      expect(await setting()).toBe('off');
      await client.query('COMMIT');
      // A completion is what the record's PROCESSED means: it waits for the disk.
      await client.query('BEGIN');
      expect((await complete(client, [{ ...claimed!, result: 1 }])).get(`default/${claimed!.id}`)).toBe('processed');
      expect(await setting()).toBe('on');
      await client.query('COMMIT');
    } finally {
      await client.query('ROLLBACK').catch(() => {});
      client.release();
    }
  });
});
