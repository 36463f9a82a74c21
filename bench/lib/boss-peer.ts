/**
 * pg-boss 12 alone, as a peer of the drain bench: its jobs inserted first, in a schema of its own
 * in the bench's database, then drained in worker processes of their own (bench/lib/boss-worker.ts)
 * by `work()` with a no-op handler, or by the boss engine's loop of `fetch()` and `complete()`
 * without its row claim (`fetchLoop`). The processes connect, wait at the start gate
 * (bench/lib/gate.ts) and start fetching together; the drain runs from the first job's started_on
 * to the last completed_on (the database's clock), so pg-boss pays neither startup nor a poll
 * interval.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { PgBoss, type JobInsert, type WorkOptions } from 'pg-boss';
import { processQueueOptions } from '../../src/boss/boss.ts';
import { recordJob } from '../../src/boss/sweep.ts';
import { jobData } from './backlog.ts';
import { spawnTsx, stopChild, type Child } from './child.ts';
import { openGate } from './gate.ts';
import type { BenchContext } from './harness.ts';
import { pollUntil } from './poll.ts';
import { awaitQuiet, BUSY_OTHER_PERCENT } from './quiet.ts';
import { withPool } from './pool.ts';
import { checkpoint, commitsSoFar, DRAIN_TIMEOUT_MS, maintenanceSoFar, meter, plural, POLL_MS, type DrainRow } from './record-drain.ts';
import type { CpuUsage } from './cpu.ts';

const BOSS_INSERT_CHUNK = 10_000;
/** pg-boss's defaults (batchSize 1, a 2 s poll after every fetch) drain ~1 job/s: measured over a window. */
const BOSS_WINDOW_MS = 6_000;
const BOSS_START_TIMEOUT_MS = 60_000;

export interface BossVariant {
  label: string;
  processes: number;
  /** Jobs in the backlog. */
  backlog: number;
  /** work() options; with `fetchLoop`, only batchSize counts. */
  options: WorkOptions;
  /**
   * Each process runs one loop of fetch(batchSize) and complete(ids), as the boss engine does
   * (src/worker/engine.ts), instead of work().
   */
  fetchLoop?: boolean;
  /** Measured over a fixed window instead of to the end of the backlog. */
  windowed?: boolean;
  /** Left out of `--quick`. */
  full?: boolean;
  /** The boss engine's jobs (`{id, version}`, singletonKey) in a queue with rowfleet's options, instead of plain ones. */
  recordJobs?: boolean;
  /**
   * pg-boss's own per-key FIFO: a `key_strict_fifo` queue, job n keyed `ledger/<n % keys>` (so each
   * key's jobs are inserted in order), as the peer of rowfleet's mode every.
   */
  strictFifoKeys?: number;
  /** The boss-engine scenario this variant is the baseline of. */
  match?: string;
}

/** Where a pg-boss variant's jobs live. */
interface BossQueue {
  schema: string;
  name: string;
}

/**
 * The fastest work() settings seen on this machine, batchSize 1000 / localConcurrency 2. Without
 * burstWhenBatchFull a worker waits its polling interval after every fetch, full or not (pg-boss's
 * worker.ts), which caps it at batchSize per 2 s; these fetch again at once while batches come
 * back full.
 */
export const BOSS_BEST: WorkOptions = { batchSize: 1000, localConcurrency: 2, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 };
export const BOSS_BEST_LABEL = 'pg-boss, batchSize 1000, localConcurrency 2, burstWhenBatchFull';

let schemas = 0;

export async function drainBoss(ctx: BenchContext, url: string, variants: readonly BossVariant[]): Promise<DrainRow[]> {
  const rows: DrainRow[] = [];
  await withPool(url, 1, async (pool) => {
    for (const variant of variants) {
      // A schema per variant, dropped after it, as the direct runs each start from an empty table:
      // a job table left by the previous variant (dead rows, statistics of another queue) once
      // stalled pg-boss's fetch for a minute.
      const queue: BossQueue = { schema: `pgboss_bench_${schemas++}`, name: 'drain' };
      const scenario = `${variant.label}, ${plural(variant.processes)}, ${variant.backlog.toLocaleString('en-US')}`;
      // This instance only installs the schema and inserts; the workers are processes of their own.
      const boss = new PgBoss({ connectionString: url, schema: queue.schema, supervise: false, schedule: false });
      boss.on('error', (err) => ctx.progress(`pg-boss error: ${err.message}`));
      await boss.start();
      try {
        const keys = variant.strictFifoKeys;
        await boss.createQueue(queue.name, variant.recordJobs ? processQueueOptions() : keys !== undefined ? { policy: 'key_strict_fifo' } : undefined);
        // The boss engine's jobs are what the sweep sends: a pointer, keyed by the record's ID.
        const job = (n: number): JobInsert =>
          variant.recordJobs ? recordJob('default', `drain-${n}`, '1') : keys !== undefined ? { data: jobData(n), singletonKey: `ledger/${n % keys}` } : { data: jobData(n) };
        ctx.progress(`${scenario}: inserting ${variant.backlog.toLocaleString('en-US')} jobs`);
        for (let from = 1; from <= variant.backlog; from += BOSS_INSERT_CHUNK) {
          const count = Math.min(BOSS_INSERT_CHUNK, variant.backlog - from + 1);
          await boss.insert(queue.name, Array.from({ length: count }, (_, k) => job(from + k)));
        }
        // As for the boss engine's queue (drainBossEngine): the fetch plans from statistics, not from a guess.
        await pool.query(`ANALYZE ${queue.schema}.job`);
        await checkpoint(pool);
        await awaitQuiet(ctx.postgres.pids, ctx.progress);
        rows.push(await drainQueue(ctx, url, pool, queue, scenario, variant));
      } finally {
        await boss.stop({ graceful: false });
        await pool.query(`DROP SCHEMA ${queue.schema} CASCADE`);
      }
    }
  });
  return rows;
}

async function drainQueue(ctx: BenchContext, url: string, pool: pg.Pool, queue: BossQueue, scenario: string, variant: BossVariant): Promise<DrainRow> {
  const committedBefore = await commitsSoFar(pool);
  const maintenanceBefore = await maintenanceSoFar(pool);
  const children = Array.from({ length: variant.processes }, () => spawnBossWorker(url, queue, variant));
  const pids = children.map((child) => child.pid);
  const cpu = meter(ctx, pids);
  const notes: string[] = [];
  let span: { records: number; seconds: number };
  let usage: CpuUsage;
  let polls = 0;
  try {
    await openGate(children, 'pg-boss worker');
    // The CPU window opens at the first fetch, after the processes' startup.
    const started = await pollUntil(async () => (polls++, await bossStarted(pool, queue)), { intervalMs: 20, timeoutMs: BOSS_START_TIMEOUT_MS });
    if (started.timedOut) throw new Error(`${scenario}: no job started within ${BOSS_START_TIMEOUT_MS / 1000}s; ${await bossDiagnosis(pool, children)}`);
    cpu.start();
    if (variant.windowed) {
      ctx.progress(`${scenario}: measuring a ${BOSS_WINDOW_MS / 1000}s window`);
      await delay(BOSS_WINDOW_MS);
      usage = cpu.stop();
      span = await bossWindow(pool, queue, BOSS_WINDOW_MS);
    } else {
      ctx.progress(`${scenario}: draining ${variant.backlog.toLocaleString('en-US')} jobs`);
      const poll = await pollUntil(async () => (polls++, !(await bossPending(pool, queue))), { intervalMs: POLL_MS, timeoutMs: DRAIN_TIMEOUT_MS });
      usage = cpu.stop();
      if (poll.timedOut) notes.push(`timed out after ${DRAIN_TIMEOUT_MS / 1000}s`);
      const { completed, seconds } = await bossSpan(pool, queue);
      span = { records: completed, seconds };
    }
  } finally {
    await Promise.all(children.map((child) => stopChild(child)));
  }
  const workerCommits = (await commitsSoFar(pool)) - committedBefore - (polls + 3);
  const maintenance = (await maintenanceSoFar(pool)) - maintenanceBefore;
  if (maintenance > 0) notes.push(`autovacuum or autoanalyze finished ${maintenance} time(s) on its tables meanwhile (their CPU counts as pg)`);
  if (usage.other > BUSY_OTHER_PERCENT) notes.push(`other processes used ${usage.other}% CPU meanwhile: the rate is low`);
  const perSecond = span.seconds > 0 ? Math.round(span.records / span.seconds) : 0;
  ctx.progress(`${scenario}: ${perSecond.toLocaleString('en-US')} jobs/s (${span.records} in ${span.seconds.toFixed(2)}s)`);
  return {
    engine: 'pg-boss',
    scenario,
    backlog: variant.backlog,
    processes: variant.processes,
    batch: variant.options.batchSize ?? 1,
    // A fetch loop is one loop per process, as localConcurrency 1 is.
    concurrency: variant.fetchLoop ? 1 : (variant.options.localConcurrency ?? 1),
    records: span.records,
    seconds: span.seconds,
    perSecond,
    // Windowed variants keep running after the window: their count covers more than `records`.
    ...(variant.windowed ? { windowed: true } : span.records > 0 && { commitsPer1k: Math.round((workerCommits * 1000) / span.records) }),
    cpu: usage,
    options: variant.options,
    ...(variant.match !== undefined && { match: variant.match }),
    notes,
  };
}

async function bossStarted(pool: pg.Pool, queue: BossQueue): Promise<boolean> {
  const { rows } = await pool.query<{ started: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM ${queue.schema}.job WHERE name = $1 AND state >= 'active') AS started`,
    [queue.name],
  );
  return rows[0]!.started;
}

/** Why pg-boss workers did not start: their exit codes and what their connections are doing. */
async function bossDiagnosis(pool: pg.Pool, children: readonly Child[]): Promise<string> {
  const exits = children.map((child) => `pid ${child.pid}: ${child.process.exitCode ?? child.process.signalCode ?? 'running'}`);
  const { rows } = await pool.query<{ state: string; wait: string | null; query: string }>(
    `SELECT state, wait_event_type || ':' || wait_event AS wait, left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 100) AS query
       FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'pgboss%'`,
  );
  return `workers ${exits.join(', ')}; their connections: ${JSON.stringify(rows)}`;
}

async function bossPending(pool: pg.Pool, queue: BossQueue): Promise<boolean> {
  const { rows } = await pool.query<{ pending: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM ${queue.schema}.job WHERE name = $1 AND state < 'completed') AS pending`,
    [queue.name],
  );
  return rows[0]!.pending;
}

/** Jobs started and completed so far, and the span from the first start to the last completion. */
async function bossSpan(pool: pg.Pool, queue: BossQueue): Promise<{ started: number; completed: number; seconds: number }> {
  const { rows } = await pool.query<{ started: number; completed: number; seconds: number | null }>(
    `SELECT count(started_on)::int AS started,
            count(*) FILTER (WHERE state = 'completed')::int AS completed,
            extract(epoch FROM max(completed_on) - min(started_on)) AS seconds
       FROM ${queue.schema}.job WHERE name = $1`,
    [queue.name],
  );
  const row = rows[0]!;
  return { started: row.started, completed: row.completed, seconds: Number(row.seconds ?? 0) };
}

/** Jobs completed within `windowMs` of the first start. */
async function bossWindow(pool: pg.Pool, queue: BossQueue, windowMs: number): Promise<{ records: number; seconds: number }> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${queue.schema}.job
      WHERE name = $1 AND state = 'completed'
        AND completed_on <= (SELECT min(started_on) FROM ${queue.schema}.job WHERE name = $1) + $2 * interval '1 millisecond'`,
    [queue.name, windowMs],
  );
  return { records: rows[0]!.n, seconds: windowMs / 1000 };
}

function spawnBossWorker(url: string, queue: BossQueue, { fetchLoop, options }: BossVariant): Child {
  const [mode, json] = fetchLoop ? ['fetch', { batchSize: options.batchSize ?? 1 }] : ['work', options];
  return spawnTsx(['bench/lib/boss-worker.ts', queue.schema, queue.name, mode, JSON.stringify(json)], { DATABASE_URL: url }, { ipc: true });
}
