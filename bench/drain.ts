/**
 * How fast a fleet empties a backlog: records per second drained from 100,000 due records by
 * `rowfleet worker --handler noop` with each engine, beside pg-boss 12 draining 100,000 no-op jobs
 * on the same Postgres in the same run, and what the boss engine's row claim costs on top of
 * pg-boss's own fetch and complete.
 *
 * - direct: `--engine direct` for 1, 2 and 4 worker processes and claim batches of 10 / 100 / 1000.
 * - boss engine: `--engine boss` (pg-boss work() fetches `{id, version}` jobs, the worker claims
 *   their records with the shared SKIP LOCKED claim and completes each row with a versioned
 *   compare-and-set), for 1 and 2 processes, batch 1000 (and 100 in the full run), with 1 and 2
 *   pg-boss fetch loops per process (ROWFLEET_LOCAL_CONCURRENCY).
 * - pg-boss alone, in its own schema: batchSize 1000 with localConcurrency 2, the fastest settings
 *   seen on this machine, plus burstWhenBatchFull, in one, two and four processes; without the
 *   burst and with its defaults, over a short window, for reference. And for each boss-engine
 *   scenario, pg-boss alone as the boss engine runs it: the same work() options (batchSize half the
 *   batch, the same localConcurrency, burstWhenBatchFull), the same `{id, version}` jobs with their
 *   singletonKey, in a queue with rowfleet's process-queue options (policy short), a no-op handler.
 *   The boss engine's rate against that one is the cost of the row claim and the row completion.
 * Target (the issue's): the direct engine's best rate >= 1.5x pg-boss's best.
 *
 * What is timed. Direct: the workers start on an empty table and are left to register (process
 * startup is not part of a drain); the backlog is then committed in one INSERT with a NOTIFY, and
 * the drain runs from that commit to the last completion (max(processed_at)). Boss engine: the
 * backlog is written first (the workers see no job, so no work), the workers start and register,
 * then the enqueue sweep sends the 100,000 jobs in one transaction (its NOTIFY wakes the workers);
 * the drain runs from the sweep's commit to the last completion, as direct's runs from the INSERT's.
 * The sweep itself is timed apart: before the drain (one transaction), and once alone at the
 * configured ROWFLEET_SWEEP_BATCH, as `rowfleet` runs it. pg-boss: its jobs are inserted first and
 * its workers started after; the drain runs from the first job's started_on to the last
 * completed_on, so pg-boss pays neither startup nor a poll interval.
 *
 *   npm run bench -- drain [--quick]
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { PgBoss, type JobInsert, type WorkOptions } from 'pg-boss';
import { loadConfig, type BossConfig, type EngineName } from '../src/config.ts';
import { processQueueOptions, startBoss, stopBoss } from '../src/boss/boss.ts';
import { recordJob, sweep } from '../src/boss/sweep.ts';
import { silentLogger } from '../src/log.ts';
import { anyUnprocessed, insertBacklog, jobData } from './lib/backlog.ts';
import { spawnTsx, stopChild, type Child } from './lib/child.ts';
import { cpuMeter, type CpuMeter, type CpuUsage } from './lib/cpu.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { pollUntil } from './lib/poll.ts';
import { awaitQuiet, BUSY_OTHER_PERCENT } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';
import { startWorkers } from './lib/worker-process.ts';

const BACKLOG = 100_000;
const WORKER_COUNTS = [1, 2, 4] as const;
const BATCH_SIZES = [10, 100, 1000] as const;
/** `--quick`: the batch that matters most in production, and the largest, at every process count. */
const QUICK_BATCH_SIZES = [100, 1000] as const;
const TARGET_RATIO = 1.5;
/** A drain slower than this is reported at the rate reached so far rather than waited for. */
const DRAIN_TIMEOUT_MS = 90_000;
/** How often the bench asks whether the drain is over; the end time comes from the database, not from this. */
const POLL_MS = 250;
/**
 * Handlers per process: two batches, so that claiming the next batch overlaps completing the last
 * (with concurrency = batch the worker has nothing to claim until a completion frees slots).
 */
const CONCURRENCY_PER_BATCH = 2;
/** Long enough for exited backends and the once-a-second flush to reach pg_stat_database. */
const STATS_SETTLE_MS = 1_200;

const BOSS_INSERT_CHUNK = 10_000;
/** pg-boss's defaults (batchSize 1, a 2 s poll after every fetch) drain ~1 job/s: measured over a window. */
const BOSS_WINDOW_MS = 6_000;
const BOSS_START_TIMEOUT_MS = 60_000;

interface BossEngineScenario {
  processes: number;
  batch: number;
  /** pg-boss fetch loops per process (ROWFLEET_LOCAL_CONCURRENCY). */
  localConcurrency: number;
  /** Left out of `--quick`. */
  full?: boolean;
}

/**
 * Batch 1000 at 1 and 2 processes with 1 and 2 fetch loops each; the full run adds batch 100 with
 * one loop. Each scenario is run twice (the engine, then pg-boss alone with its options), so the
 * matrix is kept to what fits the run's watchdog.
 */
const BOSS_ENGINE_SCENARIOS: readonly BossEngineScenario[] = [
  { processes: 1, batch: 1000, localConcurrency: 1 },
  { processes: 2, batch: 1000, localConcurrency: 1 },
  { processes: 1, batch: 1000, localConcurrency: 2 },
  { processes: 2, batch: 1000, localConcurrency: 2 },
  { processes: 1, batch: 100, localConcurrency: 1, full: true },
  { processes: 2, batch: 100, localConcurrency: 1, full: true },
];

interface BossVariant {
  label: string;
  processes: number;
  options: WorkOptions;
  /** Measured over a fixed window instead of to the end of the backlog. */
  windowed?: boolean;
  /** Left out of `--quick`. */
  full?: boolean;
  /** The boss engine's jobs (`{id, version}`, singletonKey) in a queue with rowfleet's options, instead of plain ones. */
  recordJobs?: boolean;
  /** The boss-engine scenario this variant is the baseline of. */
  match?: string;
}

/**
 * batchSize 1000 / localConcurrency 2 are the fastest seen here. Without burstWhenBatchFull a
 * worker waits its polling interval after every fetch, full or not (pg-boss's worker.ts), which
 * caps it at batchSize per 2 s; the best settings fetch again at once while batches come back full.
 */
const BOSS_BEST: WorkOptions = { batchSize: 1000, localConcurrency: 2, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 };
const BOSS_VARIANTS: readonly BossVariant[] = [
  { label: 'pg-boss, batchSize 1000, localConcurrency 2, burstWhenBatchFull', processes: 1, options: BOSS_BEST },
  { label: 'pg-boss, batchSize 1000, localConcurrency 2, burstWhenBatchFull', processes: 2, options: BOSS_BEST },
  { label: 'pg-boss, batchSize 1000, localConcurrency 2, burstWhenBatchFull', processes: 4, options: BOSS_BEST },
  { label: 'pg-boss, batchSize 1000, localConcurrency 2, no burst (2 s poll)', processes: 1, options: { batchSize: 1000, localConcurrency: 2 }, windowed: true, full: true },
  { label: 'pg-boss, default work() options', processes: 1, options: {}, windowed: true, full: true },
];

interface Row {
  engine: 'direct' | 'boss engine' | 'pg-boss';
  scenario: string;
  processes: number;
  batch: number;
  /** Handlers per process (rowfleet: --concurrency). */
  concurrency?: number;
  /** Boss engine: pg-boss fetch loops per process. */
  localConcurrency?: number;
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
  options?: WorkOptions;
  notes: string[];
}

export const drainBench: Bench = {
  name: 'drain',
  summary: `records/s draining a ${BACKLOG.toLocaleString('en-US')}-record backlog: direct engine (1/2/4 processes x batch 10/100/1000) and boss engine vs pg-boss 12`,
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_drain');
    try {
      const rows: Row[] = [];
      const batches = ctx.quick ? QUICK_BATCH_SIZES : BATCH_SIZES;
      for (const batch of batches) {
        for (const processes of WORKER_COUNTS) rows.push(await drainDirect(ctx, db.url, processes, batch));
      }
      const engineScenarios = BOSS_ENGINE_SCENARIOS.filter((s) => !(ctx.quick && s.full));
      const { rows: engineRows, sweepAlone } = await drainBossEngine(ctx, db.url, engineScenarios);
      rows.push(...engineRows);
      rows.push(...(await drainBoss(ctx, db.url, [...BOSS_VARIANTS.filter((v) => !(ctx.quick && v.full)), ...engineScenarios.map(bossAloneAsEngine)])));

      const bossBest = best(rows.filter((row) => row.engine === 'pg-boss'));
      const directBest = best(rows.filter((row) => row.engine === 'direct'));
      for (const row of rows) row.ratio = bossBest.perSecond > 0 ? row.perSecond / bossBest.perSecond : undefined;
      const ratio = directBest.ratio ?? 0;
      const verdict = {
        target: `direct best >= ${TARGET_RATIO}x pg-boss best`,
        directBest: { scenario: directBest.scenario, perSecond: directBest.perSecond },
        bossBest: { scenario: bossBest.scenario, processes: bossBest.processes, perSecond: bossBest.perSecond },
        ratio,
        pass: ratio >= TARGET_RATIO,
      };
      const claimCosts = claimCostsOf(rows);
      return {
        text: report(ctx, rows, verdict, claimCosts, sweepAlone),
        data: { backlog: BACKLOG, verdict, claimCosts, sweepAlone, scenarios: rows },
      };
    } finally {
      await db.drop();
    }
  },
};

/** A drain of rowfleet records by `rowfleet worker` processes. */
interface RecordDrain {
  engine: EngineName;
  scenario: string;
  processes: number;
  batch: number;
  localConcurrency?: number;
}

/**
 * How a backlog reaches the workers: `prepare` runs before they start (what they must not yet see
 * as work); `release` makes the backlog visible and resolves right after its commit, which starts
 * the clock, with the number of transactions it committed (not the workers').
 */
interface BacklogDelivery {
  prepare?(pool: pg.Pool): Promise<void>;
  release(pool: pg.Pool): Promise<{ commits: number; sweep?: SweepTiming }>;
}

async function drainDirect(ctx: BenchContext, url: string, processes: number, batch: number): Promise<Row> {
  const drain: RecordDrain = { engine: 'direct', scenario: `direct, ${processes} process${processes > 1 ? 'es' : ''}, batch ${batch}`, processes, batch };
  return withPool(url, 1, async (pool) => {
    await resetRecords(pool);
    return drainRecords(ctx, url, pool, drain, {
      async release(db) {
        await db.query('BEGIN');
        try {
          await insertBacklog(db, { count: BACKLOG, prefix: 'drain-', status: 'COMPLETED' });
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
async function drainRecords(ctx: BenchContext, url: string, pool: pg.Pool, drain: RecordDrain, delivery: BacklogDelivery): Promise<Row> {
  const { scenario, processes, batch, engine } = drain;
  const concurrency = batch * CONCURRENCY_PER_BATCH;
  await delivery.prepare?.(pool);
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const fleet = await startWorkers(
    processes,
    { databaseUrl: url, engine, concurrency, batch, handler: 'noop', ...(drain.localConcurrency !== undefined && { localConcurrency: drain.localConcurrency }) },
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
    if (released.sweep !== undefined) ctx.progress(`${scenario}: ${describeSweep(released.sweep)}`);
    ctx.progress(`${scenario}: draining ${BACKLOG.toLocaleString('en-US')} records`);
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
    if (poll.timedOut) notes.push(`timed out after ${DRAIN_TIMEOUT_MS / 1000}s with ${processed} of ${BACKLOG} processed`);
    if (repeated > 0) notes.push(`${repeated} records were claimed more than once`);
    const maintenance = (await maintenanceSoFar(pool)) - maintenanceBefore;
    if (maintenance > 0) notes.push(`autovacuum or autoanalyze finished ${maintenance} time(s) on its tables meanwhile (their CPU counts as pg)`);
    if (usage.other > BUSY_OTHER_PERCENT) notes.push(`other processes used ${usage.other}% CPU meanwhile: the rate is low`);
    const perSecond = Math.round(processed / seconds);
    ctx.progress(`${scenario}: ${perSecond.toLocaleString('en-US')} records/s (${seconds.toFixed(2)}s)${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
    return {
      engine: engine === 'direct' ? 'direct' : 'boss engine',
      scenario,
      processes,
      batch,
      concurrency,
      ...(drain.localConcurrency !== undefined && { localConcurrency: drain.localConcurrency, match: engineMatch(processes, batch, drain.localConcurrency) }),
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

/** What one enqueue sweep did and how long it took. */
interface SweepTiming {
  jobs: number;
  /** Records marked and sent per transaction. */
  batch: number;
  ms: number;
  /** Transactions it committed: the lost-job check, then one per batch and a last, empty one. */
  transactions: number;
}

/**
 * The boss-engine scenarios, and the sweep timed alone. One pg-boss instance (role client, as the
 * scheduler's sweep) sends the jobs throughout.
 */
async function drainBossEngine(ctx: BenchContext, url: string, scenarios: readonly BossEngineScenario[]): Promise<{ rows: Row[]; sweepAlone: SweepTiming }> {
  const config = loadConfig({}).boss;
  // Three connections: the sweep's transaction holds one while pg-boss reads its queue through the pool.
  return withPool(url, 3, async (pool) => {
    const boss = await startBoss({ config, pool, url, role: 'client', log: silentLogger });
    try {
      const sweepAlone = await sweepAloneTiming(ctx, pool, boss, config);
      // Statistics of a sent backlog, kept through the TRUNCATEs that reset each scenario (only the
      // row and page counts go). On tables never analyzed, pg-boss's fetch of 500 sorted all 100,000
      // queued jobs (bitmap scan, external sort: 50-58 ms) instead of reading its index (8-9 ms),
      // and whether autovacuum had analyzed them yet decided the rate. With these statistics the claim
      // by IDs reads the primary key; with those of a table that is mostly PROCESSED history it walks
      // records_due_idx instead (26-28 ms per 500 IDs against 7 ms at 100,000 due): not measured here.
      await pool.query(`ANALYZE rowfleet.records, ${pg.escapeIdentifier(config.schema)}.job`);
      const rows: Row[] = [];
      for (const { processes, batch, localConcurrency } of scenarios) {
        const scenario = `boss engine, ${processes} process${processes > 1 ? 'es' : ''}, batch ${batch}, localConcurrency ${localConcurrency}`;
        await resetRecords(pool, boss);
        const row = await drainRecords(
          ctx,
          url,
          pool,
          { engine: 'boss', scenario, processes, batch, localConcurrency },
          {
            // Records without jobs: nothing the workers can see until the sweep commits.
            prepare: (db) => insertBacklog(db, { count: BACKLOG, prefix: 'drain-', status: 'COMPLETED' }),
            // One transaction, so that the drain starts at one commit as direct's does.
            release: async (db) => {
              const timing = await timedSweep(db, boss, config, BACKLOG);
              return { commits: timing.transactions, sweep: timing };
            },
          },
        );
        if (row.sweep !== undefined && row.sweep.jobs !== BACKLOG) row.notes.push(`the sweep sent ${row.sweep.jobs} jobs for ${BACKLOG} records`);
        rows.push(row);
      }
      await resetRecords(pool, boss);
      return { rows, sweepAlone };
    } finally {
      await stopBoss(boss);
    }
  });
}

/** The sweep at the configured batch, no worker running: what the scheduler's sweep costs per job. */
async function sweepAloneTiming(ctx: BenchContext, pool: pg.Pool, boss: PgBoss, config: BossConfig): Promise<SweepTiming> {
  await resetRecords(pool, boss);
  await insertBacklog(pool, { count: BACKLOG, prefix: 'drain-', status: 'COMPLETED' });
  await pool.query('CHECKPOINT').catch(() => undefined);
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

function describeSweep({ jobs, batch, ms }: SweepTiming): string {
  const perSecond = ms > 0 ? Math.round((jobs * 1000) / ms) : 0;
  return `sweep: ${jobs.toLocaleString('en-US')} jobs in ${Math.round(ms).toLocaleString('en-US')} ms = ${perSecond.toLocaleString('en-US')} jobs/s (${batch.toLocaleString('en-US')} per transaction)`;
}

/** Pairs a boss-engine row with its pg-boss-alone baseline. */
function engineMatch(processes: number, batch: number, localConcurrency: number): string {
  return `${processes} x batch ${batch} x localConcurrency ${localConcurrency}`;
}

/**
 * The work() options bossEngine (src/worker/engine.ts) passes for a batch and localConcurrency at
 * the default 1 s poll: each fetch takes half of what a worker may hold. The notify interval is
 * left out: the baseline's workers do not LISTEN, and while batches come back full neither waits.
 */
function engineWorkOptions(batch: number, localConcurrency: number): WorkOptions {
  const concurrency = batch * CONCURRENCY_PER_BATCH;
  return { batchSize: Math.max(1, Math.ceil(Math.min(batch, concurrency) / 2)), localConcurrency, pollingIntervalSeconds: 1, burstWhenBatchFull: true };
}

/** pg-boss alone doing the boss engine's share of a scenario: its fetches and completions of the same jobs. */
function bossAloneAsEngine({ processes, batch, localConcurrency, full }: BossEngineScenario): BossVariant {
  const options = engineWorkOptions(batch, localConcurrency);
  return {
    label: `pg-boss as the boss engine runs it, batchSize ${options.batchSize}, localConcurrency ${localConcurrency}, burstWhenBatchFull`,
    processes,
    options,
    recordJobs: true,
    match: engineMatch(processes, batch, localConcurrency),
    ...(full !== undefined && { full }),
  };
}

/**
 * Transactions committed in this database so far. Backends report to pg_stat_database at exit
 * and about once a second while busy; read after the workers exited (and a pause), the difference
 * is their transactions give or take a second of the bench's own polling.
 */
async function commitsSoFar(pool: pg.Pool): Promise<number> {
  await delay(STATS_SETTLE_MS);
  const { rows } = await pool.query<{ n: string }>('SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0]!.n);
}

/**
 * Autovacuum and autoanalyze runs finished on this database's tables so far (pg_stat_user_tables).
 * A drain churns 100,000 rows, so one may start inside it: a rate that dips is then explained.
 */
async function maintenanceSoFar(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) AS n FROM pg_stat_user_tables');
  return Number(rows[0]!.n);
}

async function drainBoss(ctx: BenchContext, url: string, variants: readonly BossVariant[]): Promise<Row[]> {
  const rows: Row[] = [];
  await withPool(url, 1, async (pool) => {
    for (const [i, variant] of variants.entries()) {
      // A schema per variant, dropped after it, as the direct runs each start from an empty table:
      // a job table left by the previous variant (dead rows, statistics of another queue) once
      // stalled pg-boss's fetch for a minute.
      const queue: BossQueue = { schema: `pgboss_bench_${i}`, name: 'drain' };
      const scenario = `${variant.label}, ${variant.processes} process${variant.processes > 1 ? 'es' : ''}`;
      // This instance only installs the schema and inserts; the workers are processes of their own.
      const boss = new PgBoss({ connectionString: url, schema: queue.schema, supervise: false, schedule: false });
      boss.on('error', (err) => ctx.progress(`pg-boss error: ${err.message}`));
      await boss.start();
      try {
        await boss.createQueue(queue.name, variant.recordJobs ? processQueueOptions() : undefined);
        // The boss engine's jobs are what the sweep sends: a pointer, keyed by the record's ID.
        const job = (n: number): JobInsert => (variant.recordJobs ? recordJob(`drain-${n}`, '1') : { data: jobData(n) });
        ctx.progress(`${scenario}: inserting ${BACKLOG.toLocaleString('en-US')} jobs`);
        for (let from = 1; from <= BACKLOG; from += BOSS_INSERT_CHUNK) {
          const count = Math.min(BOSS_INSERT_CHUNK, BACKLOG - from + 1);
          await boss.insert(queue.name, Array.from({ length: count }, (_, k) => job(from + k)));
        }
        // As for the boss engine's queue (drainBossEngine): the fetch plans from statistics, not from a guess.
        await pool.query(`ANALYZE ${queue.schema}.job`);
        await pool.query('CHECKPOINT').catch(() => undefined);
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

/** Where a pg-boss variant's jobs live. */
interface BossQueue {
  schema: string;
  name: string;
}

async function drainQueue(ctx: BenchContext, url: string, pool: pg.Pool, queue: BossQueue, scenario: string, variant: BossVariant): Promise<Row> {
  const committedBefore = await commitsSoFar(pool);
  const maintenanceBefore = await maintenanceSoFar(pool);
  const children = Array.from({ length: variant.processes }, () => spawnBossWorker(url, queue, variant.options));
  const pids = children.map((child) => child.pid);
  const cpu = meter(ctx, pids);
  const notes: string[] = [];
  let span: { records: number; seconds: number };
  let usage: CpuUsage;
  let polls = 0;
  try {
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
      ctx.progress(`${scenario}: draining ${BACKLOG.toLocaleString('en-US')} jobs`);
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
    processes: variant.processes,
    batch: variant.options.batchSize ?? 1,
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

function spawnBossWorker(url: string, queue: BossQueue, options: WorkOptions): Child {
  return spawnTsx(['bench/lib/boss-worker.ts', queue.schema, queue.name, JSON.stringify(options)], { DATABASE_URL: url });
}

/**
 * Every rowfleet scenario starts from empty tables and a fresh checkpoint. With `boss`, pg-boss's
 * jobs go too: deleteAllJobs() truncates its job table (no dead rows left for the next fetch to
 * skip) and zeroes its cached queue counts.
 */
async function resetRecords(pool: pg.Pool, boss?: PgBoss): Promise<void> {
  await pool.query('TRUNCATE rowfleet.records, rowfleet.event_log, rowfleet.sweep_state');
  await boss?.deleteAllJobs();
  // CHECKPOINT needs superuser (or pg_checkpoint); on a server where we lack it, skip it.
  await pool.query('CHECKPOINT').catch(() => undefined);
}

function meter(ctx: BenchContext, workerPids: readonly number[]): CpuMeter {
  return cpuMeter(() => ({ bench: [process.pid], workers: [...workerPids], postgres: ctx.postgres.pids() }));
}

function best(rows: readonly Row[]): Row {
  return rows.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
}

interface Verdict {
  target: string;
  directBest: { scenario: string; perSecond: number };
  bossBest: { scenario: string; perSecond: number };
  ratio: number;
  pass: boolean;
}

/** What the boss engine's row claim and row completion add to pg-boss's own fetch and complete. */
interface ClaimCost {
  scenario: string;
  /** Records/s, boss engine. */
  engine: number;
  /** Jobs/s, pg-boss alone with the same work() options and jobs. */
  alone: number;
  engineVsAlone: number;
  engineVsBossBest: number;
  /** Records/s, direct engine with the same processes and batch (when measured). */
  direct?: number;
  engineVsDirect?: number;
  /** Wall time per record: 1/engine - 1/alone, in µs (equally, ms per 1,000 records). */
  addedMicros: number;
  /** CPU per record, workers and Postgres together, in µs. */
  cpuMicros: { engine: number; alone: number };
}

function claimCostsOf(rows: readonly Row[]): ClaimCost[] {
  return rows
    .filter((row) => row.engine === 'boss engine' && row.perSecond > 0)
    .flatMap((row) => {
      const alone = rows.find((other) => other.engine === 'pg-boss' && other.match === row.match);
      if (alone === undefined || alone.perSecond === 0) return [];
      const direct = rows.find((other) => other.engine === 'direct' && other.processes === row.processes && other.batch === row.batch);
      return [{
        scenario: row.scenario,
        engine: row.perSecond,
        alone: alone.perSecond,
        engineVsAlone: row.perSecond / alone.perSecond,
        engineVsBossBest: row.ratio ?? 0,
        ...(direct !== undefined && direct.perSecond > 0 && { direct: direct.perSecond, engineVsDirect: row.perSecond / direct.perSecond }),
        addedMicros: 1e6 / row.perSecond - 1e6 / alone.perSecond,
        cpuMicros: { engine: cpuMicrosPerRecord(row), alone: cpuMicrosPerRecord(alone) },
      }];
    });
}

function cpuMicrosPerRecord(row: Row): number {
  return Math.round((((row.cpu.workers ?? 0) + (row.cpu.postgres ?? 0)) / 100) * (1e6 / row.perSecond));
}

function report(ctx: BenchContext, rows: readonly Row[], verdict: Verdict, claimCosts: readonly ClaimCost[], sweepAlone: SweepTiming): string {
  const { settings } = ctx.postgres;
  const table = renderTable(
    'lrrrrrrrrl',
    ['scenario', 'procs', 'batch', 'conc.', 'records/s', 'vs pg-boss best', 'seconds', 'txns/1k records', 'CPU µs/record workers / pg', 'CPU % bench / workers / pg / irq / other / idle'],
    rows.map((row) => [
      row.scenario,
      String(row.processes),
      String(row.batch),
      String(row.concurrency ?? row.options?.localConcurrency ?? 1),
      row.perSecond.toLocaleString('en-US'),
      row.ratio === undefined ? '' : `${row.ratio.toFixed(2)}x`,
      row.seconds.toFixed(2),
      row.commitsPer1k === undefined ? '-' : String(row.commitsPer1k),
      ['workers', 'postgres'].map((group) => microsPerRecord(row, group)).join(' / '),
      ['bench', 'workers', 'postgres', 'irq', 'other', 'idle'].map((group) => row.cpu[group] ?? '-').join(' / '),
    ]),
  );
  const summary = renderTable(
    'lllrl',
    ['target', 'direct best', 'pg-boss best', 'ratio', 'result'],
    [[
      verdict.target,
      `${verdict.directBest.perSecond.toLocaleString('en-US')}/s (${verdict.directBest.scenario})`,
      `${verdict.bossBest.perSecond.toLocaleString('en-US')}/s (${verdict.bossBest.scenario})`,
      `${verdict.ratio.toFixed(2)}x`,
      verdict.pass ? 'PASS' : 'MISS',
    ]],
  );
  const costs = renderTable(
    'lrrrrrrrr',
    ['boss engine', 'records/s', 'pg-boss alone, same options', 'engine / alone', 'engine / pg-boss best', 'direct, same procs & batch', 'engine / direct', 'row claim adds, µs/record (ms/1k)', 'CPU µs/record engine / alone / added'],
    claimCosts.map((cost) => [
      cost.scenario,
      cost.engine.toLocaleString('en-US'),
      `${cost.alone.toLocaleString('en-US')}/s`,
      `${cost.engineVsAlone.toFixed(2)}x`,
      `${cost.engineVsBossBest.toFixed(2)}x`,
      cost.direct === undefined ? '-' : `${cost.direct.toLocaleString('en-US')}/s`,
      cost.engineVsDirect === undefined ? '-' : `${cost.engineVsDirect.toFixed(2)}x`,
      cost.addedMicros.toFixed(1),
      `${cost.cpuMicros.engine} / ${cost.cpuMicros.alone} / ${cost.cpuMicros.engine - cost.cpuMicros.alone}`,
    ]),
  );
  const sweeps = rows.flatMap((row) => (row.sweep === undefined ? [] : [row.sweep]));
  const sweepLines = [
    `sweep alone (ROWFLEET_SWEEP_BATCH, no worker running): ${describeSweep(sweepAlone)}`,
    ...(sweeps.length > 0 ? [`sweep before each boss-engine drain (not in its time): ${sweepRange(sweeps)}`] : []),
  ];
  const notes = rows.flatMap((row) => row.notes.map((note) => `note: ${row.scenario}: ${note}`));
  const header = [
    `drain bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}; backlog ${BACKLOG.toLocaleString('en-US')} records / jobs, no-op handlers`,
    `direct: \`rowfleet worker --engine direct --handler noop --batch B --concurrency ${CONCURRENCY_PER_BATCH}xB\` per process, timed from the backlog commit to the last completion;`,
    `boss engine: \`rowfleet worker --engine boss --handler noop --batch B --concurrency ${CONCURRENCY_PER_BATCH}xB\` with ROWFLEET_LOCAL_CONCURRENCY per process (pg-boss batchSize B/2), timed from the sweep's commit to the last completion;`,
    'pg-boss: work() in its own processes (conc. = localConcurrency), timed from the first job started to the last completed; windowed rows: jobs completed in the first seconds;',
    "  \"as the boss engine runs it\": the boss engine's work() options, its {id, version} jobs and queue options, a no-op handler: the boss engine without the row claim;",
    'txns/1k records: transactions the workers committed per 1,000 records (pg_stat_database; ~ +-1 s of the bench\'s polling); CPU: % of one core',
  ].join('\n');
  const costHeader = [
    'the cost of the row claim: the boss engine against pg-boss alone with the same options and jobs (same run, same Postgres);',
    'row claim adds = 1/engine rate - 1/pg-boss-alone rate (wall time per record, all processes together); CPU: workers + Postgres per record',
  ].join('\n');
  return [header, '', table, '', summary, '', costHeader, '', costs, '', ...sweepLines, ...notes].join('\n');
}

function sweepRange(sweeps: readonly SweepTiming[]): string {
  const ms = sweeps.map((s) => s.ms);
  const rates = sweeps.map((s) => (s.jobs * 1000) / s.ms);
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const jobs = sweeps[0]!.jobs;
  return `${jobs.toLocaleString('en-US')} jobs in one transaction, ${fmt(Math.min(...ms))}-${fmt(Math.max(...ms))} ms = ${fmt(Math.min(...rates))}-${fmt(Math.max(...rates))} jobs/s`;
}

function microsPerRecord(row: Row, group: string): string {
  const percent = row.cpu[group];
  // A windowed row's workers mostly sleep between polls: CPU per job would measure the idling.
  if (percent === undefined || row.perSecond === 0 || row.windowed) return '-';
  return String(Math.round(((percent / 100) * 1e6) / row.perSecond));
}

if (isMain(import.meta.url)) main([drainBench]);
