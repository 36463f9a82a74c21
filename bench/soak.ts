/**
 * Issue 10's soak, run again to check that it is clean: the API and two workers under unsorted
 * batched upserts for 4 minutes. Before the one lock order (drizzle/0006_hot_path.sql) this run
 * (466,800 messages) logged 11,734 "could not record the outcome" errors, each a `deadlock
 * detected` between complete() and upsert_messages; memory and file descriptors stayed flat.
 *
 * What runs, on a database of its own: `rowfleet migrate`, then `rowfleet api` (127.0.0.1, a free
 * port) and 2 `rowfleet worker --handler noop` processes with default flags, each its own Node
 * process started from the repository with tsx, as every bench starts them. In the bench process,
 * 4 senders POST `/upsert` batches of 200 messages, closed loop, for 4 minutes (`--scale` shortens
 * it): ids drawn at random (so unsorted, a few repeated within a batch) from 20,000, each message
 * one version newer than the last one built for its id (one counter per id, shared by the
 * senders, taken when the batch is built; a batch built earlier may commit later, and its messages
 * for those ids are then stale).
 *
 * What is measured:
 * - messages answered, messages/s, and the applied / stale counts of the HTTP answers;
 * - deadlocks: the delta of pg_stat_database.deadlocks for the database, read once every process
 *   has exited (a backend's statistics land at the latest when its connection closes), and the
 *   `deadlock detected` lines the embedded Postgres wrote to its log during the run (its
 *   `pg.log` beside the data folder, src/db/embedded.ts; a DATABASE_URL server's log is not
 *   readable from here, and the report says so);
 * - the workers' log lines (JSON on stderr, default level info) at level >= 50 (error), and those
 *   saying "could not record the outcome";
 * - every 5 s, the RSS (VmRSS in /proc/<pid>/status) and open file descriptors (/proc/<pid>/fd) of
 *   the API and of each worker: min and max per process;
 * - after the senders stop, the time until no record is COMPLETED or PROCESSING (at most 60 s);
 *   the processes are then stopped with SIGTERM, by PID;
 * - consistency: every message answered is audited exactly once in rowfleet.event_log (reason
 *   applied or stale, as the HTTP answer said), and every record ends PROCESSED at the newest
 *   version answered for it.
 * Targets: deadlocks 0, outcome errors 0, consistency ok.
 *
 *   npm run bench -- soak [--scale 0.05]
 */
import { spawn, execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type pg from 'pg';
import { loadConfig } from '../src/config.ts';
import { startApi, type ApiProcess } from './lib/api-process.ts';
import { stopChild, type Child } from './lib/child.ts';
import { cpuMeter, type CpuUsage } from './lib/cpu.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { pollUntil } from './lib/poll.ts';
import { withPool } from './lib/pool.ts';
import { waitUntilReady } from './lib/worker-process.ts';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const SOAK_MS = 240_000;
const IDS = 20_000;
const SENDERS = 4;
const BATCH = 200;
const WORKERS = 2;
const SAMPLE_MS = 5_000;
/** A progress line every this many samples (30 s). */
const PROGRESS_EVERY = 6;
const SETTLE_TIMEOUT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 60_000;
/** pino's level number for `error`. */
const ERROR_LEVEL = 50;
const OUTCOME_ERROR = 'could not record the outcome';
/** Issue 10's run before the fix, for the header. */
const ISSUE = { messages: 466_800, outcomeErrors: 11_734 };

export const soakBench: Bench = {
  name: 'soak',
  summary: `issue 10's soak: rowfleet api + ${WORKERS} noop workers under ${SENDERS} senders of unsorted batches of ${BATCH} newer versions over ${IDS.toLocaleString('en-US')} ids; deadlocks, outcome errors, memory, fds, consistency`,
  // 4 minutes of sending, up to 60 s of settling, process starts and stops.
  budgetMinutes: 12,
  async run(ctx) {
    const soakMs = ctx.scaled(SOAK_MS, 10_000);
    const db = await ctx.postgres.createDatabase('rowfleet_bench_soak');
    try {
      return await withPool(db.url, 2, (pool) => soak(ctx, db.url, pool, soakMs));
    } finally {
      await db.drop();
    }
  },
};

/** What the senders were told, from the HTTP answers. */
interface Tally {
  batches: number;
  /** Messages in batches answered 200. */
  messages: number;
  reasons: Record<string, number>;
  /** Requests without a 200 answer (status or error), and a few of their messages. */
  failed: number;
  failures: string[];
  latenciesMs: number[];
  /** The newest version answered for each id (a failed batch wrote nothing). */
  newest: Map<string, number>;
}

/** A process's memory and descriptors at one sample; null once it is gone. */
interface Reading {
  rssMb: number;
  fds: number;
}

interface Sample {
  atSeconds: number;
  processes: Record<string, Reading | null>;
}

/** A worker's stderr, read as pino JSON lines. */
interface WorkerLog {
  lines: number;
  errors: number;
  outcomeErrors: number;
  /** Lines that were not JSON (a crash's stack, say): passed on to the bench's stderr. */
  unparsed: number;
  samples: string[];
  /** The counters its `worker stopped` line carries. */
  stopped?: Record<string, number>;
}

interface SoakWorker extends Child {
  name: string;
  log: WorkerLog;
  /** Resolves when its stderr has been read to the end. */
  logDone: Promise<void>;
}

/** Where this run's part of the Postgres log starts, or why there is none. */
type ServerLog = { file: string; offset: number } | { unavailable: string };

interface ServerLogCounts {
  file?: string;
  unavailable?: string;
  deadlockLines?: number;
  errorLines?: number;
  /** ERROR / FATAL / PANIC lines by message, most frequent first. */
  errorKinds?: Record<string, number>;
}

interface ProcessSummary {
  name: string;
  pid: number;
  samples: number;
  rssMb: { min: number; max: number; first: number; last: number };
  fds: { min: number; max: number; first: number; last: number };
  exit?: string;
  log?: WorkerLog;
}

interface Consistency {
  audited: { applied: number; stale: number; otherMessages: number; distinct: number; lifecycle: Record<string, number> };
  records: { expected: number; total: number; missing: number; unexpected: number; wrongVersion: number; notProcessed: number; byStatus: Record<string, number> };
  problems: string[];
  ok: boolean;
}

async function soak(ctx: BenchContext, url: string, pool: pg.Pool, soakMs: number) {
  const migrate = await runMigrate(url);
  ctx.progress(`rowfleet migrate: ${JSON.stringify(migrate)}`);
  const deadlocksBefore = await deadlocks(pool);
  const serverLog = await openServerLog(ctx, pool);

  const config = loadConfig({});
  ctx.progress(`starting rowfleet api and ${WORKERS} x \`rowfleet worker --handler noop\``);
  let api: ApiProcess | undefined;
  const workers: SoakWorker[] = [];
  const samples: Sample[] = [];
  let sampler: NodeJS.Timeout | undefined;
  let stopped = false;
  const stopProcesses = async () => {
    if (stopped) return;
    stopped = true;
    clearInterval(sampler);
    await Promise.all([api?.stop(), ...workers.map((worker) => stopChild(worker))]);
    await Promise.all(workers.map((worker) => worker.logDone));
  };
  try {
    api = await startApi({ databaseUrl: url, poolSize: config.poolSize });
    for (let i = 1; i <= WORKERS; i++) workers.push(spawnWorker(url, `worker ${i}`));
    await waitUntilReady(workers, pool, 'direct');
    const processes = [{ name: 'api', pid: api.pid }, ...workers.map(({ name, pid }) => ({ name, pid }))];
    ctx.progress(`pids: ${processes.map((p) => `${p.name} ${p.pid}`).join(', ')}; sending for ${(soakMs / 1000).toFixed(0)}s`);

    const tally: Tally = { batches: 0, messages: 0, reasons: {}, failed: 0, failures: [], latenciesMs: [], newest: new Map() };
    const startedAt = performance.now();
    let sending = true;
    const sample = () => {
      samples.push({ atSeconds: Math.round((performance.now() - startedAt) / 100) / 10, processes: Object.fromEntries(processes.map((p) => [p.name, read(p.pid)])) });
      if (sending && samples.length % PROGRESS_EVERY === 1 && samples.length > 1) ctx.progress(progressLine(samples.at(-1)!.processes, tally, workers, startedAt));
    };
    sample();
    sampler = setInterval(sample, SAMPLE_MS);

    const cpu = cpuMeter(() => ({ bench: [process.pid], api: [api!.pid], workers: workers.map((w) => w.pid), postgres: ctx.postgres.pids() }));
    cpu.start();
    const stopSending = new AbortController();
    const timer = setTimeout(() => stopSending.abort(), soakMs);
    const versions = new Map<string, number>();
    await Promise.all(Array.from({ length: SENDERS }, (_, i) => send(api!.url, i, versions, tally, stopSending.signal)));
    clearTimeout(timer);
    const sendSeconds = (performance.now() - startedAt) / 1000;
    const usage = cpu.stop();
    sending = false;
    const now = Object.fromEntries(processes.map((p) => [p.name, read(p.pid)]));
    ctx.progress(`${progressLine(now, tally, workers, startedAt)}; senders stopped, waiting for the workers to finish`);

    const settleStart = performance.now();
    const settled = await pollUntil(async () => (await unsettled(pool)) === 0, { intervalMs: 500, timeoutMs: SETTLE_TIMEOUT_MS });
    const settleSeconds = (settled.at - settleStart) / 1000;
    const left = settled.timedOut ? await unsettled(pool) : 0;
    ctx.progress(settled.timedOut ? `${left} records still COMPLETED or PROCESSING after ${SETTLE_TIMEOUT_MS / 1000}s` : `settled in ${settleSeconds.toFixed(1)}s`);
    sample();
    ctx.progress('stopping the processes (SIGTERM)');
    await stopProcesses();
    const exits = new Map(workers.map((w) => [w.name, describeExit(w)]));

    await backendsGone(pool);
    const deadlocksAfter = await deadlocks(pool);
    const logCounts = await countServerLog(serverLog);
    const consistency = await checkConsistency(pool, tally);
    const summaries = processes.map((p) => summarize(p.name, p.pid, samples, exits.get(p.name), workers.find((w) => w.name === p.name)?.log));

    const result = {
      soakSeconds: soakMs / 1000,
      sendSeconds,
      shape: { ids: IDS, senders: SENDERS, batch: BATCH, workers: WORKERS, sampleSeconds: SAMPLE_MS / 1000 },
      migrate,
      sent: {
        messages: tally.messages,
        batches: tally.batches,
        perSecond: Math.round(tally.messages / sendSeconds),
        reasons: tally.reasons,
        failedRequests: tally.failed,
        failures: tally.failures,
        batchMs: { p50: percentile(tally.latenciesMs, 0.5), p99: percentile(tally.latenciesMs, 0.99) },
      },
      settle: { seconds: settleSeconds, timedOut: settled.timedOut, left },
      deadlocks: deadlocksAfter - deadlocksBefore,
      serverLog: logCounts,
      workerLog: {
        errors: sum(workers.map((w) => w.log.errors)),
        outcomeErrors: sum(workers.map((w) => w.log.outcomeErrors)),
      },
      processes: summaries,
      consistency,
      cpu: usage,
      samples,
    };
    return { text: report(ctx, result), data: result };
  } finally {
    await stopProcesses();
  }
}

interface SoakResult {
  soakSeconds: number;
  sendSeconds: number;
  migrate: unknown;
  sent: { messages: number; batches: number; perSecond: number; reasons: Record<string, number>; failedRequests: number; failures: string[]; batchMs: { p50: number; p99: number } };
  settle: { seconds: number; timedOut: boolean; left: number };
  deadlocks: number;
  serverLog: ServerLogCounts;
  workerLog: { errors: number; outcomeErrors: number };
  processes: ProcessSummary[];
  consistency: Consistency;
  cpu: CpuUsage;
}

/** `rowfleet migrate --json` on the bench's database (already migrated by the harness: it must find nothing to do). */
async function runMigrate(url: string): Promise<unknown> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'migrate', '--json'], {
    cwd: REPO,
    env: { ...process.env, DATABASE_URL: url },
  });
  return JSON.parse(stdout);
}

/**
 * `rowfleet worker --handler noop`, default flags, its JSON log lines read as they come. Started
 * here rather than with bench/lib/worker-process.ts, which discards the logs the soak counts.
 */
function spawnWorker(url: string, name: string): SoakWorker {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'worker', '--handler', 'noop'], {
    cwd: REPO,
    // The default level, said out loud so that a ROWFLEET_LOG_LEVEL in the environment hides no error.
    env: { ...process.env, DATABASE_URL: url, ROWFLEET_LOG_LEVEL: 'info', ROWFLEET_LOG_FORMAT: 'json' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // If the bench dies (watchdog, crash, Ctrl-C), the worker must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));

  const log: WorkerLog = { lines: 0, errors: 0, outcomeErrors: 0, unparsed: 0, samples: [] };
  const lines = createInterface({ input: child.stderr! });
  lines.on('line', (line) => {
    log.lines += 1;
    if (line.includes(OUTCOME_ERROR)) log.outcomeErrors += 1;
    let entry: { level?: unknown; msg?: unknown; err?: { message?: unknown } } & Record<string, unknown>;
    try {
      entry = JSON.parse(line);
    } catch {
      log.unparsed += 1;
      process.stderr.write(`[${name}] ${line}\n`);
      return;
    }
    if (typeof entry.level === 'number' && entry.level >= ERROR_LEVEL) {
      log.errors += 1;
      if (log.samples.length < 3) log.samples.push(`${String(entry.msg)}${entry.err?.message !== undefined ? `: ${String(entry.err.message)}` : ''}`);
    }
    if (entry.msg === 'worker stopped') {
      log.stopped = Object.fromEntries(Object.entries(entry).filter((kv): kv is [string, number] => typeof kv[1] === 'number' && !['level', 'time', 'pid'].includes(kv[0])));
    }
  });
  const logDone = new Promise<void>((resolve) => lines.once('close', () => resolve()));
  return { name, process: child, pid: child.pid!, exited, log, logDone };
}

/**
 * One sender: batches of BATCH ids drawn at random, each one version newer than the last built for
 * its id, POSTed one after the other until `stop`. A batch in flight when it fires is finished.
 */
async function send(apiUrl: string, sender: number, versions: Map<string, number>, tally: Tally, stop: AbortSignal): Promise<void> {
  for (let n = 0; !stop.aborted; n++) {
    const items = Array.from({ length: BATCH }, () => {
      const id = `soak-${Math.floor(Math.random() * IDS)}`;
      const version = (versions.get(id) ?? 0) + 1;
      versions.set(id, version);
      return { id, version, data: { sender, batch: n, version } };
    });
    const started = performance.now();
    try {
      const response = await fetch(`${apiUrl}/upsert`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ items }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const body = await response.text();
      if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${body.slice(0, 200)}`);
      const { results } = JSON.parse(body) as { results: { id: string; reason: string }[] };
      tally.latenciesMs.push(performance.now() - started);
      tally.batches += 1;
      tally.messages += items.length;
      for (const [i, item] of items.entries()) {
        const reason = results[i]?.reason ?? 'missing';
        tally.reasons[reason] = (tally.reasons[reason] ?? 0) + 1;
        if (item.version > (tally.newest.get(item.id) ?? 0)) tally.newest.set(item.id, item.version);
      }
    } catch (err) {
      tally.failed += 1;
      if (tally.failures.length < 5) tally.failures.push((err as Error).message);
      // Not a tight loop against a server that refuses.
      await delay(1_000);
    }
  }
}

/** RSS and open descriptors of a live process, from /proc; null once it has exited. */
function read(pid: number): Reading | null {
  try {
    const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    return { rssMb: Math.round(kb / 102.4) / 10, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return null;
  }
}

function progressLine(readings: Sample['processes'], tally: Tally, workers: readonly SoakWorker[], startedAt: number): string {
  const seconds = (performance.now() - startedAt) / 1000;
  const processes = Object.entries(readings)
    .map(([name, r]) => `${name} ${r === null ? 'gone' : `${r.rssMb.toFixed(0)} MB ${r.fds} fds`}`)
    .join(', ');
  return `${seconds.toFixed(0)}s: ${rate(tally.messages)} messages (${rate(Math.round(tally.messages / seconds))}/s), ${tally.failed} failed requests, ${sum(workers.map((w) => w.log.outcomeErrors))} outcome errors; ${processes}`;
}

async function unsettled(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status IN ('COMPLETED', 'PROCESSING')`);
  return rows[0]!.n;
}

function describeExit(worker: SoakWorker): string {
  const { exitCode, signalCode } = worker.process;
  return signalCode !== null ? `signal ${signalCode}` : `code ${exitCode}`;
}

/** Deadlocks Postgres has detected in this database so far. */
async function deadlocks(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0]!.n);
}

/**
 * Until the backends of the stopped processes have gone (each reports its statistics as it
 * closes), at most 10 s; then a moment more for the last report to land.
 */
async function backendsGone(pool: pg.Pool): Promise<void> {
  await pollUntil(
    async () => {
      const { rows } = await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM 'rowfleet bench'`,
      );
      return rows[0]!.n === 0;
    },
    { intervalMs: 100, timeoutMs: 10_000 },
  );
  await delay(500);
}

/**
 * The embedded Postgres writes its log to `pg.log` beside its data folder (pg_ctl -l, see
 * src/db/embedded.ts); the run's part of it starts at its size now.
 */
async function openServerLog(ctx: BenchContext, pool: pg.Pool): Promise<ServerLog> {
  if (ctx.postgres.origin !== 'embedded') return { unavailable: "the server is DATABASE_URL's: its log is not readable from here" };
  const { rows } = await pool.query<{ dir: string }>(`SELECT current_setting('data_directory') AS dir`);
  const file = path.join(path.dirname(rows[0]!.dir), 'pg.log');
  try {
    return { file, offset: (await stat(file)).size };
  } catch (err) {
    return { unavailable: `no server log at ${file} (${(err as Error).message})` };
  }
}

/**
 * `deadlock detected` lines, and ERROR / FATAL / PANIC lines by kind, that the server logged since
 * openServerLog (every database's: only this bench runs now).
 */
async function countServerLog(log: ServerLog): Promise<ServerLogCounts> {
  if ('unavailable' in log) return { unavailable: log.unavailable };
  const handle = await open(log.file, 'r');
  try {
    const { size } = await handle.stat();
    const buffer = Buffer.alloc(Math.max(0, size - log.offset));
    await handle.read(buffer, 0, buffer.length, log.offset);
    const lines = buffer.toString('utf8').split('\n');
    // Grouped by message, numbers blanked: "ERROR: ... N record(s) were created concurrently; retry".
    const kinds = new Map<string, number>();
    for (const line of lines) {
      const error = /\b((?:ERROR|FATAL|PANIC):.*)$/.exec(line)?.[1];
      if (error === undefined) continue;
      const kind = error.replace(/\s+/g, ' ').replace(/\d+/g, 'N');
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
    return {
      file: log.file,
      deadlockLines: lines.filter((line) => line.includes('deadlock detected')).length,
      errorLines: sum([...kinds.values()]),
      errorKinds: Object.fromEntries([...kinds].sort((a, b) => b[1] - a[1])),
    };
  } finally {
    await handle.close();
  }
}

/**
 * Every message answered audited exactly once, as answered (versions are unique per id, so a
 * message is its (record_id, version)); every record PROCESSED at the newest version answered.
 */
async function checkConsistency(pool: pg.Pool, tally: Tally): Promise<Consistency> {
  const { rows: reasons } = await pool.query<{ reason: string; n: number }>('SELECT reason, count(*)::int AS n FROM rowfleet.event_log GROUP BY reason');
  const byReason = Object.fromEntries(reasons.map((r) => [r.reason, r.n]));
  const { rows: distinct } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM (SELECT DISTINCT record_id, version FROM rowfleet.event_log WHERE reason IN ('applied', 'stale')) AS messages`,
  );
  const audited = {
    applied: byReason.applied ?? 0,
    stale: byReason.stale ?? 0,
    otherMessages: (byReason.conflict ?? 0) + (byReason.duplicate ?? 0),
    distinct: distinct[0]!.n,
    lifecycle: Object.fromEntries(Object.entries(byReason).filter(([reason]) => !['applied', 'stale', 'conflict', 'duplicate'].includes(reason))),
  };
  const ids = [...tally.newest.keys()];
  const { rows: checked } = await pool.query<{ total: number; missing: number; unexpected: number; wrong_version: number; not_processed: number }>(
    `SELECT count(r.id)::int AS total,
            count(*) FILTER (WHERE r.id IS NULL)::int AS missing,
            count(*) FILTER (WHERE s.id IS NULL)::int AS unexpected,
            count(*) FILTER (WHERE r.version <> s.version)::int AS wrong_version,
            count(*) FILTER (WHERE r.status <> 'PROCESSED' OR r.processed_version IS DISTINCT FROM r.version)::int AS not_processed
       FROM unnest($1::text[], $2::bigint[]) AS s(id, version)
       FULL JOIN rowfleet.records r ON r.id = s.id`,
    [ids, ids.map((id) => tally.newest.get(id)!)],
  );
  const { rows: statuses } = await pool.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM rowfleet.records GROUP BY status ORDER BY status');
  const c = checked[0]!;
  const records = {
    expected: ids.length,
    total: c.total,
    missing: c.missing,
    unexpected: c.unexpected,
    wrongVersion: c.wrong_version,
    notProcessed: c.not_processed,
    byStatus: Object.fromEntries(statuses.map((s) => [s.status, s.n])),
  };

  const problems: string[] = [];
  const answered = { applied: tally.reasons.applied ?? 0, stale: tally.reasons.stale ?? 0 };
  const otherAnswers = tally.messages - answered.applied - answered.stale;
  if (otherAnswers > 0) problems.push(`${otherAnswers} answers neither applied nor stale (${JSON.stringify(tally.reasons)})`);
  if (audited.applied + audited.stale !== tally.messages) problems.push(`event_log holds ${audited.applied + audited.stale} applied / stale rows for ${tally.messages} messages answered`);
  if (audited.distinct !== audited.applied + audited.stale) problems.push(`${audited.applied + audited.stale - audited.distinct} messages audited more than once`);
  if (audited.applied !== answered.applied || audited.stale !== answered.stale) {
    problems.push(`event_log says ${audited.applied} applied / ${audited.stale} stale, the answers ${answered.applied} / ${answered.stale}`);
  }
  if (audited.otherMessages > 0) problems.push(`${audited.otherMessages} conflict / duplicate rows in event_log`);
  if (records.missing > 0) problems.push(`${records.missing} ids sent have no record`);
  if (records.unexpected > 0) problems.push(`${records.unexpected} records for ids never answered`);
  if (records.wrongVersion > 0) problems.push(`${records.wrongVersion} records not at the newest version answered`);
  if (records.notProcessed > 0) problems.push(`${records.notProcessed} records not PROCESSED at their version (${JSON.stringify(records.byStatus)})`);
  if (tally.failed > 0) problems.push(`${tally.failed} requests failed: their batches are left out of the counts (a request that failed after its commit would show as a mismatch)`);
  return { audited, records, problems, ok: problems.length === 0 };
}

function summarize(name: string, pid: number, samples: readonly Sample[], exit: string | undefined, log: WorkerLog | undefined): ProcessSummary {
  const readings = samples.flatMap((s) => (s.processes[name] ? [s.processes[name]] : []));
  const range = (values: number[]) =>
    values.length === 0 ? { min: 0, max: 0, first: 0, last: 0 } : { min: Math.min(...values), max: Math.max(...values), first: values[0]!, last: values.at(-1)! };
  return {
    name,
    pid,
    samples: readings.length,
    rssMb: range(readings.map((r) => r.rssMb)),
    fds: range(readings.map((r) => r.fds)),
    ...(exit !== undefined && { exit }),
    ...(log !== undefined && { log }),
  };
}

const rate = (n: number) => n.toLocaleString('en-US');
const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);
const met = (ok: boolean) => (ok ? 'met' : 'missed');

function report(ctx: BenchContext, r: SoakResult): string {
  const { settings } = ctx.postgres;
  const applied = r.sent.reasons.applied ?? 0;
  const stale = r.sent.reasons.stale ?? 0;
  const log = r.serverLog;
  const checks = renderTable(
    'llll',
    ['measure', 'value', 'target', 'result'],
    [
      ['messages answered', `${rate(r.sent.messages)} in ${r.sendSeconds.toFixed(1)} s = ${rate(r.sent.perSecond)}/s (${rate(r.sent.batches)} batches, p50 / p99 ${r.sent.batchMs.p50} / ${r.sent.batchMs.p99} ms)`, '', ''],
      ['applied / stale (HTTP answers)', `${rate(applied)} / ${rate(stale)}`, '', ''],
      ['failed requests', rate(r.sent.failedRequests), '0', met(r.sent.failedRequests === 0)],
      ['deadlocks (pg_stat_database delta)', rate(r.deadlocks), '0', met(r.deadlocks === 0)],
      [
        '`deadlock detected` in the Postgres log',
        log.deadlockLines === undefined ? `not available: ${log.unavailable}` : `${rate(log.deadlockLines)} (${rate(log.errorLines ?? 0)} ERROR lines in all)`,
        '0',
        log.deadlockLines === undefined ? '-' : met(log.deadlockLines === 0),
      ],
      ['worker log lines at level >= 50 (error)', rate(r.workerLog.errors), '0', met(r.workerLog.errors === 0)],
      [`worker lines "${OUTCOME_ERROR}"`, rate(r.workerLog.outcomeErrors), '0', met(r.workerLog.outcomeErrors === 0)],
      ['settled (no record COMPLETED / PROCESSING)', r.settle.timedOut ? `${rate(r.settle.left)} left after ${SETTLE_TIMEOUT_MS / 1000} s` : `after ${r.settle.seconds.toFixed(1)} s`, `<= ${SETTLE_TIMEOUT_MS / 1000} s`, met(!r.settle.timedOut)],
      [
        'consistency',
        `${rate(r.consistency.audited.applied + r.consistency.audited.stale)} audited (${rate(r.consistency.audited.distinct)} distinct), ${rate(r.consistency.records.total)} records: ${JSON.stringify(r.consistency.records.byStatus)}`,
        'ok',
        r.consistency.ok ? 'ok' : 'failed',
      ],
    ],
  );
  const processes = renderTable(
    'lrrrrrl',
    ['process', 'pid', 'samples', 'RSS MB min - max', 'RSS MB first -> last', 'fds min - max (first -> last)', 'exit / worker counters'],
    r.processes.map((p) => [
      p.name,
      String(p.pid),
      String(p.samples),
      `${p.rssMb.min.toFixed(0)} - ${p.rssMb.max.toFixed(0)}`,
      `${p.rssMb.first.toFixed(0)} -> ${p.rssMb.last.toFixed(0)}`,
      `${p.fds.min} - ${p.fds.max} (${p.fds.first} -> ${p.fds.last})`,
      [p.exit ?? '-', p.log?.stopped === undefined ? undefined : Object.entries(p.log.stopped).map(([k, v]) => `${k} ${v}`).join(', ')].filter((s) => s !== undefined).join('; '),
    ]),
  );
  const cpu = ['bench', 'api', 'workers', 'postgres', 'irq', 'other', 'idle'].map((group) => r.cpu[group] ?? '-').join(' / ');
  const notes = [
    ...r.consistency.problems.map((problem) => `consistency: ${problem}`),
    ...(Object.keys(r.consistency.audited.lifecycle).length > 0 ? [`event_log lifecycle rows: ${JSON.stringify(r.consistency.audited.lifecycle)}`] : []),
    ...r.processes.flatMap((p) => (p.log === undefined ? [] : [
      ...p.log.samples.map((s) => `${p.name} error: ${s}`),
      ...(p.log.unparsed > 0 ? [`${p.name}: ${p.log.unparsed} stderr lines that were not JSON (shown above)`] : []),
    ])),
    ...r.sent.failures.map((f) => `failed request: ${f}`),
    ...Object.entries(log.errorKinds ?? {}).slice(0, 5).map(([kind, n]) => `postgres log: ${rate(n)} x ${kind}`),
  ].map((line) => `note: ${line}`);
  const header = [
    `soak bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}; ${r.soakSeconds.toFixed(0)} s of sending${ctx.scale !== 1 ? ` (--scale ${ctx.scale}: a check, not a result)` : ''}`,
    `\`rowfleet api\` + ${WORKERS} x \`rowfleet worker --handler noop\` (default flags); ${SENDERS} senders, closed loop, POST /upsert batches of ${BATCH} ids drawn at random from ${rate(IDS)}, each a newer version`,
    `issue 10, before the fix: ${rate(ISSUE.messages)} messages in 240 s, ${rate(ISSUE.outcomeErrors)} "${OUTCOME_ERROR}" errors (deadlocks between complete() and upsert_messages)`,
    `targets: deadlocks 0, outcome errors 0, consistency ok; memory and fds sampled every ${SAMPLE_MS / 1000} s; CPU % while sending bench / api / workers / pg / irq / other / idle: ${cpu}`,
  ].join('\n');
  return [header, '', checks, '', processes, ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

if (isMain(import.meta.url)) main([soakBench]);
