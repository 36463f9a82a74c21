/**
 * The whole database, as `rowfleet migrate` leaves it: rowfleet's schema (src/db/migrate.ts), then
 * pg-boss's schema with rowfleet's queues. It lives beside pg-boss because it needs both, and db/
 * stays below every engine.
 */
import pg from 'pg';
import type { BossConfig } from '../config.ts';
import { SchemaNotReadyError, type SchemaState } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { pendingMigrations, runMigrations, shippedMigrations, type MigrateResult } from '../db/migrate.ts';
import { bossInstalled, installBoss } from './boss.ts';

/**
 * Before a long-running process starts: the embedded Postgres (a development database) is brought
 * up to date; a real one must be migrated by the release step (`rowfleet migrate`), never implicitly.
 */
export async function ensureSchema(connectionString: string, migrateIfBehind: boolean, boss?: BossConfig): Promise<void> {
  const client = new pg.Client({ connectionString, application_name: 'rowfleet' });
  await client.connect();
  let state: SchemaState | undefined;
  try {
    state = await schemaState(client, boss?.schema);
  } finally {
    await client.end();
  }
  if (state === undefined) return;
  if (!migrateIfBehind) throw new SchemaNotReadyError(state);
  if (state.kind !== 'no-boss') await runMigrations(connectionString);
  if (boss !== undefined) await withPool(connectionString, (pool) => installBoss({ config: boss, pool, log: silentLogger }));
}

/**
 * What `rowfleet migrate` would fix here, or undefined when nothing: no rowfleet schema, migrations
 * pending, or (when `bossSchema` is given) pg-boss not installed.
 */
export async function schemaState(db: pg.Pool | pg.Client, bossSchema?: string): Promise<SchemaState | undefined> {
  const pending = await pendingMigrations(db);
  if (pending > 0) return pending === shippedMigrations() ? { kind: 'missing' } : { kind: 'behind', pending };
  if (bossSchema !== undefined && !(await bossInstalled(db, bossSchema))) return { kind: 'no-boss', schema: bossSchema };
  return undefined;
}

/** `rowfleet migrate`: the rowfleet schema, then pg-boss's schema and rowfleet's queues. */
export async function migrateAll(connectionString: string, boss: BossConfig, log: Logger): Promise<MigrateResult & { boss: { schema: string; version: number | null } }> {
  const result = await runMigrations(connectionString);
  const installed = await withPool(connectionString, (pool) => installBoss({ config: boss, pool, log }));
  return { ...result, boss: installed };
}

async function withPool<T>(connectionString: string, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString, max: 2, application_name: 'rowfleet migrate' });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}
