import { Command } from 'commander';
import type { ConfigOverrides } from '../../config.ts';
import { BOSS } from '../../settings.ts';
import { settingOption } from '../setting-option.ts';
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
    .addOption(settingOption(BOSS.sweepCron))
    .addOption(settingOption(BOSS.rescueCron))
    .addOption(settingOption(BOSS.eventRetentionMs))
    .addOption(settingOption(BOSS.retentionCron))
    .addOption(settingOption(BOSS.cronCheckSeconds))
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
