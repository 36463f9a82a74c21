import { Command, Option } from 'commander';
import { UsageError, UserError } from '../../errors.ts';
import { MessageError, parsePriority, parseRunAt } from '../../records/message.ts';
import { requeue } from '../../ops/requeue.ts';
import { REQUEUE_STATUSES, type RequeueStatus } from '../../records/requeue.ts';
import { asFlagErrors, bulkOptions, withBulkOptions, type BulkFlags } from '../bulk.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext } from '../context.ts';

interface RequeueFlags extends BulkFlags {
  status: RequeueStatus;
  priority?: string;
  runAt?: string;
}

export function registerRequeue(ctx: CommandContext): Command {
  const command = withDatabaseOptions(new Command('requeue'))
    .description('move FAILED (or PROCESSED) records back to COMPLETED to be processed again, with fresh attempts')
    .addOption(new Option('--status <status>', 'which records to requeue').choices([...REQUEUE_STATUSES]).default('FAILED'))
    .option('--priority <n>', 'give the requeued records this priority (-1000 to 1000; they keep theirs otherwise)')
    .option('--run-at <time>', 'process them no earlier than this ISO-8601 time (e.g. 2026-12-02T06:00:00Z)');
  return withBulkOptions(command, 'requeue', 'requeued')
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
  rowfleet requeue --all --priority 10 --run-at 2026-12-02T06:00:00Z
`,
    )
    .action(async (flags: RequeueFlags) => {
      const set = asUsage(() => ({
        priority: flags.priority === undefined ? undefined : parsePriority(/^-?\d+$/.test(flags.priority) ? Number(flags.priority) : flags.priority, '--priority'),
        runAt: parseRunAt(flags.runAt, '--run-at'),
      }));
      const { options, finish } = bulkOptions(ctx, flags, `requeue every ${flags.status} record`, 'requeued');
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'requeue');
      const result = await ctx.withPool(config, log, (pool) => asFlagErrors(() => requeue(pool, { ...options, status: flags.status, ...set })));
      finish();
      // The result is printed on stdout; the log keeps it for machines, below the default level.
      log.debug({ ...result, status: flags.status }, 'requeue done');
      ctx.print(result, flags.json === true, (r) =>
        r.dryRun
          ? `dry run: ${r.matched} ${flags.status} record(s) would be requeued; nothing changed`
          : `requeued ${r.requeued} of ${r.matched} matching ${flags.status} record(s)${r.requeued < r.matched && !r.interrupted ? ' (the others changed meanwhile)' : ''}`,
      );
      if (result.interrupted && !result.dryRun) {
        throw new UserError(`interrupted after requeuing ${result.requeued} of ${result.matched}; run the same command again for the rest (what was requeued is no longer ${flags.status}, so it is not taken twice)`);
      }
    });
}

/** A flag's value checked by the message rules: their error, as a usage error. */
function asUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof MessageError) throw new UsageError(err.message);
    throw err;
  }
}
