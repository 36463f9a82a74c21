import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { durationParser, parseInteger } from '../../config.ts';
import { UsageError } from '../../errors.ts';
import { resolveDatabaseUrl } from '../../db/connect.ts';
import { ensureSchema } from '../../db/migrate.ts';
import { createPool } from '../../db/pool.ts';
import { Fleet } from '../../fleet/fleet.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerArgs, workerOverrides, type WorkerFlags } from '../worker-options.ts';

interface FleetFlags {
  workers?: number;
  min?: number;
  max?: number;
  scaleEvery?: number;
  targetWait?: number;
}

/** Most workers one fleet starts: each is a Node process with its own pool. */
const MAX_WORKERS = 256;
/** Idle backlog samples in a row before the fleet shrinks by one. */
const IDLE_SAMPLES = 2;
/** Beyond a worker's grace: releasing what it still holds, unregistering, closing its pool. */
const STOP_MARGIN_MS = 15_000;

/** This CLI's entry point, beside this file's folder: src/cli/main.ts under tsx, dist/cli/main.js when built. */
const here = fileURLToPath(import.meta.url);
const MAIN = path.join(path.dirname(here), '..', `main${path.extname(here)}`);

const int = (name: string, min: number) => (raw: string) => parseInteger(raw, name, min, MAX_WORKERS);
const duration = (name: string, minMs: number) => (raw: string) => durationParser(minMs)(raw, name);

export function registerFleet(ctx: CommandContext): Command {
  return withWorkerOptions(withDatabaseOptions(new Command('fleet')))
    .description('run and supervise N `rowfleet worker` processes: restart the ones that die, autoscale between --min and --max, drain all on SIGTERM')
    .addOption(new Option('--workers <n>', `worker processes to run (default: --min when autoscaling, else ${os.availableParallelism()}, the CPUs here)`).argParser(int('--workers', 0)))
    .addOption(new Option('--min <n>', 'autoscale: fewest workers (with --max)').argParser(int('--min', 0)))
    .addOption(new Option('--max <n>', 'autoscale: most workers (with --min)').argParser(int('--max', 1)))
    .addOption(new Option('--scale-every <duration>', 'autoscale: how often to look at the backlog (default: 5s)').argParser(duration('--scale-every', 100)))
    .addOption(new Option('--target-wait <duration>', 'autoscale: add a worker while the oldest due record waits longer than this (default: 5s)').argParser(duration('--target-wait', 0)))
    .addHelpText(
      'after',
      `
Every worker option is passed on to each worker process. Autoscaling adds one worker per interval
while the oldest due record has waited longer than --target-wait, and removes the newest one
(SIGTERM: it drains) after ${IDLE_SAMPLES} intervals in a row with nothing due and spare capacity.

Examples:
  rowfleet fleet --workers 4 --handler ./handlers/sync.js --concurrency 20
  rowfleet fleet --min 1 --max 8 --target-wait 10s --handler sleep --sleep 15s
`,
    )
    .action(async (flags: DatabaseFlags & WorkerFlags & FleetFlags) => {
      const config = ctx.config({ ...overridesFrom(flags), worker: workerOverrides(flags) });
      const size = fleetSize(flags);
      const log = ctx.logger(config, 'fleet');
      // Resolved once, so that every worker uses the same Postgres (the embedded one included)
      // and none of them races to start or migrate it.
      const url = await resolveDatabaseUrl(config, log);
      await ensureSchema(url, config.databaseUrl === undefined);
      const pool = createPool({ connectionString: url, max: 2, log, applicationName: 'rowfleet fleet' });
      const fleet = new Fleet({
        worker: {
          command: process.execPath,
          // The same Node flags as this process (`--import tsx` when run from source), minus a
          // debugger port that every worker would fight over.
          args: [...process.execArgv.filter((arg) => !arg.startsWith('--inspect')), MAIN, 'worker', ...workerArgs(config.worker), '--log-level', config.logLevel],
          env: { ...ctx.io.env, DATABASE_URL: url, ROWFLEET_POOL_SIZE: String(config.poolSize), ROWFLEET_HOME: config.home },
          cwd: process.cwd(),
        },
        ...size,
        idleSamples: IDLE_SAMPLES,
        concurrency: config.worker.concurrency,
        pool,
        log,
        output: ctx.io.stderr,
        stopTimeoutMs: config.worker.graceMs + STOP_MARGIN_MS,
      });
      try {
        await fleet.run(ctx.io.shutdownSignal ?? new AbortController().signal);
      } finally {
        await pool.end();
      }
    });
}

/** --workers, --min, --max and the autoscale timings, checked against each other. */
export function fleetSize(flags: FleetFlags): { initial: number; min: number; max: number; scaleEveryMs: number; targetWaitMs: number } {
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
