/**
 * `rowfleet up`: everything in one foreground process, for development. The API (with the
 * dashboard), the scheduler and a fleet of worker processes, on the embedded Postgres unless
 * DATABASE_URL is set. One SIGTERM or Ctrl-C drains them all (the fleet's workers finish or release
 * their records, the API finishes its requests, the scheduler its tick) and it exits 0. If one of
 * them fails, the others are stopped the same way and its error is the exit's.
 */
import { Command, Option } from 'commander';
import { parseInteger } from '../../config.ts';
import { API, GENERAL } from '../../settings.ts';
import { settingOption } from '../setting-option.ts';
import { ensureSchema } from '../../boss/migrate.ts';
import { buildServer } from '../../http/server.ts';
import { openEnqueue } from '../../boss/enqueue.ts';
import { runScheduler } from '../../scheduler/scheduler.ts';
import { runFleet } from '../../fleet/run.ts';
import { requireHandler } from '../../worker/handler.ts';
import { resolveLogFormat } from '../../log.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { withWorkerOptions, workerOverrides, type WorkerFlags } from '../worker-options.ts';
import { listenFailure } from './api.ts';

interface UpFlags extends DatabaseFlags, WorkerFlags {
  port?: number;
  host?: string;
  workers?: number;
}

export function registerUp(ctx: CommandContext): Command {
  return withWorkerOptions(withDatabaseOptions(new Command('up')))
    .description('for development: the API and dashboard, the scheduler and a fleet of workers in one foreground process, on the embedded Postgres unless DATABASE_URL is set')
    .addOption(settingOption(API.port, 'the API\'s port (0 picks a free one)'))
    .addOption(settingOption(GENERAL.host, 'the API\'s address'))
    .addOption(new Option('--workers <n>', 'worker processes (default: 2)').argParser((v) => parseInteger(v, '--workers', 1, 64)))
    .addHelpText(
      'after',
      `
Every worker option applies to each worker process, as for \`rowfleet fleet\`. Ctrl-C (or one
SIGTERM) drains everything and exits 0. In production run the three separately (see the Procfile).

Examples:
  rowfleet up --handler ./handlers/sync.js
  rowfleet up --port 8080 --workers 4 --handler sleep --sleep 2s
`,
    )
    .action(async (flags: UpFlags) => {
      const config = ctx.config({
        ...overridesFrom(flags),
        ...(flags.port !== undefined && { port: flags.port }),
        ...(flags.host !== undefined && { host: flags.host }),
        worker: workerOverrides(flags),
      });
      requireHandler(config.worker.handler);
      const log = ctx.logger(config, 'up');
      const workers = flags.workers ?? 2;
      await ctx.withPool(config, log, async (pool, url) => {
        await ensureSchema(url, config.databaseUrl === undefined, config.boss);
        // One stop for all three: the user's signal, or the first of them to fail.
        const stop = new AbortController();
        const outer = ctx.io.shutdownSignal;
        const onSignal = () => stop.abort();
        outer?.addEventListener('abort', onSignal, { once: true });
        if (outer?.aborted === true) stop.abort();
        const enqueue = await openEnqueue(config, pool, log);
        const app = buildServer({ config, pool, log: log.child({ name: 'api' }), enqueue: enqueue?.enqueue, listenUrl: url });
        try {
          let address: string;
          try {
            address = await app.listen({ port: config.port, host: config.host });
          } catch (err) {
            throw listenFailure(ctx, log, err, config.host, config.port);
          }
          log.info({ address, workers, handler: config.worker.handler }, `rowfleet up: the API and dashboard on ${address}/, a scheduler and ${workers} worker${workers === 1 ? '' : 's'}; Ctrl-C stops all`);
          const failed: unknown[] = [];
          const part = (run: Promise<void>) => run.catch((err: unknown) => {
            failed.push(err);
            stop.abort();
          });
          await Promise.all([
            part(runScheduler({ config: { ...config, databaseUrl: url }, pool, log: log.child({ name: 'scheduler' }), signal: stop.signal })),
            part(runFleet({
              config: { ...config, databaseUrl: url },
              size: { initial: workers, min: workers, max: workers, scaleEveryMs: 5_000, targetWaitMs: 5_000 },
              log: log.child({ name: 'fleet' }),
              env: ctx.io.env,
              output: ctx.io.stderr,
              logFormat: resolveLogFormat(config.logFormat, ctx.io.jsonLogs),
              signal: stop.signal,
            })),
            new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true })),
          ]);
          log.info('stopped: the workers drained, the scheduler finished its tick, the API its requests');
          if (failed.length > 0) throw failed[0];
        } finally {
          outer?.removeEventListener('abort', onSignal);
          await app.close();
          await enqueue?.close();
        }
      });
    });
}
