/**
 * Runs a fleet from a Config until `signal` aborts: the one place that turns settings into worker
 * processes. Used by `rowfleet fleet` and by the library's createFleet.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config, Env, WorkerConfig } from '../config.ts';
import { UsageError } from '../errors.ts';
import { resolveLogFormat, type Logger } from '../log.ts';
import { resolveDatabaseUrl } from '../db/connect.ts';
import { createPool } from '../db/pool.ts';
import { warnIfConnectionsShort } from '../db/capacity.ts';
import { ensureSchema } from '../boss/migrate.ts';
import { requireHandler } from '../worker/handler.ts';
import { Fleet } from './fleet.ts';
import { fleetMetrics } from './metrics.ts';
import { serveMetrics, type MetricsServer } from '../worker/metrics-server.ts';

export interface FleetSize {
  initial: number;
  min: number;
  max: number;
  scaleEveryMs: number;
  targetWaitMs: number;
}

/** Backlog samples in a row that need fewer workers before the fleet shrinks. */
export const IDLE_SAMPLES = 2;
/** Set for its workers by a fleet that serves their metrics on its --metrics-port: they answer over IPC. */
export const FLEET_METRICS_ENV = 'ROWFLEET_FLEET_METRICS';
/** Beyond a worker's grace: releasing what it still holds, unregistering, closing its pool. */
const STOP_MARGIN_MS = 15_000;

/** The CLI's entry point: src/cli/main.ts under tsx, dist/cli/main.js when built. */
const here = fileURLToPath(import.meta.url);
const MAIN = path.join(path.dirname(here), '..', 'cli', `main${path.extname(here)}`);

export interface RunFleetOptions {
  config: Config;
  size: FleetSize;
  log: Logger;
  /** The workers' environment (their settings arrive as flags on top of it). */
  env: Env;
  /** Where the workers' log lines go. */
  output: { write(text: string): unknown };
  /** The workers' log format: the fleet's own (default: what ROWFLEET_LOG_FORMAT means for this process). */
  logFormat?: 'json' | 'pretty';
  signal: AbortSignal;
}

export async function runFleet({ config, size, log, env, output, signal, logFormat = resolveLogFormat(config.logFormat) }: RunFleetOptions): Promise<void> {
  const url = await resolveDatabaseUrl(config, log);
  await ensureSchema(url, config.databaseUrl === undefined, config.worker.engine === 'boss' ? config.boss : undefined);
  const pool = createPool({ connectionString: url, max: 2, log, applicationName: 'rowfleet fleet' });
  // At its largest: every worker's pool and LISTEN connection, and the fleet's own two.
  const perWorker = config.poolSize + 1;
  await warnIfConnectionsShort(pool, log, 'this fleet', [[`${size.max} worker${size.max === 1 ? '' : 's'} × (pool ${config.poolSize} + 1 LISTEN)`, size.max * perWorker], ['its own pool', 2]]);
  // The workers never bind the fleet's metrics port themselves: they answer the fleet.
  const { ROWFLEET_METRICS_PORT: _port, ...workerEnv } = env;
  const metricsOn = config.metricsPort !== undefined;
  const fleet = new Fleet({
    worker: {
      command: process.execPath,
      args: [...process.execArgv.filter((arg) => !arg.startsWith('--inspect')), MAIN, 'worker', ...workerArgs(config.worker), '--log-level', config.logLevel],
      // Their stderr is a pipe to us, so left to themselves they would write JSON to a terminal.
      env: { ...workerEnv, ...(metricsOn && { [FLEET_METRICS_ENV]: '1' }), DATABASE_URL: url, ROWFLEET_POOL_SIZE: String(config.poolSize), ROWFLEET_HOME: config.home, ROWFLEET_LOG_FORMAT: logFormat },
      cwd: process.cwd(),
    },
    ...size,
    idleSamples: IDLE_SAMPLES,
    concurrency: config.worker.concurrency,
    kinds: config.worker.kinds,
    pool,
    log,
    output,
    stopTimeoutMs: config.worker.graceMs + STOP_MARGIN_MS,
  });
  let served: MetricsServer | undefined;
  try {
    if (config.metricsPort !== undefined) served = await serveMetrics(fleetMetrics(fleet), { host: config.host, port: config.metricsPort, log });
    await fleet.run(signal);
  } finally {
    await served?.close();
    await pool.end();
  }
}

/** The sizing flags (`--workers`, `--min`, `--max`, `--scale-every`, `--target-wait`), as given. */
export interface FleetSizeFlags {
  workers?: number | undefined;
  min?: number | undefined;
  max?: number | undefined;
  scaleEvery?: number | undefined;
  targetWait?: number | undefined;
}

/** --workers, --min, --max and the autoscale timings, checked against each other. */
export function fleetSize(flags: FleetSizeFlags): FleetSize {
  const autoscale = flags.min !== undefined || flags.max !== undefined;
  if (!autoscale) {
    for (const [flag, value] of [['--scale-every', flags.scaleEvery], ['--target-wait', flags.targetWait]] as const) {
      if (value !== undefined) throw new UsageError(`${flag} only applies when autoscaling; add --min and --max`);
    }
    const workers = flags.workers ?? os.availableParallelism();
    if (workers < 1) throw new UsageError('--workers must be at least 1 without autoscaling (--min 0 --max N scales to zero)');
    return { initial: workers, min: workers, max: workers, scaleEveryMs: 5_000, targetWaitMs: 5_000 };
  }
  if (flags.min === undefined || flags.max === undefined) throw new UsageError(`autoscaling needs both --min and --max (got only ${flags.min === undefined ? '--max' : '--min'})`);
  if (flags.min > flags.max) throw new UsageError(`--min (${flags.min}) must not exceed --max (${flags.max})`);
  const initial = flags.workers ?? flags.min;
  if (initial < flags.min || initial > flags.max) throw new UsageError(`--workers (${initial}) must be between --min (${flags.min}) and --max (${flags.max})`);
  return { initial, min: flags.min, max: flags.max, scaleEveryMs: flags.scaleEvery ?? 5_000, targetWaitMs: flags.targetWait ?? 5_000 };
}

/** The same settings as command-line flags, for a fleet to pass to its worker processes. */
export function workerArgs(config: WorkerConfig): string[] {
  return [
    '--engine', config.engine, '--handler', requireHandler(config.handler), '--concurrency', String(config.concurrency), '--batch', String(config.batch),
    '--lease', `${config.leaseMs}ms`, '--timeout', `${config.timeoutMs}ms`, '--max-attempts', String(config.maxAttempts),
    '--backoff-base', `${config.backoffBaseMs}ms`, '--backoff-cap', `${config.backoffCapMs}ms`,
    '--max-expirations', String(config.maxExpirations), '--poll', `${config.pollMs}ms`, '--grace', `${config.graceMs}ms`,
    '--sleep', `${config.sleepMs}ms`, '--fail-rate', String(config.failRate),
    ...(config.kinds === undefined ? [] : ['--kinds', config.kinds.join(',')]),
  ];
}
