/**
 * Whether an autoscaling fleet reaches the throughput of its largest size when slow jobs arrive:
 * 200 records whose handler takes 15 s each (bench/lib/autoscale-handler.ts), written in one
 * upsertMessages call to an idle `rowfleet fleet --min 1 --max 8 --concurrency 5`, timed from that
 * commit to the last completion (max(processed_at)). Ideal: every one of the 8 x 5 slots busy from
 * the first second, 200 / (8 x 5) x 15 s = 75 s. Target: <= 1.15x the ideal.
 *
 * The fleet grows by one worker per --scale-every while the oldest due record has waited longer
 * than --target-wait (src/fleet/autoscale.ts), so how soon it reaches 8 workers decides the time:
 * - `--target-wait 1s --scale-every 1s` (the headline, and all of --quick);
 * - the defaults (5 s and 5 s), full run only.
 * The fleet starts before the records arrive and its first worker is registered and listening, as
 * a fleet that has been idle would be. The report shows when the fleet reached each size and when
 * each worker process began to run jobs.
 *
 * For a quick check: BENCH_AUTOSCALE_RECORDS=40 BENCH_AUTOSCALE_SLEEP_MS=1000 (ideal 1 s); without
 * BENCH_AUTOSCALE_RECORDS, --scale multiplies the 200 records.
 *
 *   npm run bench -- autoscale [--quick]
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { upsertMessages } from '../src/records/upsert.ts';
import { spawnTsx, stopChild, type Child } from './lib/child.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { awaitQuiet } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';

const RECORDS = 200;
const SLEEP_MS = 15_000;
const FLEET = { min: 1, max: 8, concurrency: 5 } as const;
const TARGET_RATIO = 1.15;
const HANDLER = 'bench/lib/autoscale-handler.ts';
const SAMPLE_MS = 250;
const READY_TIMEOUT_MS = 30_000;

interface Variant {
  label: string;
  flags: string[];
  /** Left out of --quick. */
  full?: boolean;
}

const VARIANTS: readonly Variant[] = [
  { label: '--target-wait 1s --scale-every 1s', flags: ['--target-wait', '1s', '--scale-every', '1s'] },
  { label: 'default timings (--target-wait 5s --scale-every 5s)', flags: [], full: true },
];

interface WorkerRun {
  pid: number;
  /** Seconds from the backlog's commit to this worker's first handler start. */
  firstStartSeconds: number;
  records: number;
}

interface Result {
  variant: string;
  command: string;
  records: number;
  sleepMs: number;
  idealSeconds: number;
  seconds: number;
  processed: number;
  ratio: number;
  pass: boolean;
  peakWorkers: number;
  /** Seconds from starting the fleet to its first worker registered and listening. */
  readySeconds: number;
  /** Seconds after the commit at which the fleet (registered workers) reached each size. */
  sizes: { workers: number; atSeconds: number }[];
  workers: WorkerRun[];
  notes: string[];
}

export const autoscaleBench: Bench = {
  name: 'autoscale',
  summary: `${RECORDS} records x ${SLEEP_MS / 1000} s jobs on \`rowfleet fleet --min ${FLEET.min} --max ${FLEET.max} --concurrency ${FLEET.concurrency}\`: time to drain vs the ideal`,
  budgetMinutes: 12,
  async run(ctx) {
    const records = positiveInt('BENCH_AUTOSCALE_RECORDS') ?? ctx.scaled(RECORDS, 1);
    const sleepMs = positiveInt('BENCH_AUTOSCALE_SLEEP_MS') ?? SLEEP_MS;
    const db = await ctx.postgres.createDatabase('rowfleet_bench_autoscale');
    const dir = await mkdtemp(path.join(tmpdir(), 'rowfleet-autoscale-'));
    try {
      const results: Result[] = [];
      await withPool(db.url, 2, async (pool) => {
        for (const [i, variant] of VARIANTS.entries()) {
          if (ctx.quick && variant.full) continue;
          await pool.query('TRUNCATE rowfleet.records, rowfleet.event_log');
          results.push(await runVariant(ctx, db.url, pool, variant, { records, sleepMs, prefix: `slow-${i}-`, startsFile: path.join(dir, `runs-${i}.txt`) }));
        }
      });
      return { text: report(ctx, results), data: { fleet: FLEET, targetRatio: TARGET_RATIO, results } };
    } finally {
      await rm(dir, { recursive: true, force: true });
      await db.drop();
    }
  },
};

async function runVariant(
  ctx: BenchContext,
  url: string,
  pool: pg.Pool,
  variant: Variant,
  { records, sleepMs, prefix, startsFile }: { records: number; sleepMs: number; prefix: string; startsFile: string },
): Promise<Result> {
  const idealSeconds = (records / (FLEET.max * FLEET.concurrency)) * (sleepMs / 1000);
  const args = ['fleet', '--min', String(FLEET.min), '--max', String(FLEET.max), '--concurrency', String(FLEET.concurrency), '--handler', HANDLER, ...variant.flags];
  const command = `rowfleet ${args.join(' ')}`;
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  ctx.progress(`${variant.label}: starting \`${command}\``);
  const fleet = spawnTsx(['src/cli/main.ts', ...args], {
    DATABASE_URL: url,
    ROWFLEET_LOG_LEVEL: 'warn',
    ROWFLEET_BENCH_STARTS: startsFile,
    BENCH_AUTOSCALE_SLEEP_MS: String(sleepMs),
  });
  const notes: string[] = [];
  const spawnedAt = performance.now();
  try {
    await waitForFirstWorker(pool, fleet);
    // A new worker's startup (tsx and module loading, connecting) is what each scale step waits for.
    const readySeconds = (performance.now() - spawnedAt) / 1000;
    const messages = Array.from({ length: records }, (_, k) => ({ id: `${prefix}${k + 1}`, data: { n: k + 1 } }));
    await upsertMessages(pool, messages);
    const committedAt = performance.now();
    const committedEpoch = performance.timeOrigin + committedAt;
    ctx.progress(`${variant.label}: ${records} records of ${sleepMs / 1000}s each committed; ideal ${idealSeconds.toFixed(1)}s`);

    const timeoutMs = idealSeconds * 3000 + 60_000;
    const sizes: Result['sizes'] = [];
    let processed = 0;
    let lastReport = committedAt;
    for (;;) {
      const { rows } = await pool.query<{ workers: number; processed: number }>(
        `SELECT (SELECT count(*) FROM rowfleet.workers)::int AS workers,
                (SELECT count(*) FROM rowfleet.records WHERE id LIKE $1 AND status = 'PROCESSED')::int AS processed`,
        [`${prefix}%`],
      );
      const at = (performance.now() - committedAt) / 1000;
      const { workers } = rows[0]!;
      processed = rows[0]!.processed;
      if (sizes.at(-1)?.workers !== workers) sizes.push({ workers, atSeconds: Math.round(at * 10) / 10 });
      if (performance.now() - lastReport >= 10_000) {
        ctx.progress(`${variant.label}: ${at.toFixed(0)}s: ${workers} workers, ${processed} / ${records} processed`);
        lastReport = performance.now();
      }
      if (processed >= records) break;
      if (fleet.process.exitCode !== null) throw new Error(`rowfleet fleet exited with code ${fleet.process.exitCode} during the run`);
      if (at * 1000 > timeoutMs) {
        notes.push(`timed out after ${(timeoutMs / 1000).toFixed(0)}s with ${processed} of ${records} processed`);
        break;
      }
      await delay(SAMPLE_MS);
    }
    const askedAt = performance.now();
    const { rows } = await pool.query<{ age_ms: number | null }>(
      `SELECT extract(epoch FROM clock_timestamp() - max(processed_at)) * 1000 AS age_ms FROM rowfleet.records WHERE id LIKE $1`,
      [`${prefix}%`],
    );
    const seconds = processed >= records ? (askedAt - Number(rows[0]!.age_ms ?? 0) - committedAt) / 1000 : (askedAt - committedAt) / 1000;
    const workers = await readRuns(startsFile, committedEpoch);
    const peakWorkers = Math.max(0, ...sizes.map((s) => s.workers));
    const ratio = idealSeconds > 0 ? seconds / idealSeconds : 0;
    const repeated = workers.reduce((sum, w) => sum + w.records, 0) - records;
    if (repeated > 0) notes.push(`${repeated} handler runs more than records: some ran twice`);
    ctx.progress(`${variant.label}: ${processed} processed in ${seconds.toFixed(1)}s (${ratio.toFixed(2)}x the ideal), peak ${peakWorkers} workers`);
    return { variant: variant.label, command, records, sleepMs, idealSeconds, seconds, processed, ratio, pass: processed >= records && ratio <= TARGET_RATIO, peakWorkers, readySeconds, sizes, workers, notes };
  } finally {
    // SIGTERM: the fleet drains its workers (idle by now) and exits.
    await stopChild(fleet, 60_000);
  }
}

/** Waits until the fleet's first worker has registered and listens: an idle fleet, ready for work. */
async function waitForFirstWorker(pool: pg.Pool, fleet: Child): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (fleet.process.exitCode !== null) throw new Error(`rowfleet fleet exited with code ${fleet.process.exitCode} before its first worker was ready`);
    const { rows } = await pool.query<{ registered: number; listening: number }>(
      `SELECT (SELECT count(*) FROM rowfleet.workers)::int AS registered,
              (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%rowfleet_due%')::int AS listening`,
    );
    if (rows[0]!.registered >= FLEET.min && rows[0]!.listening >= FLEET.min) return;
    await delay(50);
  }
  throw new Error(`rowfleet fleet: no worker registered and listening within ${READY_TIMEOUT_MS / 1000}s`);
}

/** Per worker process: when it first started a handler (seconds after the commit) and how many it ran. */
async function readRuns(file: string, committedEpoch: number): Promise<WorkerRun[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const byPid = new Map<number, WorkerRun>();
  for (const line of text.split('\n')) {
    const [, pid, start] = line.split(' ');
    if (pid === undefined || start === undefined) continue;
    const run = byPid.get(Number(pid)) ?? { pid: Number(pid), firstStartSeconds: Infinity, records: 0 };
    run.records += 1;
    run.firstStartSeconds = Math.min(run.firstStartSeconds, Math.round(((Number(start) - committedEpoch) / 1000) * 10) / 10);
    byPid.set(run.pid, run);
  }
  return [...byPid.values()].sort((a, b) => a.firstStartSeconds - b.firstStartSeconds);
}

function positiveInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return value;
}

function report(ctx: BenchContext, results: readonly Result[]): string {
  const { settings } = ctx.postgres;
  const table = renderTable(
    'lrrrrrrll',
    ['fleet', 'records', 'job s', 'ideal s', 'measured s', 'peak workers', 'vs ideal', `target <= ${TARGET_RATIO}x`, 'result'],
    results.map((r) => [
      r.variant,
      String(r.records),
      String(r.sleepMs / 1000),
      r.idealSeconds.toFixed(1),
      r.seconds.toFixed(1),
      String(r.peakWorkers),
      `${r.ratio.toFixed(2)}x`,
      `<= ${(r.idealSeconds * TARGET_RATIO).toFixed(1)} s`,
      r.pass ? 'met' : 'missed',
    ]),
  );
  const details = results.flatMap((r) => [
    '',
    `${r.variant}: \`${r.command}\` (first worker ready ${r.readySeconds.toFixed(1)}s after the fleet was started)`,
    `  fleet size after the commit: ${r.sizes.map((s) => `${s.workers} at ${s.atSeconds}s`).join(', ')}`,
    `  first job per worker: ${r.workers.map((w) => `${w.firstStartSeconds}s (${w.records} jobs)`).join(', ')}`,
    ...r.notes.map((note) => `  note: ${note}`),
  ]);
  const header = [
    `autoscale bench: postgres ${settings.server_version} (${ctx.postgres.origin}); an idle fleet (its first worker registered) gets N records of one slow job each in one upsert; timed from that commit to the last completion`,
    `ideal = N / (max ${FLEET.max} x concurrency ${FLEET.concurrency}) x job length: every slot busy from the start`,
  ].join('\n');
  return [header, '', table, ...details].join('\n');
}

if (isMain(import.meta.url)) main([autoscaleBench]);
