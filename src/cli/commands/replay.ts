import { Command, Option } from 'commander';
import { UserError, UsageError } from '../../errors.ts';
import { replay, type ReplayResult } from '../../ops/replay.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { kindFilterOption } from '../kinds.ts';

interface ReplayFlags extends DatabaseFlags {
  kind?: string[];
  id?: string[];
  fromSeq?: string;
  toSeq?: string;
  verify?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

const seq = (name: string) => (raw: string) => {
  if (!/^\d{1,18}$/.test(raw.trim())) throw new UsageError(`${name} must be an event_log seq (a positive whole number), got "${raw}"`);
  return raw.trim();
};

export function registerReplay(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('replay'))
    .description('rebuild records\' data and version from the applied messages in event_log (after restoring an older backup of records, say)')
    .addOption(kindFilterOption('only records of these kinds'))
    .option('--id <id>', 'only this record (repeatable; of every kind unless --kind is given)', (value: string, previous: string[] = []) => [...previous, value])
    .addOption(new Option('--from-seq <seq>', 'only records with an applied message at or after this event_log seq').argParser(seq('--from-seq')))
    .addOption(new Option('--to-seq <seq>', 'replay messages up to this seq only').argParser(seq('--to-seq')))
    .option('--verify', 'report every record that differs from the replay of its messages; change nothing (exit 1 if any differs)')
    .option('--dry-run', 'count what would change; change nothing')
    .option('--json', 'print the counts (and, with --verify, every difference) as JSON')
    .addHelpText(
      'after',
      `
A record differs when it is missing, behind its messages, or holds other data at the same version.
Rebuilt records go back to COMPLETED (processed again), each with a "replayed" event. A record
ahead of its messages (a newer version than the replay reaches) is reported, never rewritten: a
replay never lowers a version. Messages deleted by the event_log retention cannot be replayed.

Examples:
  rowfleet replay --verify
  rowfleet replay --dry-run --from-seq 1200000
  rowfleet replay --id order-17
`,
    )
    .action(async (flags: ReplayFlags) => {
      if (flags.verify === true && flags.dryRun === true) throw new UsageError('--verify and --dry-run both change nothing; pass one of them');
      if (flags.fromSeq !== undefined && flags.toSeq !== undefined && BigInt(flags.fromSeq) > BigInt(flags.toSeq)) {
        throw new UsageError(`--from-seq ${flags.fromSeq} is after --to-seq ${flags.toSeq}`);
      }
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'replay');
      const json = flags.json === true;
      const progress = json || ctx.io.isTTY !== true ? undefined : (n: number) => ctx.io.stderr.write(`\rchecked ${n.toLocaleString('en-US')} records`);
      const result = await ctx.withPool(config, log, (pool) =>
        replay(pool, { kinds: flags.kind, ids: flags.id, fromSeq: flags.fromSeq, toSeq: flags.toSeq, verify: flags.verify === true, dryRun: flags.dryRun === true, ...(progress && { onProgress: progress }) }),
      );
      if (progress) ctx.io.stderr.write('\n');
      // The result is printed on stdout; the log keeps it for machines, below the default level.
      log.debug({ ...result, differences: undefined }, 'replay done');
      ctx.print(result, json, (r) => {
        const problems = `${r.byProblem.missing} missing, ${r.byProblem.behind} behind, ${r.byProblem.data} with other data, ${r.byProblem.ahead} ahead`;
        if (r.verify) {
          const lines = (r.differences ?? []).map((d) => `${d.kind}/${d.id}\t${d.problem}\tversion ${d.version ?? '-'}\treplays to ${d.replayVersion} (seq ${d.seq})`);
          return [...lines, `checked ${r.checked} record(s): ${r.differ} differ (${problems})`].join('\n');
        }
        if (r.dryRun) return `dry run: checked ${r.checked} record(s); ${r.differ - r.byProblem.ahead} would be rebuilt (${problems}); nothing changed`;
        return `checked ${r.checked} record(s); rebuilt ${r.rebuilt} (${problems}${r.byProblem.ahead > 0 ? '; records ahead are left as they are' : ''})`;
      });
      if (result.verify && result.differ > 0) throw new UserError(verifyFailure(result, flags));
    });
}

/**
 * What to do about the differences --verify found. Replay rebuilds missing, behind and other-data
 * records; it never rewrites one ahead of its messages (that would lower a version), so for those
 * the advice is to look, not to run replay.
 */
function verifyFailure(r: ReplayResult, flags: ReplayFlags): string {
  const ahead = r.byProblem.ahead;
  const rebuildable = r.differ - ahead;
  const look = 'look at them with `rowfleet inspect <id> --kind <kind>`';
  const why =
    flags.toSeq === undefined
      ? 'their latest messages were likely deleted by the event_log retention, or records was written outside rowfleet'
      : `records with messages after --to-seq ${flags.toSeq} are ahead of it by design`;
  if (rebuildable === 0) {
    return `${ahead} record(s) hold a newer version than their messages replay to; replay never rewrites them (it never lowers a version), so running it changes nothing: ${why}; ${look}`;
  }
  const same = [
    ...(flags.kind === undefined ? [] : [` --kind ${flags.kind.join(',')}`]),
    ...(flags.id ?? []).map((id) => ` --id ${shellWord(id)}`),
    ...(flags.fromSeq === undefined ? [] : [` --from-seq ${flags.fromSeq}`]),
    ...(flags.toSeq === undefined ? [] : [` --to-seq ${flags.toSeq}`]),
  ].join('');
  const aheadNote = ahead === 0 ? '' : `; ${ahead} more are ahead of their messages, which replay never rewrites: ${look}`;
  return `${rebuildable} record(s) differ from their messages; run \`rowfleet replay${same}\` to rebuild them${aheadNote}`;
}

function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
