/**
 * Runs a fleet from a Config until `signal` aborts: the one place that turns settings into worker
 * processes. Used by `rowfleet fleet` and by the library's createFleet.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config, Env } from '../config.ts';
import { resolveLogFormat, type Logger } from '../log.ts';
import { resolveDatabaseUrl } from '../db/connect.ts';
import { ensureSchema } from '../db/migrate.ts';
import { createPool } from '../db/pool.ts';
import { workerArgs } from '../cli/worker-options.ts';
import { Fleet } from './fleet.ts';

export interface FleetSize {
  initial: number;
  min: number;
  max: number;
  scaleEveryMs: number;
  targetWaitMs: number;
}

/** Idle backlog samples in a row before the fleet shrinks by one. */
export const IDLE_SAMPLES = 2;
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
  const fleet = new Fleet({
    worker: {
      command: process.execPath,
      args: [...process.execArgv.filter((arg) => !arg.startsWith('--inspect')), MAIN, 'worker', ...workerArgs(config.worker), '--log-level', config.logLevel],
      // Their stderr is a pipe to us, so left to themselves they would write JSON to a terminal.
      env: { ...env, DATABASE_URL: url, ROWFLEET_POOL_SIZE: String(config.poolSize), ROWFLEET_HOME: config.home, ROWFLEET_LOG_FORMAT: logFormat },
      cwd: process.cwd(),
    },
    ...size,
    idleSamples: IDLE_SAMPLES,
    concurrency: config.worker.concurrency,
    pool,
    log,
    output,
    stopTimeoutMs: config.worker.graceMs + STOP_MARGIN_MS,
  });
  try {
    await fleet.run(signal);
  } finally {
    await pool.end();
  }
}
