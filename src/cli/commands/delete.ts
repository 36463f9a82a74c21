import { Command, Option } from 'commander';
import { UserError } from '../../errors.ts';
import { deleteRecords } from '../../ops/delete.ts';
import { RECORD_STATUSES, type RecordStatus } from '../../db/schema.ts';
import { asFlagErrors, bulkOptions, withBulkOptions, type BulkFlags } from '../bulk.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext } from '../context.ts';

interface DeleteFlags extends BulkFlags {
  status?: RecordStatus;
}

export function registerDelete(ctx: CommandContext): Command {
  const command = withDatabaseOptions(new Command('delete'))
    .description('delete records, leaving a tombstone at their version so that a late message cannot bring them back')
    .addOption(new Option('--status <status>', 'only records in this status (default: any)').choices(RECORD_STATUSES.filter((s) => s !== 'DELETED')));
  return withBulkOptions(command, 'delete', 'deleted')
    .addHelpText(
      'after',
      `
A deleted record keeps its version: a message at that version or older is refused (stale), a newer
one creates the record again. A record being processed loses its lease: its handler's completion
is refused. Each delete is a "deleted" event in event_log; the history stays. Deleting twice is a
no-op.

Examples:
  rowfleet delete --id order-17 --dry-run
  rowfleet delete --status FAILED --before 30d --all
  rowfleet delete --status PROCESSED --before 2026-11-01T00:00:00Z --all --rate 500
`,
    )
    .action(async (flags: DeleteFlags) => {
      const which = flags.status === undefined ? 'record' : `${flags.status} record`;
      const { options, finish } = bulkOptions(ctx, flags, `delete every ${which}`, 'deleted');
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'delete');
      const result = await ctx.withPool(config, log, (pool) => asFlagErrors(() => deleteRecords(pool, { ...options, status: flags.status })));
      finish();
      log.debug({ ...result, status: flags.status }, 'delete done');
      ctx.print(result, flags.json === true, (r) =>
        r.dryRun
          ? `dry run: ${r.matched} ${which}(s) would be deleted; nothing changed`
          : `deleted ${r.deleted} of ${r.matched} matching ${which}(s)${r.deleted < r.matched && !r.interrupted ? ' (the others changed meanwhile)' : ''}`,
      );
      if (result.interrupted && !result.dryRun) {
        throw new UserError(`interrupted after deleting ${result.deleted} of ${result.matched}; run the same command again for the rest (a deleted record is not taken twice)`);
      }
    });
}
