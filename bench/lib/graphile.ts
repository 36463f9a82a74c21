/**
 * graphile-worker 0.18, the second peer of the drain and wake-up benches, in a schema of its own in
 * the bench's database, its workers processes of their own (bench/lib/graphile-worker.ts).
 *
 * Drain: the jobs are added first, in bulk (WorkerUtils.addJobs, graphile's add_jobs, 10,000 a
 * call), its table analyzed as pg-boss's is; the worker processes load and connect, wait at the
 * start gate and start together. graphile-worker deletes a job when it completes, so its tables
 * hold no completion times: each process notes, in memory, when its no-op task first started and
 * last returned, and reports them over IPC. The drain runs from the first start to the last return
 * (this host's clock), as pg-boss's runs from its first started_on to its last completed_on and
 * rowfleet's to its last processed_at. The job's DELETE follows the return by a tick and a round
 * trip (completeJobBatchDelay 0), so the span is at most a few ms short in graphile's favour.
 *
 * Settings, two sets:
 * - GRAPHILE_DRAIN_SETTINGS, issue 10's (the drain bench's peers part): concurrentJobs 10,
 *   localQueue.size 500, completeJobBatchDelay 0, preparedStatements left at its default (true),
 *   maxPoolSize its default (10). These are NOT the settings of graphile-worker's performance
 *   documentation: that uses concurrentJobs 24 and maxPoolSize 25, and also sets failJobBatchDelay.
 * - GRAPHILE_PERFORMANCE_SETTINGS, the configuration graphile-worker's own performance
 *   documentation (its "Performance" page, "Quick stats" and "perfTest results: With batching",
 *   checked against the docs of 0.18's repository) gives for its quick stats: concurrentJobs 24,
 *   maxPoolSize 25, localQueue { size: 500 }, completeJobBatchDelay 0, failJobBatchDelay 0
 *   (its `connectionString` and `fileExtensions` do not apply: the task list is passed to run()).
 *   preparedStatements is left at its default (true) there too. The scaling bench uses these.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { Logger, makeWorkerUtils, runMigrations, type WorkerUtils } from 'graphile-worker';
import { jobData } from './backlog.ts';
import { spawnTsx, stopChild, type Child } from './child.ts';
import type { CpuUsage } from './cpu.ts';
import { openGate } from './gate.ts';
import type { BenchContext } from './harness.ts';
import type { GraphileProgress, GraphileWorkerSpec } from './graphile-worker.ts';
import { pollUntil } from './poll.ts';
import { awaitQuiet, BUSY_OTHER_PERCENT } from './quiet.ts';
import { withPool } from './pool.ts';
import { checkpoint, commitsSoFar, DRAIN_TIMEOUT_MS, maintenanceSoFar, meter, plural, type DrainRow } from './record-drain.ts';

/** What a graphile-worker drain process is run with (GraphileWorkerSpec's tuning fields). */
export interface GraphileDrainSettings {
  concurrentJobs: number;
  localQueueSize: number;
  completeJobBatchDelay: number;
  /** graphile-worker's default (-1, no batching) when absent; a no-op task never fails anyway. */
  failJobBatchDelay?: number;
  /** graphile-worker's default (10) when absent. */
  maxPoolSize?: number;
}

/** Issue 10's settings, the drain bench's peers part (not the performance documentation's: see above). */
export const GRAPHILE_DRAIN_SETTINGS: GraphileDrainSettings = { concurrentJobs: 10, localQueueSize: 500, completeJobBatchDelay: 0 };
/** graphile-worker's performance documentation's configuration (see above), for the scaling bench. */
export const GRAPHILE_PERFORMANCE_SETTINGS: GraphileDrainSettings = { concurrentJobs: 24, maxPoolSize: 25, localQueueSize: 500, completeJobBatchDelay: 0, failJobBatchDelay: 0 };

/** The settings as graphile-worker's options read: `concurrentJobs 24, maxPoolSize 25, localQueue.size 500, ...`. */
export function describeGraphileSettings(settings: GraphileDrainSettings): string {
  return [
    `concurrentJobs ${settings.concurrentJobs}`,
    ...(settings.maxPoolSize !== undefined ? [`maxPoolSize ${settings.maxPoolSize}`] : []),
    `localQueue.size ${settings.localQueueSize}`,
    `completeJobBatchDelay ${settings.completeJobBatchDelay}`,
    ...(settings.failJobBatchDelay !== undefined ? [`failJobBatchDelay ${settings.failJobBatchDelay}`] : []),
  ].join(', ');
}
const ADD_CHUNK = 10_000;
const LISTEN_TIMEOUT_MS = 30_000;

/** Warnings and errors only, on stderr: the bench's progress lines stay readable. */
export const quietLogger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`[graphile-worker] ${level}: ${message}\n`);
});

let schemas = 0;

/** A fresh schema name for one scenario. */
export function graphileSchema(): string {
  return `graphile_bench_${schemas++}`;
}

/** Installs graphile-worker's schema (its migrations), once, before any worker process starts. */
export async function installGraphile(url: string, schema: string): Promise<void> {
  await runMigrations({ connectionString: url, schema, logger: quietLogger });
}

export async function graphileUtils(url: string, schema: string, maxPoolSize = 2): Promise<WorkerUtils> {
  return makeWorkerUtils({ connectionString: url, schema, maxPoolSize, logger: quietLogger });
}

/** A graphile-worker process; `ipc` for a drain (its gate and its progress reports). */
export function spawnGraphileWorker(url: string, spec: GraphileWorkerSpec): Child {
  // NO_LOG_SUCCESS: graphile-worker's switch for its per-job "Completed task" line.
  return spawnTsx(['bench/lib/graphile-worker.ts', JSON.stringify(spec)], { DATABASE_URL: url, NO_LOG_SUCCESS: '1' }, { ipc: spec.mode === 'drain' });
}

/** Waits until `count` graphile-worker connections LISTEN in this database (their wake-up path is up). */
export async function waitForGraphileListen(pool: pg.Pool, count: number, children: readonly Child[]): Promise<void> {
  const deadline = Date.now() + LISTEN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const gone = children.find((child) => child.process.exitCode !== null);
    if (gone !== undefined) throw new Error(`graphile-worker (pid ${gone.pid}) exited with code ${gone.process.exitCode} before it listened`);
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN "jobs:insert"%'`,
    );
    if (rows[0]!.n >= count) return;
    await delay(50);
  }
  throw new Error(`graphile-worker did not LISTEN within ${LISTEN_TIMEOUT_MS / 1000}s`);
}

/** `settings`: GRAPHILE_DRAIN_SETTINGS unless given. */
export async function drainGraphile(
  ctx: BenchContext,
  url: string,
  { processes, backlog, settings = GRAPHILE_DRAIN_SETTINGS }: { processes: number; backlog: number; settings?: GraphileDrainSettings },
): Promise<DrainRow> {
  const schema = graphileSchema();
  const scenario = `graphile-worker, ${describeGraphileSettings(settings)}, ${plural(processes)}, ${backlog.toLocaleString('en-US')}`;
  return withPool(url, 1, async (pool) => {
    await installGraphile(url, schema);
    try {
      ctx.progress(`${scenario}: adding ${backlog.toLocaleString('en-US')} jobs`);
      const utils = await graphileUtils(url, schema);
      try {
        for (let from = 1; from <= backlog; from += ADD_CHUNK) {
          const count = Math.min(ADD_CHUNK, backlog - from + 1);
          await utils.addJobs(Array.from({ length: count }, (_, k) => ({ identifier: 'noop', payload: jobData(from + k) })));
        }
      } finally {
        await utils.release();
      }
      // As pg-boss's job table: the fetch plans from statistics, not from a guess.
      await pool.query(`ANALYZE ${schema}._private_jobs`);
      await checkpoint(pool);
      await awaitQuiet(ctx.postgres.pids, ctx.progress);
      return await measureDrain(ctx, url, pool, { schema, scenario, processes, backlog, settings });
    } finally {
      await pool.query(`DROP SCHEMA ${schema} CASCADE`);
    }
  });
}

async function measureDrain(
  ctx: BenchContext,
  url: string,
  pool: pg.Pool,
  { schema, scenario, processes, backlog, settings }: { schema: string; scenario: string; processes: number; backlog: number; settings: GraphileDrainSettings },
): Promise<DrainRow> {
  const committedBefore = await commitsSoFar(pool);
  const maintenanceBefore = await maintenanceSoFar(pool);
  const children = Array.from({ length: processes }, () => spawnGraphileWorker(url, { mode: 'drain', schema, ...settings }));
  const progress = new Map<number, GraphileProgress>();
  for (const child of children) {
    child.process.on('message', (message: unknown) => {
      if ((message as { type?: string } | null)?.type === 'progress') progress.set(child.pid, message as GraphileProgress);
    });
  }
  const total = () => [...progress.values()].reduce((sum, p) => sum + p.count, 0);
  const cpu = meter(ctx, children.map((child) => child.pid));
  const notes: string[] = [];
  let usage: CpuUsage;
  try {
    await openGate(children, 'graphile-worker');
    // The CPU window opens at the gate: run()'s own startup (a migration check, LISTEN) is in it.
    cpu.start();
    ctx.progress(`${scenario}: draining ${backlog.toLocaleString('en-US')} jobs`);
    const poll = await pollUntil(async () => total() >= backlog || children.some((child) => child.process.exitCode !== null), { intervalMs: 20, timeoutMs: DRAIN_TIMEOUT_MS });
    usage = cpu.stop();
    if (poll.timedOut) notes.push(`timed out after ${DRAIN_TIMEOUT_MS / 1000}s with ${total()} of ${backlog} run`);
  } finally {
    // SIGTERM: each process stops its runner and sends its final counts before it exits.
    await Promise.all(children.map((child) => stopChild(child)));
  }
  const exited = children.filter((child) => child.process.exitCode !== 0);
  if (exited.length > 0) notes.push(`${exited.length} worker process(es) exited with code ${exited.map((c) => c.process.exitCode ?? c.process.signalCode).join(', ')}`);
  const { rows } = await pool.query<{ left: number }>(`SELECT count(*)::int AS left FROM ${schema}._private_jobs`);
  if (rows[0]!.left > 0) notes.push(`${rows[0]!.left} jobs still in graphile's table after the drain`);
  const workerCommits = (await commitsSoFar(pool)) - committedBefore - 3;
  const maintenance = (await maintenanceSoFar(pool)) - maintenanceBefore;
  if (maintenance > 0) notes.push(`autovacuum or autoanalyze finished ${maintenance} time(s) on its tables meanwhile (their CPU counts as pg)`);
  if (usage.other > BUSY_OTHER_PERCENT) notes.push(`other processes used ${usage.other}% CPU meanwhile: the rate is low`);

  const reports = [...progress.values()];
  const records = total();
  const starts = reports.flatMap((p) => (p.firstStartMs === null ? [] : [p.firstStartMs]));
  const ends = reports.flatMap((p) => (p.lastEndMs === null ? [] : [p.lastEndMs]));
  const seconds = starts.length > 0 ? (Math.max(...ends) - Math.min(...starts)) / 1000 : 0;
  if (records > backlog) notes.push(`${records - backlog} jobs ran more than once`);
  const perSecond = seconds > 0 ? Math.round(records / seconds) : 0;
  ctx.progress(`${scenario}: ${perSecond.toLocaleString('en-US')} jobs/s (${records} in ${seconds.toFixed(2)}s)${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
  return {
    engine: 'graphile-worker',
    scenario,
    backlog,
    processes,
    batch: settings.localQueueSize,
    concurrency: settings.concurrentJobs,
    records,
    seconds,
    perSecond,
    commitsPer1k: records > 0 ? Math.round((workerCommits * 1000) / records) : 0,
    cpu: usage,
    options: { ...settings, ...(settings.maxPoolSize === undefined && { maxPoolSize: 'default (10)' }), preparedStatements: 'default (true)' },
    notes,
  };
}
