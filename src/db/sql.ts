/**
 * Runs a drizzle `sql` template on a pg pool or client. Statements are written with drizzle's
 * template (values always bound, identifiers from the table objects) and executed by pg directly,
 * so that hot statements can be named: pg then parses and plans them once per connection.
 */
import type pg from 'pg';
import type { SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';

export type Queryable = pg.Pool | pg.PoolClient | pg.Client;

const dialect = new PgDialect();

export async function query<Row extends object>(db: Queryable, statement: SQL, name?: string): Promise<Row[]> {
  const { sql: text, params } = dialect.sqlToQuery(statement);
  const config: pg.QueryConfig = name === undefined ? { text, values: params } : { name, text, values: params };
  const result = await db.query<Row>(config);
  return result.rows;
}

/** The SQLSTATE of a pg error, if any. */
export function sqlState(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** Runs `fn` in a transaction: on a client of its own when given a pool, else on the client given. */
export async function inTransaction<T>(db: Queryable, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const pooled = 'totalCount' in db;
  const client = pooled ? await (db as pg.Pool).connect() : (db as pg.PoolClient);
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    if (pooled) client.release();
  }
}
