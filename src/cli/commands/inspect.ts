import { Command } from 'commander';
import { UserError } from '../../errors.ts';
import { inspectRecord, renderInspection } from '../../ops/inspect.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

export function registerInspect(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('inspect'))
    .description('a record and its timeline: every message and its outcome, failed attempts, rescues, requeues, the completion')
    .argument('<id>', 'the record id')
    .option('--json', 'print {"record": {...}, "timeline": [...]}')
    .addHelpText('after', '\nExamples:\n  rowfleet inspect order-17\n  rowfleet inspect order-17 --json | jq .timeline\n')
    .action(async (id: string, flags: DatabaseFlags & { json?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'inspect');
      const inspection = await ctx.withPool(config, log, (pool) => inspectRecord(pool, id));
      if (inspection === undefined) throw new UserError(`no record with id ${JSON.stringify(id)}; check the id (rowfleet status shows what exists)`);
      ctx.print(inspection, flags.json === true, renderInspection);
    });
}
