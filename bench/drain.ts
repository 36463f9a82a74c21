/**
 * How fast a fleet empties a backlog: records per second drained from 100,000 due records by
 * `rowfleet worker --engine direct --handler noop`, for 1, 2 and 4 worker processes and claim
 * batches of 10 / 100 / 1000, beside pg-boss 12 draining 100,000 no-op jobs on the same Postgres in
 * the same run (its own schema; batchSize 1000 with localConcurrency 2, the fastest settings seen
 * on this machine, plus burstWhenBatchFull, in one, two and four processes; without the burst and
 * with its defaults, over a short window, for reference).
 * Target (the issue's): the direct engine's best rate >= 1.5x pg-boss's best.
 *
 * What is timed. Direct: the workers start on an empty table and are left to register (process
 * startup is not part of a drain); the backlog is then committed in one INSERT with a NOTIFY, and
 * the drain runs from that commit to the last completion (max(processed_at)). pg-boss: its jobs
 * are inserted first and its workers started after; the drain runs from the first job's
 * started_on to the last completed_on, so pg-boss pays neither startup nor a poll interval.
 *
 *   npm run bench -- drain [--quick]
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { PgBoss, type WorkOptions } from 'pg-boss';
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

interface BossVariant {
  label: string;
  processes: number;
  options: WorkOptions;
  /** Measured over a fixed window instead of to the end of the backlog. */
  windowed?: boolean;
  /** Left out of `--quick`. */
  full?: boolean;
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
  engine: 'direct' | 'pg-boss';
  scenario: string;
  processes: number;
  batch: number;
  /** Handlers per process (direct: --concurrency). */
  concurrency?: number;
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
  summary: `records/s draining a ${BACKLOG.toLocaleString('en-US')}-record backlog: direct engine (1/2/4 processes x batch 10/100/1000) vs pg-boss 12`,
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_drain');
    try {
      const rows: Row[] = [];
      const batches = ctx.quick ? QUICK_BATCH_SIZES : BATCH_SIZES;
      for (const batch of batches) {
        for (const processes of WORKER_COUNTS) rows.push(await drainDirect(ctx, db.url, processes, batch));
      }
      rows.push(...(await drainBoss(ctx, db.url, BOSS_VARIANTS.filter((v) => !(ctx.quick && v.full)))));

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
      return { text: report(ctx, rows, verdict), data: { backlog: BACKLOG, verdict, scenarios: rows } };
    } finally {
      await db.drop();
    }
  },
};

async function drainDirect(ctx: BenchContext, url: string, processes: number, batch: number): Promise<Row> {
  const scenario = `direct, ${processes} process${processes > 1 ? 'es' : ''}, batch ${batch}`;
  const concurrency = batch * CONCURRENCY_PER_BATCH;
  return withPool(url, 1, async (pool) => {
    await resetRecords(pool);
    await awaitQuiet(ctx.postgres.pids, ctx.progress);
    const fleet = await startWorkers(processes, { databaseUrl: url, concurrency, batch, handler: 'noop' }, pool);
    let stopped = false;
    try {
      const committedBefore = await commitsSoFar(pool);
      await pool.query('BEGIN');
      try {
        await insertBacklog(pool, { count: BACKLOG, prefix: 'drain-', status: 'COMPLETED' });
        // upsertMessages notifies once per call; a bulk load does the same, in the same transaction.
        await pool.query(`SELECT pg_notify('rowfleet_due', '')`);
        await pool.query('COMMIT');
      } catch (err) {
        await pool.query('ROLLBACK');
        throw err;
      }
      const committedAt = performance.now();
      const cpu = meter(ctx, fleet.pids);
      cpu.start();
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
      // The bench's own transactions: the load, the polls and the query above.
      const workerCommits = (await commitsSoFar(pool)) - committedBefore - (polls + 3);
      const notes: string[] = [];
      if (poll.timedOut) notes.push(`timed out after ${DRAIN_TIMEOUT_MS / 1000}s with ${processed} of ${BACKLOG} processed`);
      if (repeated > 0) notes.push(`${repeated} records were claimed more than once`);
      if (usage.other > BUSY_OTHER_PERCENT) notes.push(`other processes used ${usage.other}% CPU meanwhile: the rate is low`);
      const perSecond = Math.round(processed / seconds);
      ctx.progress(`${scenario}: ${perSecond.toLocaleString('en-US')} records/s (${seconds.toFixed(2)}s)${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
      return {
        engine: 'direct',
        scenario,
        processes,
        batch,
        concurrency,
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
  });
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
        await boss.createQueue(queue.name);
        ctx.progress(`${scenario}: inserting ${BACKLOG.toLocaleString('en-US')} jobs`);
        for (let from = 1; from <= BACKLOG; from += BOSS_INSERT_CHUNK) {
          const count = Math.min(BOSS_INSERT_CHUNK, BACKLOG - from + 1);
          await boss.insert(queue.name, Array.from({ length: count }, (_, k) => ({ data: jobData(from + k) })));
        }
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
  const workerCommits = (await commitsSoFar(pool)) - committedBefore - (polls + 2);
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

/** Every direct scenario starts from an empty table and a fresh checkpoint. */
async function resetRecords(pool: pg.Pool): Promise<void> {
  await pool.query('TRUNCATE rowfleet.records');
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

function report(ctx: BenchContext, rows: readonly Row[], verdict: Verdict): string {
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
  const notes = rows.flatMap((row) => row.notes.map((note) => `note: ${row.scenario}: ${note}`));
  const header = [
    `drain bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}; backlog ${BACKLOG.toLocaleString('en-US')} records / jobs, no-op handlers`,
    `direct: \`rowfleet worker --engine direct --handler noop --batch B --concurrency ${CONCURRENCY_PER_BATCH}xB\` per process, timed from the backlog commit to the last completion;`,
    'pg-boss: work() in its own processes (conc. = localConcurrency), timed from the first job started to the last completed; windowed rows: jobs completed in the first seconds;',
    'txns/1k records: transactions the workers committed per 1,000 records (pg_stat_database; ~ +-1 s of the bench\'s polling); CPU: % of one core',
  ].join('\n');
  return [header, '', table, '', summary, ...notes].join('\n');
}

function microsPerRecord(row: Row, group: string): string {
  const percent = row.cpu[group];
  // A windowed row's workers mostly sleep between polls: CPU per job would measure the idling.
  if (percent === undefined || row.perSecond === 0 || row.windowed) return '-';
  return String(Math.round(((percent / 100) * 1e6) / row.perSecond));
}

if (isMain(import.meta.url)) main([drainBench]);
