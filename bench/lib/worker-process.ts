/**
 * `rowfleet worker` processes, started as production starts them (one Node process each, its own
 * pool and event loop), and stopped by PID with SIGTERM. A worker counts as ready once it has
 * registered its row in rowfleet.workers and its LISTEN connection is up (the worker registers
 * first and listens after), so that a measurement starts after process startup (a second or more
 * of tsx and module loading) rather than including it, and no wake-up waits for the 1 s poll.
 * Both engines are woken on rowfleet_due. The boss engine's pg-boss also LISTENs on its own channel
 * (`pgboss_<hash of the schema>`) from its start, before the worker registers; that connection
 * does not count, or a worker would count as ready before the LISTEN that wakes it.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import type { EngineName } from '../../src/config.ts';
import { spawnTsx, stopChild, type Child } from './child.ts';

const READY_TIMEOUT_MS = 30_000;

export interface WorkerProcessOptions {
  databaseUrl: string;
  /** `--engine`; direct unless given. */
  engine?: EngineName;
  /** `--concurrency`; the worker's default (left unset) when absent. */
  concurrency?: number;
  /** `--batch`; the worker's default when absent. */
  batch?: number;
  /** `noop`, or a handler module's path relative to the repository. */
  handler: string;
  /** Extra environment for the handler module. */
  env?: Record<string, string>;
}

export interface WorkerProcesses {
  pids: number[];
  /** SIGTERM to each (a graceful drain), SIGKILL after a grace period; resolves when all exited. */
  stop(): Promise<void>;
}

/** Starts `count` worker processes and waits until each has registered and listens. */
export async function startWorkers(count: number, options: WorkerProcessOptions, pool: pg.Pool): Promise<WorkerProcesses> {
  const children: Child[] = Array.from({ length: count }, () => spawnWorker(options));
  const stop = () => Promise.all(children.map((child) => stopChild(child))).then(() => {});
  try {
    await waitUntilReady(children, pool, options.engine ?? 'direct');
  } catch (err) {
    await stop();
    throw err;
  }
  return { pids: children.map((child) => child.pid), stop };
}

function spawnWorker({ databaseUrl, engine = 'direct', concurrency, batch, handler, env = {} }: WorkerProcessOptions): Child {
  return spawnTsx(
    [
      'src/cli/main.ts', 'worker', '--engine', engine, '--handler', handler,
      ...(concurrency !== undefined ? ['--concurrency', String(concurrency)] : []),
      ...(batch !== undefined ? ['--batch', String(batch)] : []),
    ],
    // Per-record log lines would cost the worker more CPU than the noop handler it runs.
    { ...env, DATABASE_URL: databaseUrl, ROWFLEET_LOG_LEVEL: 'warn' },
  );
}

/** What each engine's LISTEN statement looks like in pg_stat_activity: the one that wakes its worker. */
const LISTEN_PATTERNS: Record<EngineName, string[]> = { direct: ['LISTEN%rowfleet_due%'], boss: ['LISTEN%rowfleet_due%'] };

/** Each worker has registered its row in rowfleet.workers and LISTENs; fails if one exits first. */
export async function waitUntilReady(children: readonly Child[], pool: pg.Pool, engine: EngineName): Promise<void> {
  const pids = children.map((child) => child.pid);
  const gone = new Map<number, number | null>();
  for (const child of children) void child.exited.then((code) => gone.set(child.pid, code));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const [pid, code] = gone.entries().next().value ?? [];
    if (pid !== undefined) throw new Error(`rowfleet worker (pid ${pid}) exited with code ${code} before it was ready`);
    const { rows } = await pool.query<{ registered: number; listening: number }>(
      `SELECT (SELECT count(DISTINCT pid) FROM rowfleet.workers WHERE pid = ANY ($1))::int AS registered,
              (SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND query ILIKE ANY ($2))::int AS listening`,
      [pids, LISTEN_PATTERNS[engine]],
    );
    if (rows[0]!.registered === pids.length && rows[0]!.listening >= pids.length) return;
    await delay(50);
  }
  throw new Error(`rowfleet worker processes did not register and LISTEN within ${READY_TIMEOUT_MS / 1000}s`);
}
