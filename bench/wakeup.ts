/**
 * How soon an idle worker reacts to new work: from the moment the write that makes it due has
 * resolved (it is committed) to the moment the handler starts, at 100 and at 1,000 messages per
 * second, each a new record (or job), for rowfleet and for graphile-worker 0.18 in the same run on
 * the same Postgres:
 * - rowfleet: single-message upsertMessages calls; one `rowfleet worker` process with default
 *   flags (concurrency 10, batch 100), woken through rowfleet_due (LISTEN/NOTIFY). Its handler
 *   (bench/lib/wakeup-handler.ts) writes its start time to a file.
 * - graphile-worker: WorkerUtils.addJob calls (graphile's add_job, whose insert trigger notifies
 *   jobs:insert); one graphile-worker process (bench/lib/graphile-worker.ts) with concurrentJobs 10,
 *   as rowfleet's default concurrency, every other setting at its default (no local queue, 2 s
 *   poll), woken by its LISTEN. Its task writes its start time to a file the same way.
 * Both processes read the same host clock (performance.timeOrigin + performance.now()).
 * Targets: rowfleet's p99 <= graphile-worker's at each rate (issue 10); and the earlier p99 <= 20 ms.
 *
 * The send schedule is open-loop (message i is due at i / rate seconds whatever happened to the
 * previous ones), so a slow worker shows up as latency rather than as a lower rate.
 *
 *   npm run bench -- wakeup [--seconds 12 --warmup 2]
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { upsertMessages } from '../src/records/upsert.ts';
import { stopChild } from './lib/child.ts';
import { cpuMeter, type CpuUsage } from './lib/cpu.ts';
import { graphileSchema, graphileUtils, installGraphile, spawnGraphileWorker, waitForGraphileListen } from './lib/graphile.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { pollUntil } from './lib/poll.ts';
import { awaitQuiet, BUSY_OTHER_PERCENT } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';
import { startWorkers } from './lib/worker-process.ts';

const RATES = [100, 1_000] as const;
const TARGET_P99_MS = 20;
/** rowfleet's default --concurrency, and graphile-worker's concurrentJobs to match. */
const CONCURRENCY = 10;
/** Writes in flight at once, at most: more would mean the database cannot keep up with the rate. */
const SEND_POOL = 16;
const HANDLER = 'bench/lib/wakeup-handler.ts';
const SENDER_LAG_NOTE_MS = 20;
const DRAIN_WAIT_MS = 15_000;

type Engine = 'rowfleet' | 'graphile-worker';

interface Latencies {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

interface Scenario {
  engine: Engine;
  rate: number;
  achievedRate: number;
  messages: number;
  commitToStart: Latencies;
  sendToStart: Latencies;
  writeCall: Latencies;
  missing: number;
  startedBeforeWriteReturned: number;
  handlerRunsRepeated: number;
  senderMaxLagMs: number;
  cpu: CpuUsage;
  pass20ms: boolean;
}

/** What one engine needs for a scenario: a process to wake, a write to send, a way to know all ran. */
interface Target {
  pids: number[];
  send(i: number): Promise<unknown>;
  allStarted(total: number): Promise<boolean>;
  stop(): Promise<void>;
}

export const wakeupBench: Bench = {
  name: 'wakeup',
  summary: `write commit -> handler start at ${RATES.join(' and ')} msgs/s, one idle worker woken by NOTIFY: rowfleet vs graphile-worker 0.18`,
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_wakeup');
    const dir = await mkdtemp(path.join(tmpdir(), 'rowfleet-wakeup-'));
    const schema = graphileSchema();
    try {
      await installGraphile(db.url, schema);
      const scenarios: Scenario[] = [];
      await withPool(db.url, SEND_POOL, async (pool) => {
        for (const rate of RATES) {
          for (const engine of ['rowfleet', 'graphile-worker'] as const) {
            const startsFile = path.join(dir, `starts-${engine}-${rate}.txt`);
            const target = engine === 'rowfleet' ? await rowfleetTarget(db.url, pool, rate, startsFile) : await graphileTarget(db.url, pool, schema, rate, startsFile);
            try {
              scenarios.push(await measure(ctx, engine, rate, target, startsFile, engine === 'rowfleet' ? `wake-${rate}-` : `job-${rate}-`));
            } finally {
              await target.stop();
            }
          }
        }
      });
      const comparisons = RATES.map((rate) => {
        const rowfleet = scenarios.find((s) => s.rate === rate && s.engine === 'rowfleet')!;
        const graphile = scenarios.find((s) => s.rate === rate && s.engine === 'graphile-worker')!;
        return { rate, rowfleetP99Ms: rowfleet.commitToStart.p99Ms, graphileP99Ms: graphile.commitToStart.p99Ms, pass: rowfleet.missing === 0 && rowfleet.commitToStart.p99Ms <= graphile.commitToStart.p99Ms };
      });
      // For the run's report (bench/lib/report.ts): how each engine was run.
      const setup = {
        rowfleet: `single-message upsertMessages calls; one \`rowfleet worker\` process, default flags (concurrency ${CONCURRENCY}, batch 100), woken through rowfleet_due`,
        'graphile-worker': `addJob calls; one graphile-worker process, concurrentJobs ${CONCURRENCY}, every other setting at its default (no local queue), woken by its LISTEN`,
      };
      return { text: report(ctx, scenarios, comparisons), data: { concurrency: CONCURRENCY, sendPool: SEND_POOL, setup, comparisons, scenarios } };
    } finally {
      await rm(dir, { recursive: true, force: true });
      await db.drop();
    }
  },
};

async function rowfleetTarget(url: string, pool: pg.Pool, rate: number, startsFile: string): Promise<Target> {
  // Default flags: --concurrency 10 and --batch 100 are rowfleet's defaults, left unset.
  const fleet = await startWorkers(1, { databaseUrl: url, handler: HANDLER, env: { ROWFLEET_BENCH_STARTS: startsFile } }, pool);
  return {
    pids: fleet.pids,
    send: (i) => upsertMessages(pool, [{ id: `wake-${rate}-${i}`, data: { seq: i } }]),
    allStarted: async (total) =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id LIKE $1 AND status = 'PROCESSED'`, [`wake-${rate}-%`])).rows[0]!.n >= total,
    stop: () => fleet.stop(),
  };
}

async function graphileTarget(url: string, pool: pg.Pool, schema: string, rate: number, startsFile: string): Promise<Target> {
  const child = spawnGraphileWorker(url, { mode: 'wakeup', schema, concurrentJobs: CONCURRENCY, startsFile });
  const utils = await graphileUtils(url, schema, SEND_POOL);
  try {
    await waitForGraphileListen(pool, 1, [child]);
  } catch (err) {
    await utils.release();
    await stopChild(child);
    throw err;
  }
  return {
    pids: [child.pid],
    send: (i) => utils.addJob('wake', { id: `job-${rate}-${i}` }),
    // graphile-worker deletes a job when it completes: all ran when its table is empty again.
    allStarted: async () => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}._private_jobs`)).rows[0]!.n === 0,
    stop: async () => {
      await utils.release();
      await stopChild(child);
    },
  };
}

async function measure(ctx: BenchContext, engine: Engine, rate: number, target: Target, startsFile: string, idPrefix: string): Promise<Scenario> {
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const warmupCount = Math.round(ctx.warmupSeconds * rate);
  const total = warmupCount + Math.round(ctx.seconds * rate);
  const sentAt = new Float64Array(total);
  const committedAt = new Float64Array(total);
  const cpu = cpuMeter(() => ({ bench: [process.pid], worker: target.pids, postgres: ctx.postgres.pids() }));
  let maxLagMs = 0;
  ctx.progress(`${engine}, ${rate}/s: ${total} single writes (${ctx.warmupSeconds}s warm-up + ${ctx.seconds}s)`);
  const inFlight = new Set<Promise<void>>();
  const origin = performance.now();
  for (let i = 0; i < total; i++) {
    const due = origin + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait >= 1) await delay(wait);
    maxLagMs = Math.max(maxLagMs, performance.now() - due);
    if (i === warmupCount) cpu.start();
    if (inFlight.size >= SEND_POOL) await Promise.race(inFlight);
    sentAt[i] = now();
    const sent = target.send(i).then(() => {
      committedAt[i] = now();
      inFlight.delete(sent);
    });
    inFlight.add(sent);
  }
  await Promise.all(inFlight);
  const sendSeconds = (performance.now() - origin) / 1000;
  const done = await pollUntil(() => target.allStarted(total), { intervalMs: 50, timeoutMs: DRAIN_WAIT_MS });
  const usage = cpu.stop();
  if (done.timedOut) ctx.progress(`${engine}, ${rate}/s: not everything had run within ${DRAIN_WAIT_MS / 1000} s of the last write`);

  const started = await readStarts(startsFile);
  const wake: number[] = [];
  const sendToStart: number[] = [];
  const write: number[] = [];
  let missing = 0;
  let early = 0;
  for (let i = warmupCount; i < total; i++) {
    const start = started.get(`${idPrefix}${i}`);
    write.push(committedAt[i]! - sentAt[i]!);
    if (start === undefined) {
      missing += 1;
      continue;
    }
    // The NOTIFY is delivered at commit, so the worker may start before our client has read the
    // reply: a true wake-up of ~0 ms shows as slightly negative. Kept as measured.
    if (start < committedAt[i]!) early += 1;
    wake.push(start - committedAt[i]!);
    sendToStart.push(start - sentAt[i]!);
  }
  const commitToStart = summarize(wake);
  const scenario: Scenario = {
    engine,
    rate,
    achievedRate: Math.round((total - warmupCount) / Math.max(0.001, sendSeconds - ctx.warmupSeconds)),
    messages: total - warmupCount,
    commitToStart,
    sendToStart: summarize(sendToStart),
    writeCall: summarize(write),
    missing,
    startedBeforeWriteReturned: early,
    handlerRunsRepeated: started.repeats,
    senderMaxLagMs: Math.round(maxLagMs * 10) / 10,
    cpu: usage,
    pass20ms: missing === 0 && commitToStart.p99Ms <= TARGET_P99_MS,
  };
  ctx.progress(`${engine}, ${rate}/s: commit -> start p50 ${commitToStart.p50Ms} ms, p99 ${commitToStart.p99Ms} ms`);
  return scenario;
}

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes on this host. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The first start of each record (a repeat would mean a second execution of the same version). */
async function readStarts(file: string): Promise<Map<string, number> & { repeats: number }> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const starts = Object.assign(new Map<string, number>(), { repeats: 0 });
  for (const line of text.split('\n')) {
    const [id, at] = line.split(' ');
    if (id === undefined || at === undefined) continue;
    if (starts.has(id)) starts.repeats += 1;
    else starts.set(id, Number(at));
  }
  return starts;
}

function summarize(values: number[]): Latencies {
  return {
    count: values.length,
    p50Ms: percentile(values, 0.5),
    p90Ms: percentile(values, 0.9),
    p99Ms: percentile(values, 0.99),
    maxMs: values.length === 0 ? 0 : Math.round(Math.max(...values) * 10) / 10,
  };
}

function report(ctx: BenchContext, scenarios: readonly Scenario[], comparisons: readonly { rate: number; rowfleetP99Ms: number; graphileP99Ms: number; pass: boolean }[]): string {
  const { settings } = ctx.postgres;
  const met = (ok: boolean) => (ok ? 'met' : 'missed');
  const summary = renderTable(
    'rrrrll',
    ['msgs/s', 'rowfleet p99 ms', 'graphile-worker p99 ms', 'rowfleet / graphile', 'target', 'result'],
    comparisons.map((c) => [
      String(c.rate),
      String(c.rowfleetP99Ms),
      String(c.graphileP99Ms),
      c.graphileP99Ms > 0 ? `${(c.rowfleetP99Ms / c.graphileP99Ms).toFixed(2)}x` : '-',
      "rowfleet p99 <= graphile's",
      met(c.pass),
    ]),
  );
  const table = renderTable(
    'lrrrrrrrlll',
    ['engine', 'msgs/s', 'achieved', 'measured', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'write call p50 / p99 ms', `p99 <= ${TARGET_P99_MS} ms`, 'CPU % bench / worker / pg / irq / other / idle'],
    scenarios.map((s) => [
      s.engine,
      String(s.rate),
      String(s.achievedRate),
      String(s.commitToStart.count),
      String(s.commitToStart.p50Ms),
      String(s.commitToStart.p90Ms),
      String(s.commitToStart.p99Ms),
      String(s.commitToStart.maxMs),
      `${s.writeCall.p50Ms} / ${s.writeCall.p99Ms}`,
      met(s.pass20ms),
      ['bench', 'worker', 'postgres', 'irq', 'other', 'idle'].map((g) => s.cpu[g] ?? '-').join(' / '),
    ]),
  );
  const notes = scenarios.flatMap((s) => {
    const name = `${s.engine}, ${s.rate}/s`;
    return [
      ...(s.cpu.other > BUSY_OTHER_PERCENT ? [`note: ${name}: other processes used ${s.cpu.other}% CPU meanwhile: the latencies are high`] : []),
      ...(s.senderMaxLagMs > SENDER_LAG_NOTE_MS ? [`note: ${name}: the sender fell ${s.senderMaxLagMs} ms behind its schedule at worst (this process was starved of CPU)`] : []),
      ...(s.missing > 0 ? [`note: ${name}: ${s.missing} measured messages never reached their handler`] : []),
      ...(s.startedBeforeWriteReturned > 0 ? [`note: ${name}: ${s.startedBeforeWriteReturned} handlers started before the write call had returned (NOTIFY beat the reply); counted as negative latencies`] : []),
      ...(s.handlerRunsRepeated > 0 ? [`note: ${name}: ${s.handlerRunsRepeated} handler runs repeated a record`] : []),
    ];
  });
  const header = [
    `wakeup bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}; ${ctx.seconds}s measured after ${ctx.warmupSeconds}s warm-up per scenario; latency = write call resolved -> handler start`,
    `rowfleet: single-message upsertMessages, one \`rowfleet worker\` (default flags: concurrency ${CONCURRENCY}, batch 100); graphile-worker 0.18: addJob, one process, concurrentJobs ${CONCURRENCY}, other settings default`,
  ].join('\n');
  return [header, '', summary, '', table, ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

if (isMain(import.meta.url)) main([wakeupBench]);
