/**
 * One lock order (drizzle/0006_hot_path.sql): batched upserts of unsorted ids racing the workers'
 * claims, heartbeats and batched completions on the same records never deadlock. Before, a
 * 4-minute soak of this shape logged 11,734 deadlocks between complete() and upsert_messages
 * (the upsert locked in id order, the completion in plan order). Postgres counts every deadlock
 * it detects in pg_stat_database, so the test reads that count around the run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { waitFor } from './helpers/wait.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage, type Message } from '../src/records/message.ts';
import { directEngine } from '../src/worker/engine.ts';
import { Worker } from '../src/worker/worker.ts';
import { handlerFromExport } from '../src/worker/handler.ts';
import { silentLogger } from '../src/log.ts';

const IDS = 2_000;
const PRODUCERS = 4;
const BATCH = 200;
const RUN_MS = 6_000;
/** Batches each producer sends at the least, whatever RUN_MS allowed. */
const MIN_BATCHES = 6;

let db: TestDatabase;
/** The run's own connections: closed at the end, so that their statistics are reported. */
let pool: pg.Pool;
beforeAll(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 16 });
});
afterAll(async () => {
  await pool?.end().catch(() => {});
  await db?.drop();
});

/** Deadlocks Postgres has detected in this database so far. */
async function deadlocks(): Promise<number> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>(`SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()`);
    return Number(rows[0]!.n);
  } finally {
    await client.end();
  }
}

describe('one lock order', () => {
  it('lets unsorted batched upserts race claims, heartbeats and completions without a deadlock, and loses no version', { timeout: 90_000 }, async () => {
    const before = await deadlocks();
    let version = 0;
    const newest = new Map<string, number>();
    const stop = new AbortController();
    // Each producer sends batches of newer versions for ids in random order, for RUN_MS and at
    // least MIN_BATCHES of them: enough races however slow the machine is.
    const producers = Array.from({ length: PRODUCERS }, async () => {
      let sent = 0;
      while (!stop.signal.aborted || sent < MIN_BATCHES * BATCH) {
        const batch: Message[] = Array.from({ length: BATCH }, () => {
          const id = `k-${Math.floor(Math.random() * IDS)}`;
          newest.set(id, ++version);
          return parseMessage({ id, data: { at: version }, version }, { maxDepth: 8 });
        });
        await upsertMessages(pool, batch);
        sent += batch.length;
      }
      return sent;
    });
    const workers = Array.from(
      { length: 2 },
      (_, i) =>
        new Worker({
          pool,
          databaseUrl: db.url,
          engine: directEngine(pool),
          handler: handlerFromExport(async () => null, 'noop', false),
          log: silentLogger,
          id: `lock-order-${i}`,
          concurrency: 400,
          batch: 200,
          // Heartbeats every 100 ms: extensions race the upserts too.
          leaseMs: 300,
          timeoutMs: 10_000,
          maxAttempts: 3,
          backoff: { baseMs: 50, capMs: 50 },
          maxExpirations: 1_000,
          pollMs: 50,
          rescueEveryMs: 200,
          graceMs: 1_000,
        }),
    );
    const stopWorkers = new AbortController();
    const running = workers.map((w) => w.run(stopWorkers.signal));
    setTimeout(() => stop.abort(), RUN_MS);
    const sent = (await Promise.all(producers)).reduce((a, b) => a + b, 0);
    await waitFor(
      async () => {
        const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status <> 'PROCESSED' OR processed_version <> version`);
        return rows[0].n === 0;
      },
      60_000,
      'every record processed at its latest version',
    );
    stopWorkers.abort();
    await Promise.all(running);

    expect(sent).toBeGreaterThanOrEqual(PRODUCERS * BATCH * MIN_BATCHES);
    // Superseded completions are the races this test is made of; each one sent its record round again.
    expect(workers.reduce((n, w) => n + w.stats.superseded, 0)).toBeGreaterThan(0);
    // Every message audited once; every record at the newest version sent for it (a batch built
    // earlier may commit later: its messages for those ids are refused as stale).
    const { rows: audited } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE reason IN ('applied', 'stale')`);
    expect(audited[0].n).toBe(sent);
    const { rows: records } = await db.pool.query<{ id: string; version: string }>(`SELECT id, version FROM rowfleet.records`);
    expect(new Map(records.map((r) => [r.id, Number(r.version)]))).toEqual(newest);
    // A deadlock is counted by the backend that detected it, when it reports its statistics (at the
    // latest when its connection closes): close them, then give the report a moment to land.
    await pool.end();
    const deadline = Date.now() + 1_500;
    let after = await deadlocks();
    while (after === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      after = await deadlocks();
    }
    expect(after - before).toBe(0);
  });
});
