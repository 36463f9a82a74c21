import { Command } from 'commander';
import { UserError } from '../../errors.ts';
import { inspectRecord, renderInspection } from '../../ops/inspect.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { DEFAULT_KIND } from '../../kind.ts';
import { kindOption } from '../kinds.ts';

export function registerInspect(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('inspect'))
    .description('a record and its timeline: every message and its outcome, failed attempts, rescues, requeues, the completion')
    .argument('<id>', 'the record id')
    .addOption(kindOption())
    .option('--json', 'print {"record": {...}, "timeline": [...]}')
    .addHelpText('after', '\nExamples:\n  rowfleet inspect order-17\n  rowfleet inspect 17 --kind invoice\n  rowfleet inspect order-17 --json | jq .timeline\n')
    .action(async (id: string, flags: DatabaseFlags & { kind?: string; json?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'inspect');
      const kind = flags.kind ?? DEFAULT_KIND;
      const inspection = await ctx.withPool(config, log, (pool) => inspectRecord(pool, { kind, id }));
      if (inspection === undefined) {
        throw new UserError(`no record ${JSON.stringify(id)} of kind ${kind}; check the id and --kind (rowfleet status shows the kinds that exist)`);
      }
      ctx.print(inspection, flags.json === true, renderInspection);
    });
}
