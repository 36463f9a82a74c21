import { Command } from 'commander';
import { createPool } from '../../db/pool.ts';
import { resolveDatabaseUrl } from '../../db/connect.ts';
import { ensureSchema } from '../../db/migrate.ts';
import { directEngine } from '../../worker/engine.ts';
import { loadHandler } from '../../worker/handler.ts';
import { Worker } from '../../worker/worker.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerOverrides, type WorkerFlags } from '../worker-options.ts';

export function registerWorker(ctx: CommandContext): Command {
  return withWorkerOptions(withDatabaseOptions(new Command('worker')))
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
      const w = config.worker;
      const handler = await loadHandler(w.handler, process.cwd(), w);
      const url = await resolveDatabaseUrl(config, log);
      await ensureSchema(url, config.databaseUrl === undefined);
      const pool = createPool({ connectionString: url, max: handler.transactional ? Math.max(config.poolSize, w.concurrency + 2) : config.poolSize, log, applicationName: 'rowfleet worker' });
      const worker = new Worker({
        pool,
        engine: directEngine(pool, url, log),
        handler,
        log,
        concurrency: w.concurrency,
        batch: w.batch,
        leaseMs: w.leaseMs,
        timeoutMs: w.timeoutMs,
        maxAttempts: w.maxAttempts,
        backoff: { baseMs: w.backoffBaseMs, capMs: w.backoffCapMs },
        maxExpirations: w.maxExpirations,
        pollMs: w.pollMs,
        rescueEveryMs: Math.max(1_000, Math.min(w.leaseMs / 2, 10_000)),
        graceMs: w.graceMs,
      });
      try {
        await worker.run(ctx.io.shutdownSignal ?? new AbortController().signal);
      } finally {
        await pool.end();
      }
    });
}
