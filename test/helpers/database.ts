/**
 * One database per test file, cloned from the migrated template (global-setup.ts):
 * files run in parallel without seeing each other's rows, and cloning costs milliseconds where
 * migrating would cost seconds.
 *
 *   let db: TestDatabase;
 *   beforeAll(async () => { db = await createTestDatabase(); });
 *   afterAll(async () => { await db?.drop(); });
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { inject } from 'vitest';

export interface TestDatabase {
  url: string;
  pool: pg.Pool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/** A migrated database of its own. */
export async function createTestDatabase(options: { poolSize?: number } = {}): Promise<TestDatabase> {
  return createDatabase(inject('templateDatabase'), options);
}

/** An empty database (no rowfleet schema), for testing migrations themselves. */
export async function createEmptyDatabase(options: { poolSize?: number } = {}): Promise<TestDatabase> {
  return createDatabase(undefined, options);
}

/** `url` pointing at another database on the same server. */
export function databaseUrl(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

async function createDatabase(template: string | undefined, { poolSize = 4 }: { poolSize?: number }): Promise<TestDatabase> {
  const adminUrl = inject('databaseUrl');
  const name = `rowfleet_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await withAdmin(adminUrl, (admin) => admin.query(`CREATE DATABASE ${name}${template === undefined ? '' : ` TEMPLATE ${template}`}`));

  const url = databaseUrl(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  return {
    url,
    pool,
    async drop() {
      await pool.end();
      await withAdmin(adminUrl, async (admin) => {
        // pool.end() resolves once its clients were told to close, not once they have: a FORCE
        // drop meanwhile kills them mid-close, and the FATAL reaches a client nobody listens to
        // any more (an uncaught error in a test that passed). Give them a moment to go.
        for (let tries = 0; tries < 100; tries++) {
          const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [name]);
          if (rows[0]!.n === 0) break;
          await delay(20);
        }
        // FORCE: a test that failed midway may have left a client connected.
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
    },
  };
}

/** One short-lived admin connection for CREATE / DROP DATABASE. */
export async function withAdmin<T>(adminUrl: string, fn: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}
