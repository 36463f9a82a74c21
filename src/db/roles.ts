/**
 * The runtime role (issue 13, least privilege): a login role with what the API, the workers and
 * the scheduler need and nothing more. `rowfleet migrate --runtime-role NAME` creates (or updates)
 * it after migrating; `rowfleet roles --print NAME` prints the same SQL for a DBA to run.
 *
 * It reads and writes rowfleet's tables, except that event_log is append-only for it (no UPDATE,
 * DELETE or TRUNCATE: the retention deletes through rowfleet.apply_retention, which runs with its
 * owner's rights) and the migrations table is read-only; it works pg-boss's tables and functions
 * and runs rowfleet's; it owns nothing and has no CREATE on any schema, so it cannot change one.
 * No password is set here: `ALTER ROLE NAME PASSWORD '...'` (or a pg_hba rule) is the DBA's.
 */
import { UsageError } from '../errors.ts';

/** A role name as Postgres takes it unquoted: lower case letters, digits, underscores. */
const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export function checkRoleName(name: string, flag: string): string {
  if (!ROLE_NAME.test(name)) throw new UsageError(`${flag} must be a role name of lower-case letters, digits and underscores (at most 63, not starting with a digit), got ${JSON.stringify(name)}`);
  if (name.startsWith('pg_')) throw new UsageError(`${flag} ${JSON.stringify(name)} is reserved: names starting with pg_ are Postgres's`);
  return name;
}

/** The statements, in order; idempotent (run them again after an upgrade: new tables get their grants). */
export function runtimeRoleSql(role: string, bossSchema: string): string[] {
  const r = `"${role}"`;
  const boss = `"${bossSchema}"`;
  return [
    `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${r} LOGIN; END IF;
END $$`,
    `ALTER ROLE ${r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS`,
    `DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO ${r}', current_database()); END $$`,
    `GRANT USAGE ON SCHEMA rowfleet TO ${r}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA rowfleet TO ${r}`,
    // Append-only: what happened stays; the retention deletes through its function.
    `REVOKE UPDATE, DELETE, TRUNCATE ON rowfleet.event_log FROM ${r}`,
    `REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON rowfleet.migrations FROM ${r}`,
    `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA rowfleet TO ${r}`,
    `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA rowfleet TO ${r}`,
    `GRANT USAGE ON SCHEMA ${boss} TO ${r}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${boss} TO ${r}`,
    `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${boss} TO ${r}`,
    `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${boss} TO ${r}`,
  ];
}
