import { Command, Option } from 'commander';
import { parseInteger } from '../../config.ts';
import { RECORD_STATUSES, type RecordStatus } from '../../db/schema.ts';
import { UsageError } from '../../errors.ts';
import { DEFAULT_LIST_LIMIT, listRecords, MAX_LIST_LIMIT, renderPage } from '../../ops/list.ts';
import { MessageError } from '../../records/message.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { kindFilterOption } from '../kinds.ts';

interface ListFlags extends DatabaseFlags {
  status?: RecordStatus;
  kind?: string[];
  error?: string;
  limit?: number;
  cursor?: string;
  recent?: boolean;
  json?: boolean;
}

export function registerRecords(ctx: CommandContext): Command {
  const list = withDatabaseOptions(new Command('list'))
    .description('a page of records in key order (kind, id), filtered; GET /records answers the same')
    .addOption(new Option('--status <status>', 'only records in this status (default: any but DELETED)').choices([...RECORD_STATUSES]))
    .addOption(kindFilterOption('only records of these kinds'))
    .option('--error <regex>', 'only records whose last error matches (a POSIX regular expression, as Postgres ~)')
    .option('--limit <n>', `records per page, 1 to ${MAX_LIST_LIMIT} (default ${DEFAULT_LIST_LIMIT})`, (v) => parseInteger(v, '--limit', 1, MAX_LIST_LIMIT))
    .option('--cursor <cursor>', 'the next page: the cursor the previous page ended with')
    .option('--recent', 'the most recently changed first, one page (needs --status; reads every record in it: meant for FAILED)')
    .option('--json', 'print {"records": [{"kind", "id", "version", "status", "attempts", "lastError", "updatedAt"}], "nextCursor"}')
    .addHelpText('after', "\nExamples:\n  rowfleet records list --status FAILED\n  rowfleet records list --status FAILED --kind order --error timeout --json\n  rowfleet records list --status FAILED --cursor WyJvcmRlciIsIjE3Il0\n  rowfleet records list --status FAILED --recent --limit 10\n")
    .action(async (flags: ListFlags) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'records');
      const page = await ctx.withPool(config, log, async (pool) => {
        try {
          return await listRecords(pool, { status: flags.status, kinds: flags.kind, error: flags.error, limit: flags.limit, cursor: flags.cursor, recent: flags.recent });
        } catch (err) {
          if (err instanceof MessageError) throw new UsageError(`--${err.field} ${err.message.replace(/^\S+ /, '')}`);
          throw err;
        }
      });
      ctx.print(page, flags.json === true, renderPage);
    });
  return new Command('records').description('list records').addCommand(list).addHelpText('after', '\nExample:\n  rowfleet records list --status FAILED\n');
}
