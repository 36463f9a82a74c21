/**
 * Applies the drizzle-kit migrations in `drizzle/` (schema `rowfleet`); src/boss/migrate.ts adds
 * pg-boss's schema and checks the whole database before a process starts. Idempotent, and safe when
 * several processes run it at once: a session advisory lock lets one migrate while the others
 * wait, then find nothing left to do.
 */
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { readMigrationFiles } from 'drizzle-orm/migrator';

/** Resolves from both src/db and dist/db to the package's drizzle/ folder. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../drizzle', import.meta.url));
const MIGRATIONS = { migrationsFolder: MIGRATIONS_FOLDER, migrationsSchema: 'rowfleet', migrationsTable: 'migrations' };

/** Arbitrary constant: the advisory lock key that serializes `rowfleet migrate` runs. */
const MIGRATE_LOCK_KEY = 7_240_915_001;

export interface MigrateResult {
  /** Migrations applied by this run. */
  applied: number;
  /** Migrations the package ships. */
  total: number;
}

export async function runMigrations(connectionString: string): Promise<MigrateResult> {
  const client = new pg.Client({ connectionString, application_name: 'rowfleet migrate' });
  await client.connect();
  try {
    // Migration DDL on an empty database prints NOTICEs (schema exists, ...); they are not news.
    await client.query(`SET client_min_messages = warning`);
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
    try {
      const before = await countApplied(client);
      await migrate(drizzle(client), MIGRATIONS);
      const after = await countApplied(client);
      return { applied: after - before, total: readMigrationFiles(MIGRATIONS).length };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]);
    }
  } finally {
    await client.end();
  }
}

/** Pending migrations: 0 means the schema is current (used by /readyz and `status`). */
export async function pendingMigrations(db: pg.Pool | pg.Client): Promise<number> {
  return readMigrationFiles(MIGRATIONS).length - (await countApplied(db));
}

async function countApplied(db: pg.Pool | pg.Client): Promise<number> {
  const exists = await db.query<{ table: string | null }>(`SELECT to_regclass('rowfleet.migrations')::text AS table`);
  if (exists.rows[0]?.table == null) return 0;
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM rowfleet.migrations');
  return Number(rows[0]?.n ?? 0);
}

/** How many migrations the package ships. */
export function shippedMigrations(): number {
  return readMigrationFiles(MIGRATIONS).length;
}
