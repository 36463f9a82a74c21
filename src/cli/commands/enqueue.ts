import { Command, Option } from 'commander';
import { parseInteger } from '../../config.ts';
import { ensureSchema } from '../../boss/migrate.ts';
import { startBoss, stopBoss } from '../../boss/boss.ts';
import { sweep } from '../../boss/sweep.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

export function registerEnqueue(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('enqueue'))
    .description('run one enqueue sweep now: send a pg-boss job for each due COMPLETED record that has none (for an external crontab or a Kubernetes CronJob)')
    .addOption(new Option('--limit <n>', 'send at most n jobs').argParser((v) => parseInteger(v, '--limit', 1, 100_000_000)))
    .option('--json', 'print {"enqueued": n}')
    .addHelpText(
      'after',
      `
Records that already have a pending job are not sent again: run twice in a row, the second
sends 0. Jobs deleted behind pg-boss's back are found and sent again.

Examples:
  rowfleet enqueue
  rowfleet enqueue --limit 10000 --json
  crontab:  * * * * *  cd /app && rowfleet enqueue --json
`,
    )
    .action(async (flags: DatabaseFlags & { limit?: number; json?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'enqueue');
      const b = config.boss;
      const result = await ctx.withPool(config, log, async (pool, url) => {
        await ensureSchema(url, config.databaseUrl === undefined, b);
        const boss = await startBoss({ config: b, pool, role: 'client', log });
        try {
          const progress = ctx.io.isTTY === true && flags.json !== true ? (n: number) => ctx.io.stderr.write(`\rsent ${n} jobs…`) : undefined;
          const swept = await sweep(pool, boss, { queue: b.queue, schema: b.schema, batch: b.sweepBatch, ...(flags.limit !== undefined && { limit: flags.limit }), ...(progress && { onProgress: progress }) });
          if (progress) ctx.io.stderr.write('\n');
          // The result is printed on stdout; the log keeps it for machines, below the default level.
          log.debug({ ...swept }, 'sweep done');
          return swept;
        } finally {
          await stopBoss(boss);
        }
      });
      ctx.print({ enqueued: result.enqueued }, flags.json === true, (r) =>
        `enqueued ${r.enqueued} job(s) on ${b.queue}${result.repaired > 0 ? ` (${result.repaired} of them replace lost jobs)` : ''}`,
      );
    });
}
