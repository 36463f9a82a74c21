/** A short-lived pg pool for a bench's own statements (setup, polling, the claims it times). */
import pg from 'pg';

export async function withPool<T>(url: string, max: number, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  // A statement stuck for 120 s means the bench is broken, not slow: fail rather than hang.
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'rowfleet bench', statement_timeout: 120_000 });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}
