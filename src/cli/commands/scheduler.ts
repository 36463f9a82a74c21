import { Command, Option } from 'commander';
import { parseCron, parseCronCheck, parseRetention, type ConfigOverrides } from '../../config.ts';
import { ensureSchema } from '../../boss/migrate.ts';
import { runScheduler } from '../../scheduler/scheduler.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

interface SchedulerFlags extends DatabaseFlags {
  sweepCron?: string;
  rescueCron?: string;
  eventRetention?: number | null;
  retentionCron?: string;
  cronCheck?: number;
}

export function registerScheduler(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('scheduler'))
    .description('the clock process: run the enqueue sweep, the lease rescue and event_log retention on pg-boss cron schedules, once per tick across all schedulers')
    .addOption(new Option('--sweep-cron <cron>', 'when to send jobs for due records (default: $ROWFLEET_SWEEP_CRON or "* * * * *")').argParser((v) => parseCron(v, '--sweep-cron')))
    .addOption(new Option('--rescue-cron <cron>', 'when to rescue expired leases (default: $ROWFLEET_RESCUE_CRON or "* * * * *")').argParser((v) => parseCron(v, '--rescue-cron')))
    .addOption(
      new Option('--event-retention <duration>', 'delete event_log rows older than this, e.g. 30d, or "forever" (default: $ROWFLEET_EVENT_RETENTION or forever)').argParser(
        (v) => parseRetention(v, '--event-retention'),
      ),
    )
    .addOption(new Option('--retention-cron <cron>', 'when to apply the retention (default: $ROWFLEET_RETENTION_CRON or "17 * * * *")').argParser((v) => parseCron(v, '--retention-cron')))
    .addOption(new Option('--cron-check <duration>', 'how often to check for a due tick, 1s to 45s (default: $ROWFLEET_CRON_CHECK or 30s)').argParser((v) => parseCronCheck(v, '--cron-check')))
    .addHelpText(
      'after',
      `
pg-boss sends one job per cron tick however many schedulers run, and one scheduler takes it.
Cron resolution is one minute (pg-boss 12); a tick starts up to --cron-check after its minute.
The schedules live in the database: the last scheduler started sets them.

Examples:
  rowfleet scheduler
  rowfleet scheduler --sweep-cron "*/5 * * * *" --event-retention 30d
  Procfile:  clock: rowfleet scheduler
`,
    )
    .action(async (flags: SchedulerFlags) => {
      const boss: NonNullable<ConfigOverrides['boss']> = {};
      if (flags.sweepCron !== undefined) boss.sweepCron = flags.sweepCron;
      if (flags.rescueCron !== undefined) boss.rescueCron = flags.rescueCron;
      if (flags.retentionCron !== undefined) boss.retentionCron = flags.retentionCron;
      if (flags.eventRetention !== undefined) boss.eventRetentionMs = flags.eventRetention;
      if (flags.cronCheck !== undefined) boss.cronCheckSeconds = flags.cronCheck;
      const config = ctx.config({ ...overridesFrom(flags), boss });
      const log = ctx.logger(config, 'scheduler');
      await ctx.withPool(config, log, async (pool, url) => {
        await ensureSchema(url, config.databaseUrl === undefined, config.boss);
        await runScheduler({ config, pool, log, signal: ctx.io.shutdownSignal ?? new AbortController().signal });
      });
    });
}
