import { Command, Option } from 'commander';
import { parseInteger } from '../../config.ts';
import { UsageError, UserError } from '../../errors.ts';
import { parseMoment, requeue } from '../../ops/requeue.ts';
import { REQUEUE_STATUSES, type RequeueStatus } from '../../records/requeue.ts';
import { progressBar } from '../progress.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

interface RequeueFlags extends DatabaseFlags {
  status: RequeueStatus;
  id?: string[];
  error?: string;
  since?: string;
  before?: string;
  limit?: number;
  all?: boolean;
  dryRun?: boolean;
  rate?: number;
  json?: boolean;
}

export function registerRequeue(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('requeue'))
    .description('move FAILED (or PROCESSED) records back to COMPLETED to be processed again, with fresh attempts')
    .addOption(new Option('--status <status>', 'which records to requeue').choices([...REQUEUE_STATUSES]).default('FAILED'))
    .option('--id <id>', 'only this record (repeatable)', (value: string, previous: string[] = []) => [...previous, value])
    .option('--error <regex>', 'only records whose last error matches (a POSIX regular expression, as Postgres ~)')
    .option('--since <when>', 'only records that reached their status since then: a duration like 2h, or a timestamp')
    .option('--before <when>', 'only records that reached their status before then: a duration like 2h, or a timestamp')
    .addOption(new Option('--limit <n>', 'requeue at most n records (in id order)').argParser((v) => parseInteger(v, '--limit', 1, 1_000_000_000)))
    .option('--all', 'requeue every record in the status (required when no other filter is given)')
    .option('--dry-run', 'list what would be requeued and change nothing')
    .addOption(new Option('--rate <n>', 'records per second, to spread a large requeue out').argParser((v) => parseInteger(v, '--rate', 1, 1_000_000)))
    .option('--json', 'print {"matched": n, "requeued": n, "dryRun": bool}')
    .addHelpText(
      'after',
      `
Each record's attempts start again; its error history stays in event_log (a "requeued" event per
record). Requeueing twice is a no-op: only records still in the status are moved.

Examples:
  rowfleet requeue --all --dry-run
  rowfleet requeue --error 'timeout|ECONNRESET' --since 2h
  rowfleet requeue --id order-17 --id order-18
  rowfleet requeue --status PROCESSED --before 2026-11-20T00:00:00Z --all --rate 200
`,
    )
    .action(async (flags: RequeueFlags) => {
      const hasFilter = (flags.id?.length ?? 0) > 0 || flags.error !== undefined || flags.since !== undefined || flags.before !== undefined || flags.limit !== undefined;
      if (!hasFilter && flags.all !== true) {
        throw new UsageError(`no filter given: pass --id, --error, --since, --before or --limit, or --all to requeue every ${flags.status} record`);
      }
      const since = flags.since === undefined ? undefined : parseMoment(flags.since, '--since');
      const before = flags.before === undefined ? undefined : parseMoment(flags.before, '--before');
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'requeue');
      const json = flags.json === true;
      const bar = json ? undefined : progressBar(ctx.io, 'requeued');
      const result = await ctx.withPool(config, log, (pool) =>
        requeue(pool, {
          status: flags.status,
          ids: flags.id,
          error: flags.error,
          since,
          before,
          limit: flags.limit,
          dryRun: flags.dryRun === true,
          rate: flags.rate,
          ...(ctx.io.shutdownSignal && { signal: ctx.io.shutdownSignal }),
          ...(bar && { onProgress: (done: number, total: number) => bar.update(done, total) }),
          ...(!json && {
            onPreview: (rows) => {
              for (const r of rows) ctx.io.stdout.write(`${r.id}\t${r.status}\tv${r.version}\t${r.updatedAt.toISOString()}\t${r.lastError ?? ''}\n`);
            },
          }),
        }),
      );
      bar?.end();
      // The result is printed on stdout; the log keeps it for machines, below the default level.
      log.debug({ ...result, status: flags.status }, 'requeue done');
      ctx.print(result, json, (r) =>
        r.dryRun
          ? `dry run: ${r.matched} ${flags.status} record(s) would be requeued; nothing changed`
          : `requeued ${r.requeued} of ${r.matched} matching ${flags.status} record(s)${r.requeued < r.matched && !r.interrupted ? ' (the others changed meanwhile)' : ''}`,
      );
      if (result.interrupted && !result.dryRun) {
        throw new UserError(`interrupted after requeuing ${result.requeued} of ${result.matched}; run the same command again for the rest (what was requeued is no longer ${flags.status}, so it is not taken twice)`);
      }
    });
}
