import { Command } from 'commander';
import { loadHandler } from '../../worker/handler.ts';
import { runWorker } from '../../worker/run.ts';
import { FLEET_METRICS_ENV } from '../../fleet/run.ts';
import { overridesFrom, withDatabaseOptions, withMetricsOption, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerOverrides, type WorkerFlags } from '../worker-options.ts';

export function registerWorker(ctx: CommandContext): Command {
  return withMetricsOption(withWorkerOptions(withDatabaseOptions(new Command('worker'))), "this worker's metrics")
    .description('process COMPLETED records until SIGTERM: claim with SKIP LOCKED, run the handler under a lease, complete if still current')
    .addHelpText(
      'after',
      `
Connections: the pool (ROWFLEET_POOL_SIZE, default 10; a transactional handler needs one per
concurrent handler, so then concurrency + 2) plus one LISTEN connection.

Examples:
  rowfleet worker --handler ./handlers/sync.js --concurrency 20
  rowfleet worker --handler sleep --sleep 15s --lease 30s --timeout 1m
  ROWFLEET_MAX_ATTEMPTS=5 rowfleet worker --handler flaky --fail-rate 0.5
`,
    )
    .action(async (flags: DatabaseFlags & WorkerFlags) => {
      const config = ctx.config({ ...overridesFrom(flags), worker: workerOverrides(flags) });
      const log = ctx.logger(config, 'worker');
      const handler = await loadHandler(config.worker.handler, process.cwd(), config.worker);
      // FLEET_METRICS_ENV: set by a fleet serving --metrics-port for all its workers.
      const metricsToFleet = ctx.io.env[FLEET_METRICS_ENV] === '1' && process.send !== undefined;
      await runWorker({ config, handler, log, signal: ctx.io.shutdownSignal ?? new AbortController().signal, metricsToFleet });
    });
}
