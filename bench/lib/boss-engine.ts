/**
 * Drains of rowfleet records by `rowfleet worker --engine boss --handler noop` processes, shared by
 * the drain and scaling benches. One pg-boss instance (role client, as the scheduler's sweep) on a
 * pool of its own sends every backlog's jobs, through rowfleet's enqueue sweep.
 *
 * What is timed: the backlog is written first, as records without jobs (the workers see no work);
 * the workers start and register; then the enqueue sweep sends all the jobs in one transaction (its
 * NOTIFY wakes the workers). The drain runs from the sweep's commit to the last completion, as a
 * direct drain runs from its INSERT's (bench/lib/record-drain.ts). The sweep itself is timed apart:
 * before each drain (one transaction), and once alone at the configured ROWFLEET_SWEEP_BATCH, as
 * `rowfleet` runs it, when the session opens.
 */
import pg from 'pg';
import type { PgBoss } from 'pg-boss';
import { loadConfig, type BossConfig } from '../../src/config.ts';
import { startBoss, stopBoss } from '../../src/boss/boss.ts';
import { sweep } from '../../src/boss/sweep.ts';
import { silentLogger } from '../../src/log.ts';
import { insertBacklog } from './backlog.ts';
import type { BenchContext } from './harness.ts';
import { awaitQuiet } from './quiet.ts';
import { withPool } from './pool.ts';
import { checkpoint, CONCURRENCY_PER_BATCH, drainRecords, plural, resetRecords, type DrainRow, type SweepTiming } from './record-drain.ts';

/** One boss-engine drain: `processes` workers with `--batch batch --concurrency CONCURRENCY_PER_BATCH x batch`. */
export interface BossEngineScenario {
  processes: number;
  batch: number;
  /** Pairs the row with a baseline (DrainRow.match). */
  match?: string;
}

/** Boss-engine drains of one backlog size in one database, and the sweep timed alone. */
export interface BossEngineDrains {
  /** The sweep at ROWFLEET_SWEEP_BATCH, no worker running, timed when the session opened. */
  sweepAlone: SweepTiming;
  drain(scenario: BossEngineScenario): Promise<DrainRow>;
}

/**
 * Opens the pg-boss client, times the sweep alone on a `backlog` of records, analyzes the tables
 * (see below) and hands `fn` the drains; the records and jobs are cleared and pg-boss stopped after.
 */
export async function withBossEngine<T>(ctx: BenchContext, url: string, backlog: number, fn: (engine: BossEngineDrains) => Promise<T>): Promise<T> {
  const config = loadConfig({}).boss;
  // Three connections: the sweep's transaction holds one while pg-boss reads its queue through the pool.
  return withPool(url, 3, async (pool) => {
    const boss = await startBoss({ config, pool, role: 'client', log: silentLogger });
    try {
      const sweepAlone = await sweepAloneTiming(ctx, pool, boss, config, backlog);
      // Statistics of a sent backlog, kept through the TRUNCATEs that reset each scenario (only the
      // row and page counts go). On tables never analyzed, pg-boss's fetch of 500 sorted all 100,000
      // queued jobs (bitmap scan, external sort: 50-58 ms) instead of reading its index (8-9 ms),
      // and whether autovacuum had analyzed them yet decided the rate. With these statistics the claim
      // by IDs reads the primary key; with those of a table that is mostly PROCESSED history it walks
      // records_due_idx instead (26-28 ms per 500 IDs against 7 ms at 100,000 due): not measured here.
      await pool.query(`ANALYZE rowfleet.records, ${pg.escapeIdentifier(config.schema)}.job`);
      const result = await fn({ sweepAlone, drain: (scenario) => drainBossEngine(ctx, url, pool, boss, config, backlog, scenario) });
      await resetRecords(pool, boss);
      return result;
    } finally {
      await stopBoss(boss);
    }
  });
}

async function drainBossEngine(
  ctx: BenchContext,
  url: string,
  pool: pg.Pool,
  boss: PgBoss,
  config: BossConfig,
  backlog: number,
  { processes, batch, match }: BossEngineScenario,
): Promise<DrainRow> {
  await resetRecords(pool, boss);
  const row = await drainRecords(
    ctx,
    url,
    pool,
    {
      engine: 'boss',
      scenario: `boss engine, ${plural(processes)}, batch ${batch}`,
      backlog,
      processes,
      batch,
      concurrency: batch * CONCURRENCY_PER_BATCH,
      ...(match !== undefined && { match }),
    },
    {
      // Records without jobs: nothing the workers can see until the sweep commits.
      prepare: (db) => insertBacklog(db, { count: backlog, prefix: 'drain-', status: 'COMPLETED' }),
      // One transaction, so that the drain starts at one commit as direct's does.
      release: async (db) => {
        const timing = await timedSweep(db, boss, config, backlog);
        return { commits: timing.transactions, sweep: timing, note: describeSweep(timing) };
      },
    },
  );
  if (row.sweep !== undefined && row.sweep.jobs !== backlog) row.notes.push(`the sweep sent ${row.sweep.jobs} jobs for ${backlog} records`);
  return row;
}

/** The sweep at the configured batch, no worker running: what the scheduler's sweep costs per job. */
async function sweepAloneTiming(ctx: BenchContext, pool: pg.Pool, boss: PgBoss, config: BossConfig, backlog: number): Promise<SweepTiming> {
  await resetRecords(pool, boss);
  await insertBacklog(pool, { count: backlog, prefix: 'drain-', status: 'COMPLETED' });
  await checkpoint(pool);
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const timing = await timedSweep(pool, boss, config, config.sweepBatch);
  ctx.progress(`sweep alone, ROWFLEET_SWEEP_BATCH ${config.sweepBatch}: ${describeSweep(timing)}`);
  return timing;
}

async function timedSweep(pool: pg.Pool, boss: PgBoss, config: BossConfig, batch: number): Promise<SweepTiming> {
  const startedAt = performance.now();
  const { enqueued } = await sweep(pool, boss, { queue: config.queue, schema: config.schema, batch });
  const ms = performance.now() - startedAt;
  return { jobs: enqueued, batch, ms, transactions: 1 + Math.floor(enqueued / batch) + 1 };
}

export function describeSweep({ jobs, batch, ms }: SweepTiming): string {
  const perSecond = ms > 0 ? Math.round((jobs * 1000) / ms) : 0;
  return `sweep: ${jobs.toLocaleString('en-US')} jobs in ${Math.round(ms).toLocaleString('en-US')} ms = ${perSecond.toLocaleString('en-US')} jobs/s (${batch.toLocaleString('en-US')} per transaction)`;
}
