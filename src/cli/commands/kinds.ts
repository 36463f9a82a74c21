import { Command, Option } from 'commander';
import { durationParser, parseInteger } from '../../config.ts';
import { KIND_MODES, type KindMode } from '../../db/schema.ts';
import { UsageError } from '../../errors.ts';
import { KIND_PATTERN, KIND_RULE } from '../../kind.ts';
import { listKinds, resetKind, setKind, type KindChange, type KindRow } from '../../records/kinds.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { parseSchedule } from '../../scheduler/recurring.ts';

interface SetFlags extends DatabaseFlags {
  mode?: KindMode;
  maxAttempts?: number | typeof NONE;
  backoffBase?: number | typeof NONE;
  backoffCap?: number | typeof NONE;
  lease?: number | typeof NONE;
  timeout?: number | typeof NONE;
  every?: string;
  reset?: boolean;
  json?: boolean;
}

/**
 * A setting's value, or `none` to clear it (the handler map's or the worker's then applies). Kept
 * as the word: commander turns a parser's null into ''.
 */
const NONE = 'none';
const orNone = <T>(parse: (raw: string) => T) => (raw: string): T | typeof NONE => (raw.trim() === NONE ? NONE : parse(raw));
const cleared = <T>(v: T | typeof NONE | undefined): T | null | undefined => (v === NONE ? null : v);
const duration = (name: string, minMs: number) => orNone((raw) => durationParser(minMs)(raw, name));

export function registerKinds(ctx: CommandContext): Command {
  const set = withDatabaseOptions(new Command('set'))
    .description("set a kind's mode and policies, for every worker, API and scheduler at once")
    .argument('<kind>', 'the kind (a lower-case name like order or billing.invoice)')
    .addOption(new Option('--mode <mode>', 'latest: process a record at its newest version; every: each message, in order, per record').choices([...KIND_MODES]))
    .addOption(new Option('--max-attempts <n>', 'attempts before a record is FAILED (none: clear)').argParser(orNone((v) => parseInteger(v, '--max-attempts', 1, 1000))))
    .addOption(new Option('--backoff-base <duration>', 'first retry delay ceiling (none: clear)').argParser(duration('--backoff-base', 0)))
    .addOption(new Option('--backoff-cap <duration>', 'largest retry delay (none: clear)').argParser(duration('--backoff-cap', 0)))
    .addOption(new Option('--lease <duration>', 'lease per claim (none: clear)').argParser(duration('--lease', 100)))
    .addOption(new Option('--timeout <duration>', 'a handler running longer is aborted (none: clear)').argParser(duration('--timeout', 1)))
    .addOption(
      new Option('--every <cron>', 'a recurring kind: the scheduler upserts one record of it per tick of this cron expression, UTC (none: stop)').argParser(
        orNone((raw) => parseSchedule(raw, '--every')),
      ),
    )
    .option('--reset', "remove the kind's settings: mode latest, and the handler map's or the workers' policies")
    .option('--json', 'print the kind\'s settings as JSON')
    .addHelpText(
      'after',
      `
Settings stored here win over a handler map's and over the workers' flags; workers pick a change up
within 5 s, for the records they claim from then on. A setting not given is left as it is.

A recurring kind (--every) gets one record per tick, written by \`rowfleet scheduler\` (any number
of them: each tick is written once), its id the tick's time (2026-12-01T18:00:00.000Z) and its data
{"scheduledAt": <the same>}; a scheduler that was down writes the latest tick it missed, once.

Changing the mode while records wait: latest -> every processes what waits once, at its newest
version, and every message applied from then on in order; every -> latest stops the waiting
messages (they stay in event_log): each record is processed once more, at its newest version.

Examples:
  rowfleet kinds set ledger --mode every
  rowfleet kinds set invoice --max-attempts 3 --backoff-base 10s --lease 2m
  rowfleet kinds set invoice --max-attempts none
  rowfleet kinds set report --every '0 * * * *'
  rowfleet kinds set invoice --reset
`,
    )
    .action(async (kind: string, flags: SetFlags) => {
      if (!KIND_PATTERN.test(kind)) throw new UsageError(`<kind> "${kind}" is not a kind name (${KIND_RULE})`);
      const change: KindChange = {
        mode: flags.mode,
        maxAttempts: cleared(flags.maxAttempts),
        backoffBaseMs: cleared(flags.backoffBase),
        backoffCapMs: cleared(flags.backoffCap),
        leaseMs: cleared(flags.lease),
        timeoutMs: cleared(flags.timeout),
        schedule: cleared(flags.every),
      };
      const given = Object.values(change).some((v) => v !== undefined);
      if (flags.reset === true && given) throw new UsageError('--reset removes every setting; give it alone');
      if (flags.reset !== true && !given) throw new UsageError('nothing to set: give --mode, --max-attempts, --backoff-base, --backoff-cap, --lease, --timeout or --every (or --reset)');
      if (typeof change.backoffBaseMs === 'number' && typeof change.backoffCapMs === 'number' && change.backoffCapMs < change.backoffBaseMs) {
        throw new UsageError(`--backoff-cap (${change.backoffCapMs} ms) must not be below --backoff-base (${change.backoffBaseMs} ms)`);
      }
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'kinds');
      if (flags.reset === true) {
        const { removed, released } = await ctx.withPool(config, log, (pool) => resetKind(pool, kind));
        log.debug({ kind, removed, released }, 'kind reset');
        return ctx.print({ kind, reset: removed, released }, flags.json === true, () =>
          removed ? `${kind}: settings removed (mode latest)${stopped(released)}` : `${kind} had no settings; nothing changed`,
        );
      }
      const { settings, released } = await ctx.withPool(config, log, (pool) => setKind(pool, kind, change));
      log.debug({ kind, released }, 'kind set');
      ctx.print({ ...settings, released }, flags.json === true, (s) => `${describe(s)}${stopped(released)}`);
    });

  const list = withDatabaseOptions(new Command('list'))
    .description('every kind with records or settings: its mode and policies')
    .option('--json', 'print [{"kind", "mode", "configured", "maxAttempts"?, ...}]')
    .action(async (flags: DatabaseFlags & { json?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'kinds');
      const kinds = await ctx.withPool(config, log, (pool) => listKinds(pool));
      ctx.print(kinds, flags.json === true, (rows) => (rows.length === 0 ? 'no kinds yet: no records and no settings' : rows.map(describe).join('\n')));
    });

  return new Command('kinds')
    .description("kinds of records: each one's mode (latest or every) and policies, stored in the database")
    .addCommand(set)
    .addCommand(list)
    .addHelpText('after', '\nExamples:\n  rowfleet kinds list\n  rowfleet kinds set ledger --mode every\n');
}

function describe(k: KindRow): string {
  const ms = (v: number | undefined, name: string) => (v === undefined ? [] : [`${name} ${v}ms`]);
  const parts = [
    `mode ${k.mode}`,
    ...(k.maxAttempts === undefined ? [] : [`max-attempts ${k.maxAttempts}`]),
    ...ms(k.backoffBaseMs, 'backoff-base'),
    ...ms(k.backoffCapMs, 'backoff-cap'),
    ...ms(k.leaseMs, 'lease'),
    ...ms(k.timeoutMs, 'timeout'),
    ...(k.schedule === undefined ? [] : [`every '${k.schedule}'`]),
  ];
  return `${k.kind}\t${parts.join('  ')}${k.configured ? '' : '  (no settings)'}`;
}

const stopped = (n: number) => (n > 0 ? `; ${n} record(s) stopped waiting on a message and will be processed at their newest version` : '');
