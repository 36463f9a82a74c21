import { Command } from 'commander';
import { API, GENERAL } from '../../settings.ts';
import { settingOption } from '../setting-option.ts';
import { ensureSchema } from '../../boss/migrate.ts';
import { buildServer } from '../../http/server.ts';
import { openEnqueue } from '../../boss/enqueue.ts';
import { UserError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { warnIfConnectionsShort } from '../../db/capacity.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

export function registerApi(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('api'))
    .description('serve the HTTP API (POST /upsert, GET /records/:id, /healthz, /readyz)')
    .addOption(settingOption(API.port, 'port to listen on (0 picks a free one)'))
    .addOption(settingOption(GENERAL.host, 'address to listen on'))
    .addHelpText('after', '\nExamples:\n  rowfleet api --port 8080\n  ROWFLEET_API_TOKENS=secret1,secret2 rowfleet api --host 0.0.0.0\n')
    .action(async (flags: DatabaseFlags & { port?: number; host?: string }) => {
      const config = ctx.config({
        ...overridesFrom(flags),
        ...(flags.port !== undefined && { port: flags.port }),
        ...(flags.host !== undefined && { host: flags.host }),
      });
      const log = ctx.logger(config, 'api');
      await ctx.withPool(config, log, async (pool, url) => {
        await ensureSchema(url, config.databaseUrl === undefined, config.boss.enqueueOnUpsert ? config.boss : undefined);
        // Waiting requests (?wait=) LISTEN on a connection of their own.
        await warnIfConnectionsShort(pool, log, 'this API', [[`pool ${config.poolSize} + 1 LISTEN`, config.poolSize + 1]]);
        const enqueue = await openEnqueue(config, pool, log);
        try {
          const app = buildServer({ config, pool, log, enqueue: enqueue?.enqueue, listenUrl: url });
          let address: string;
          try {
            address = await app.listen({ port: config.port, host: config.host });
          } catch (err) {
            await app.close();
            throw listenFailure(ctx, log, err, config.host, config.port);
          }
          log.info({ address, tokens: config.apiTokens.length > 0, enqueueOnUpsert: enqueue !== undefined }, `rowfleet api listening on ${address}`);
          await waitForShutdown(ctx.io.shutdownSignal);
          log.info('shutting down: no new connections, finishing requests in flight');
          await app.close();
        } finally {
          await enqueue?.close();
        }
      });
    });
}

/** The address cannot be listened on: a line saying which and what to do; other errors as they are. */
export function listenFailure(ctx: CommandContext, log: Logger, err: unknown, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const say = (message: string) => ctx.failure(log, new UserError(message, 1, { cause: err }), { code, host, port });
  switch (code) {
    case 'EADDRINUSE':
      return say(`cannot listen on ${where}: the port is in use (another rowfleet api?); choose another with --port or PORT, or stop what holds it`);
    case 'EACCES':
      return say(`cannot listen on ${where}: not allowed (ports below 1024 need privileges); choose another with --port or PORT`);
    case 'EADDRNOTAVAIL':
      return say(`cannot listen on ${where}: ${host} is not an address of this machine; check --host or ROWFLEET_HOST`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return say(`cannot listen on ${where}: the name ${host} does not resolve to an address; check --host or ROWFLEET_HOST`);
    default:
      return err;
  }
}

export function waitForShutdown(signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return new Promise(() => {});
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
