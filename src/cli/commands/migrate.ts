import { Command } from 'commander';
import pg from 'pg';
import type { CommandContext, DatabaseFlags } from '../context.ts';
import { overridesFrom, withDatabaseOptions } from '../context.ts';
import { resolveDatabaseUrl } from '../../db/connect.ts';
import { migrateAll } from '../../boss/migrate.ts';
import { checkRoleName, runtimeRoleSql } from '../../db/roles.ts';

export function registerMigrate(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('migrate'))
    .description('create or upgrade the rowfleet schema and pg-boss\'s (idempotent; safe to run from several processes at once)')
    .option('--runtime-role <name>', 'then create or update a login role with exactly what the API, workers and scheduler need (see rowfleet roles --print)')
    .option('--json', 'print {"applied": n, "total": n, "boss": {"schema": s, "version": n}, "runtimeRole"?: name}')
    .addHelpText('after', '\nExamples:\n  rowfleet migrate\n  DATABASE_URL=postgres://localhost/app rowfleet migrate --json\n  DATABASE_URL=postgres://admin@db/app rowfleet migrate --runtime-role rowfleet_app\n')
    .action(async (flags: DatabaseFlags & { json?: boolean; runtimeRole?: string }) => {
      const role = flags.runtimeRole === undefined ? undefined : checkRoleName(flags.runtimeRole, '--runtime-role');
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'migrate');
      const url = await resolveDatabaseUrl(config, log);
      const result = await migrateAll(url, config.boss, log);
      if (role !== undefined) await grantRuntimeRole(url, role, config.boss.schema);
      const printed = role === undefined ? result : { ...result, runtimeRole: role };
      ctx.print(printed, flags.json === true, (r) =>
        [
          r.applied === 0 ? `schema is up to date (${r.total} migrations)` : `applied ${r.applied} migration(s); schema is up to date (${r.total} migrations)`,
          `pg-boss schema "${r.boss.schema}" is at version ${r.boss.version}`,
          ...(role === undefined ? [] : [`runtime role "${role}" has what the API, workers and scheduler need (give it a password: ALTER ROLE ${role} PASSWORD '...')`]),
        ].join('\n'),
      );
    });
}

/** `rowfleet roles --print NAME`: the runtime role's SQL, for a DBA to read and run. */
export function registerRoles(ctx: CommandContext): Command {
  return new Command('roles')
    .description('print the SQL that creates or updates the runtime role (what rowfleet migrate --runtime-role runs)')
    .requiredOption('--print <name>', 'the role to print the SQL for')
    .addHelpText('after', '\nExample:\n  rowfleet roles --print rowfleet_app > runtime-role.sql\n')
    .action((flags: { print: string }) => {
      const role = checkRoleName(flags.print, '--print');
      const config = ctx.config({});
      ctx.io.stdout.write(`-- rowfleet's runtime role: run as the owner of the rowfleet schema, after rowfleet migrate.\n${runtimeRoleSql(role, config.boss.schema).map((s) => `${s};\n`).join('')}`);
    });
}

async function grantRuntimeRole(url: string, role: string, bossSchema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: 'rowfleet migrate' });
  await client.connect();
  try {
    await client.query('BEGIN');
    for (const statement of runtimeRoleSql(role, bossSchema)) await client.query(statement);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    await client.end();
  }
}
