import os from 'node:os';
import { Command, Option } from 'commander';
import { durationParser, parseInteger } from '../../config.ts';
import { requireHandler } from '../../worker/handler.ts';
import { resolveLogFormat } from '../../log.ts';
import { fleetSize, IDLE_SAMPLES, runFleet, type FleetSizeFlags } from '../../fleet/run.ts';
import { overridesFrom, withDatabaseOptions, withMetricsOption, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerOverrides, type WorkerFlags } from '../worker-options.ts';

/** Most workers one fleet starts: each is a Node process with its own pool. */
const MAX_WORKERS = 256;
const int = (name: string, min: number) => (raw: string) => parseInteger(raw, name, min, MAX_WORKERS);
const duration = (name: string, minMs: number) => (raw: string) => durationParser(minMs)(raw, name);

export function registerFleet(ctx: CommandContext): Command {
  return withMetricsOption(withWorkerOptions(withDatabaseOptions(new Command('fleet'))), 'the metrics of all its workers, summed,')
    .description('run and supervise N `rowfleet worker` processes: restart the ones that die, autoscale between --min and --max, drain all on SIGTERM')
    .addOption(new Option('--workers <n>', `worker processes to run (default: --min when autoscaling, else ${os.availableParallelism()}, the CPUs here)`).argParser(int('--workers', 0)))
    .addOption(new Option('--min <n>', 'autoscale: fewest workers (with --max)').argParser(int('--min', 0)))
    .addOption(new Option('--max <n>', 'autoscale: most workers (with --min)').argParser(int('--max', 1)))
    .addOption(new Option('--scale-every <duration>', 'autoscale: how often to look at the backlog (default: 5s)').argParser(duration('--scale-every', 100)))
    .addOption(new Option('--target-wait <duration>', 'autoscale: start every due record within this (default: 5s)').argParser(duration('--target-wait', 0)))
    .addHelpText(
      'after',
      `
Every worker option is passed on to each worker process. Autoscaling sizes the fleet, at start and
every --scale-every, to what the backlog needs: a handler slot per record held, plus enough to start
every due record within --target-wait at the workers' measured handler time. It grows to that at
once (up to --max), and shrinks to it (SIGTERM: retired workers drain) after ${IDLE_SAMPLES} samples in a
row that needed fewer workers. Each decision is logged with its inputs.

Examples:
  rowfleet fleet --workers 4 --handler ./handlers/sync.js --concurrency 20
  rowfleet fleet --min 1 --max 8 --target-wait 10s --handler sleep --sleep 15s
`,
    )
    .action(async (flags: DatabaseFlags & WorkerFlags & FleetSizeFlags) => {
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
