/**
 * What the bulk commands (`requeue`, `delete`) share: their filter flags, the check that a filter
 * was given, the progress bar and the dry run's listing.
 */
import { Command, Option } from 'commander';
import { parseInteger } from '../config.ts';
import { UsageError } from '../errors.ts';
import { MessageError } from '../records/message.ts';
import { parseMoment, type BulkOptions } from '../ops/bulk.ts';
import { progressBar } from './progress.ts';
import type { CommandContext, DatabaseFlags } from './context.ts';
import { kindFilterOption } from './kinds.ts';

export interface BulkFlags extends DatabaseFlags {
  kind?: string[];
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

/** The filter flags, worded for `verb` ("requeue", "delete"). */
export function withBulkOptions(command: Command, verb: string, resultKey: string): Command {
  return command
    .addOption(kindFilterOption('only records of these kinds'))
    .option('--id <id>', 'only this record (repeatable; of every kind unless --kind is given)', (value: string, previous: string[] = []) => [...previous, value])
    .option('--error <regex>', 'only records whose last error matches (a POSIX regular expression, as Postgres ~)')
    .option('--since <when>', 'only records that reached their status since then: a duration like 2h, or a timestamp')
    .option('--before <when>', 'only records that reached their status before then: a duration like 2h, or a timestamp')
    .addOption(new Option('--limit <n>', `${verb} at most n records (in kind, id order)`).argParser((v) => parseInteger(v, '--limit', 1, 1_000_000_000)))
    .option('--all', `${verb} every record in the status given (required when no other filter is given)`)
    .option('--dry-run', `list what would be ${verb}d and change nothing`)
    .addOption(new Option('--rate <n>', `records per second, to spread a large ${verb} out`).argParser((v) => parseInteger(v, '--rate', 1, 1_000_000)))
    .option('--json', `print {"matched": n, "${resultKey}": n, "dryRun": bool, "interrupted": bool}`);
}

/**
 * The filter and paging options from the flags (a usage error when no filter was given), and
 * `finish` to call when the command is done (it ends the progress bar).
 */
export function bulkOptions(ctx: CommandContext, flags: BulkFlags, noFilter: string, label: string): { options: Omit<BulkOptions, 'status'>; finish(): void } {
  const hasFilter = (flags.kind?.length ?? 0) > 0 || (flags.id?.length ?? 0) > 0 || flags.error !== undefined || flags.since !== undefined || flags.before !== undefined || flags.limit !== undefined;
  if (!hasFilter && flags.all !== true) throw new UsageError(`no filter given: pass --kind, --id, --error, --since, --before or --limit, or --all to ${noFilter}`);
  const json = flags.json === true;
  const bar = json ? undefined : progressBar(ctx.io, label);
  const options: Omit<BulkOptions, 'status'> = {
    kinds: flags.kind,
    ids: flags.id,
    error: flags.error,
    since: flags.since === undefined ? undefined : parseMoment(flags.since, '--since'),
    before: flags.before === undefined ? undefined : parseMoment(flags.before, '--before'),
    limit: flags.limit,
    dryRun: flags.dryRun === true,
    rate: flags.rate,
    ...(ctx.io.shutdownSignal && { signal: ctx.io.shutdownSignal }),
    ...(bar && { onProgress: (done: number, total: number) => bar.update(done, total) }),
    ...(!json && {
      onPreview: (rows) => {
        for (const r of rows) ctx.io.stdout.write(`${r.kind}\t${r.id}\t${r.status}\tv${r.version}\t${r.updatedAt.toISOString()}\t${r.lastError ?? ''}\n`);
      },
    }),
  };
  return { options, finish: () => bar?.end() };
}

/** A bulk run whose filter Postgres refused (a bad --error pattern): the usage error naming the flag. */
export async function asFlagErrors<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof MessageError) throw new UsageError(`--${err.message}`);
    throw err;
  }
}
