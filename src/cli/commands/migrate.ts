import { Command } from 'commander';
import type { CommandContext, DatabaseFlags } from '../context.ts';
import { overridesFrom, withDatabaseOptions } from '../context.ts';
import { resolveDatabaseUrl } from '../../db/connect.ts';
import { migrateAll } from '../../boss/migrate.ts';

export function registerMigrate(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('migrate'))
    .description('create or upgrade the rowfleet schema and pg-boss\'s (idempotent; safe to run from several processes at once)')
    .option('--json', 'print {"applied": n, "total": n, "boss": {"schema": s, "version": n}}')
    .addHelpText('after', '\nExamples:\n  rowfleet migrate\n  DATABASE_URL=postgres://localhost/app rowfleet migrate --json\n')
    .action(async (flags: DatabaseFlags & { json?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'migrate');
      const url = await resolveDatabaseUrl(config, log);
      const result = await migrateAll(url, config.boss, log);
      ctx.print(result, flags.json === true, (r) =>
        [
          r.applied === 0 ? `schema is up to date (${r.total} migrations)` : `applied ${r.applied} migration(s); schema is up to date (${r.total} migrations)`,
          `pg-boss schema "${r.boss.schema}" is at version ${r.boss.version}`,
        ].join('\n'),
      );
    });
}
