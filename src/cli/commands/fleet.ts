import os from 'node:os';
import { Command, Option } from 'commander';
import { durationParser, parseInteger } from '../../config.ts';
import { UsageError } from '../../errors.ts';
import { requireHandler } from '../../worker/handler.ts';
import { resolveLogFormat } from '../../log.ts';
import { IDLE_SAMPLES, runFleet, type FleetSize } from '../../fleet/run.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerOverrides, type WorkerFlags } from '../worker-options.ts';

interface FleetFlags {
  workers?: number;
  min?: number;
  max?: number;
  scaleEvery?: number;
  targetWait?: number;
}

/** Most workers one fleet starts: each is a Node process with its own pool. */
const MAX_WORKERS = 256;
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
      requireHandler(config.worker.handler);
      const log = ctx.logger(config, 'fleet');
      await runFleet({
        config,
        size,
        log,
        env: ctx.io.env,
        output: ctx.io.stderr,
        logFormat: resolveLogFormat(config.logFormat, ctx.io.jsonLogs),
        signal: ctx.io.shutdownSignal ?? new AbortController().signal,
      });
    });
}

/** --workers, --min, --max and the autoscale timings, checked against each other. */
export function fleetSize(flags: FleetFlags): FleetSize {
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
