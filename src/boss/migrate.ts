/**
 * The whole database, as `rowfleet migrate` leaves it: rowfleet's schema (src/db/migrate.ts), then
 * pg-boss's schema with rowfleet's queues. It lives beside pg-boss because it needs both, and db/
 * stays below every engine.
 */
import pg from 'pg';
import type { BossConfig } from '../config.ts';
import { SchemaNotReadyError } from '../errors.ts';
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
  let pending: number;
  let bossMissing = false;
  try {
    pending = await pendingMigrations(client);
    if (boss !== undefined) bossMissing = !(await bossInstalled(client, boss.schema));
  } finally {
    await client.end();
  }
  if (pending === 0 && !bossMissing) return;
  if (!migrateIfBehind) {
    const total = shippedMigrations();
    throw new SchemaNotReadyError(pending === total ? { kind: 'missing' } : pending > 0 ? { kind: 'behind', pending } : { kind: 'no-boss', schema: boss!.schema });
  }
  if (pending > 0) await runMigrations(connectionString);
  if (boss !== undefined) await withPool(connectionString, (pool) => installBoss({ config: boss, pool, url: connectionString, log: silentLogger }));
}

/** `rowfleet migrate`: the rowfleet schema, then pg-boss's schema and rowfleet's queues. */
export async function migrateAll(connectionString: string, boss: BossConfig, log: Logger): Promise<MigrateResult & { boss: { schema: string; version: number | null } }> {
  const result = await runMigrations(connectionString);
  const installed = await withPool(connectionString, (pool) => installBoss({ config: boss, pool, url: connectionString, log }));
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
