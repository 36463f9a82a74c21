/**
 * What the drain benches (bench/drain.ts, bench/drain-fresh.ts) share: the row each drain reports,
 * the timing of a drain of rowfleet records by `rowfleet worker` processes, and the readings taken
 * around every drain (commits, autovacuum runs, CPU).
 *
 * A drain of records is timed from the commit that makes the backlog visible (the workers are
 * started on an empty table and left to register and LISTEN first: process startup is not part
 * of a drain) to the last completion, max(processed_at), read on the database's clock.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { WORKER } from '../../src/settings.ts';
import type { WorkOptions } from 'pg-boss';
import type { EngineName } from '../../src/config.ts';
import { anyUnprocessed, insertBacklog } from './backlog.ts';
import { cpuMeter, type CpuMeter, type CpuUsage } from './cpu.ts';
import type { BenchContext } from './harness.ts';
import { pollUntil } from './poll.ts';
import { awaitQuiet, BUSY_OTHER_PERCENT } from './quiet.ts';
import { withPool } from './pool.ts';
import { startWorkers } from './worker-process.ts';

/** A drain slower than this is reported at the rate reached so far rather than waited for. */
export const DRAIN_TIMEOUT_MS = 90_000;
/** How often the bench asks whether the drain is over; the end time comes from the database, not from this. */
export const POLL_MS = 250;
/**
 * Handlers per process in the drain bench: two batches, so that claiming the next batch overlaps
 * completing the last (with concurrency = batch the worker has nothing to claim until a
 * completion frees slots).
 */
export const CONCURRENCY_PER_BATCH = 2;
/** Long enough for exited backends and the once-a-second flush to reach pg_stat_database. */
const STATS_SETTLE_MS = 1_200;

/** What one enqueue sweep did and how long it took. */
export interface SweepTiming {
  jobs: number;
  /** Records marked and sent per transaction. */
  batch: number;
  ms: number;
  /** Transactions it committed: the lost-job check, then one per batch and a last, empty one. */
  transactions: number;
}

export type DrainEngine = 'direct' | 'boss engine' | 'pg-boss' | 'graphile-worker';

export interface DrainRow {
  engine: DrainEngine;
  scenario: string;
  /** Records (or jobs) in the backlog. */
  backlog: number;
  processes: number;
  batch: number;
  /** Handlers per process (rowfleet: --concurrency; graphile-worker: concurrentJobs). */
  concurrency?: number;
  /** Boss engine: the sweep that sent the jobs, timed before the drain. */
  sweep?: SweepTiming;
  /** A boss-engine row and its pg-boss-alone baseline share this. */
  match?: string;
  /** Transactions the workers committed per 1,000 records (claims, completions, heartbeats): batching at work. */
  commitsPer1k?: number;
  /** Measured over the first seconds rather than to the end of the backlog. */
  windowed?: boolean;
  /** Records (or jobs) finished inside the timed span. */
  records: number;
  seconds: number;
  perSecond: number;
  cpu: CpuUsage;
  ratio?: number;
  options?: WorkOptions | Record<string, unknown>;
  notes: string[];
}

/** A drain of rowfleet records by `rowfleet worker` processes. */
export interface RecordDrain {
  engine: EngineName;
  scenario: string;
  backlog: number;
  processes: number;
  /** --batch; the worker's default when absent. */
  batch?: number;
  /** --concurrency; the worker's default when absent. */
  concurrency?: number;
  /** Pairs the row with a baseline (DrainRow.match). */
  match?: string;
}

/**
 * How a backlog reaches the workers: `prepare` runs before they start (what they must not yet see
 * as work); `release` makes the backlog visible and resolves right after its commit, which starts
 * the clock, with the number of transactions it committed (not the workers').
 */
export interface BacklogDelivery {
  prepare?(pool: pg.Pool): Promise<void>;
  release(pool: pg.Pool): Promise<{ commits: number; sweep?: SweepTiming; note?: string }>;
}

export function plural(processes: number): string {
  return `${processes} process${processes > 1 ? 'es' : ''}`;
}

/** Direct engine, `batch` x CONCURRENCY_PER_BATCH handlers, a backlog bulk-inserted in one transaction with a NOTIFY. */
/**
 * A drain by `rowfleet worker --engine direct` processes: with `batch`, `--batch batch --concurrency
 * CONCURRENCY_PER_BATCH x batch`; without, the worker's default flags (as a user first meets it).
 */
export async function drainDirect(ctx: BenchContext, url: string, { processes, batch, backlog }: { processes: number; batch?: number; backlog: number }): Promise<DrainRow> {
  const drain: RecordDrain = {
    engine: 'direct',
    scenario: `direct, ${plural(processes)}, ${batch === undefined ? 'default flags' : `batch ${batch}`}, ${backlog.toLocaleString('en-US')}`,
    backlog,
    processes,
    ...(batch !== undefined && { batch, concurrency: batch * CONCURRENCY_PER_BATCH }),
  };
  return withPool(url, 1, async (pool) => {
    await resetRecords(pool);
    return drainRecords(ctx, url, pool, drain, {
      async release(db) {
        await db.query('BEGIN');
        try {
          await insertBacklog(db, { count: backlog, prefix: 'drain-', status: 'COMPLETED' });
          // upsertMessages notifies once per call; a bulk load does the same, in the same transaction.
          await db.query(`SELECT pg_notify('rowfleet_due', '')`);
          await db.query('COMMIT');
        } catch (err) {
          await db.query('ROLLBACK');
          throw err;
        }
        return { commits: 1 };
      },
    });
  });
}

/** Starts the workers on a reset database, delivers the backlog, and times the drain to its last completion. */
export async function drainRecords(ctx: BenchContext, url: string, pool: pg.Pool, drain: RecordDrain, delivery: BacklogDelivery): Promise<DrainRow> {
  const { scenario, processes, batch, engine, backlog } = drain;
  await delivery.prepare?.(pool);
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const fleet = await startWorkers(
    processes,
    {
      databaseUrl: url,
      engine,
      ...(batch !== undefined && { batch }),
      handler: 'noop',
      ...(drain.concurrency !== undefined && { concurrency: drain.concurrency }),
    },
    pool,
  );
  let stopped = false;
  try {
    const committedBefore = await commitsSoFar(pool);
    const maintenanceBefore = await maintenanceSoFar(pool);
    const released = await delivery.release(pool);
    const committedAt = performance.now();
    const cpu = meter(ctx, fleet.pids);
    cpu.start();
    if (released.note !== undefined) ctx.progress(`${scenario}: ${released.note}`);
    ctx.progress(`${scenario}: draining ${backlog.toLocaleString('en-US')} records`);
    let polls = 0;
    const poll = await pollUntil(async () => (polls++, !(await anyUnprocessed(pool))), { intervalMs: POLL_MS, timeoutMs: DRAIN_TIMEOUT_MS });
    const usage = cpu.stop();
    // The last completion's time, as an age on the database's clock, placed on ours: exact to the
    // completing statement, not to the poll interval, and immune to skew between the two clocks.
    const askedAt = performance.now();
    const { rows } = await pool.query<{ processed: number; repeated: number; age_ms: number | null }>(
      `SELECT count(*) FILTER (WHERE status = 'PROCESSED')::int AS processed,
              count(*) FILTER (WHERE attempts > 1)::int AS repeated,
              extract(epoch FROM clock_timestamp() - max(processed_at)) * 1000 AS age_ms
         FROM rowfleet.records`,
    );
    const { processed, repeated, age_ms: ageMs } = rows[0]!;
    const seconds = ((poll.timedOut ? poll.at : askedAt - Number(ageMs ?? 0)) - committedAt) / 1000;
    await fleet.stop();
    stopped = true;
    // The bench's own transactions: the first reading's and the maintenance count's, the delivery, the polls and the query above.
    const workerCommits = (await commitsSoFar(pool)) - committedBefore - (polls + 3 + released.commits);
    const notes: string[] = [];
    if (poll.timedOut) notes.push(`timed out after ${DRAIN_TIMEOUT_MS / 1000}s with ${processed} of ${backlog} processed`);
    if (repeated > 0) notes.push(`${repeated} records were claimed more than once`);
    const maintenance = (await maintenanceSoFar(pool)) - maintenanceBefore;
    if (maintenance > 0) notes.push(`autovacuum or autoanalyze finished ${maintenance} time(s) on its tables meanwhile (their CPU counts as pg)`);
    if (usage.other > BUSY_OTHER_PERCENT) notes.push(`other processes used ${usage.other}% CPU meanwhile: the rate is low`);
    const perSecond = Math.round(processed / seconds);
    ctx.progress(`${scenario}: ${perSecond.toLocaleString('en-US')} records/s (${seconds.toFixed(2)}s)${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
    return {
      engine: engine === 'direct' ? 'direct' : 'boss engine',
      scenario,
      backlog,
      processes,
      batch: batch ?? WORKER.batch.default,
      ...(drain.concurrency !== undefined && { concurrency: drain.concurrency }),
      ...(drain.match !== undefined && { match: drain.match }),
      ...(released.sweep !== undefined && { sweep: released.sweep }),
      records: processed,
      seconds,
      perSecond,
      commitsPer1k: processed > 0 ? Math.round((workerCommits * 1000) / processed) : 0,
      cpu: usage,
      notes,
    };
  } finally {
    if (!stopped) await fleet.stop();
  }
}

/**
 * Every rowfleet scenario starts from empty tables and a fresh checkpoint. With `boss`, pg-boss's
 * jobs go too: deleteAllJobs() truncates its job table (no dead rows left for the next fetch to
 * skip) and zeroes its cached queue counts.
 */
export async function resetRecords(pool: pg.Pool, boss?: { deleteAllJobs(): Promise<unknown> }): Promise<void> {
  await pool.query('TRUNCATE rowfleet.records, rowfleet.event_log, rowfleet.sweep_state');
  await boss?.deleteAllJobs();
  await checkpoint(pool);
}

/** CHECKPOINT needs superuser (or pg_checkpoint); on a server where we lack it, skip it. */
export async function checkpoint(pool: pg.Pool): Promise<void> {
  await pool.query('CHECKPOINT').catch(() => undefined);
}

export function meter(ctx: BenchContext, workerPids: readonly number[]): CpuMeter {
  return cpuMeter(() => ({ bench: [process.pid], workers: [...workerPids], postgres: ctx.postgres.pids() }));
}

/**
 * Transactions committed in this database so far. Backends report to pg_stat_database at exit
 * and about once a second while busy; read after the workers exited (and a pause), the difference
 * is their transactions give or take a second of the bench's own polling.
 */
export async function commitsSoFar(pool: pg.Pool): Promise<number> {
  await delay(STATS_SETTLE_MS);
  const { rows } = await pool.query<{ n: string }>('SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0]!.n);
}

/**
 * Autovacuum and autoanalyze runs finished on this database's tables so far (pg_stat_user_tables).
 * A drain churns 100,000 rows, so one may start inside it: a rate that dips is then explained.
 */
export async function maintenanceSoFar(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) AS n FROM pg_stat_user_tables');
  return Number(rows[0]!.n);
}

/** CPU time per record of a process group, in µs ('-' when not meaningful). */
export function microsPerRecord(row: DrainRow, group: string): string {
  const percent = row.cpu[group];
  // A windowed row's workers mostly sleep between polls: CPU per job would measure the idling.
  if (percent === undefined || row.perSecond === 0 || row.windowed) return '-';
  return String(Math.round(((percent / 100) * 1e6) / row.perSecond));
}
