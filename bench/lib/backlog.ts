/**
 * Backlogs written straight into rowfleet.records with one INSERT ... SELECT FROM generate_series:
 * a million rows in seconds, where upsertMessages (versions, locks, audit) would take minutes and
 * measure the upsert rather than the worker. The `data` is the same small object the pg-boss
 * baseline's jobs carry, so both engines move the same payload.
 */
import type pg from 'pg';

export interface BacklogOptions {
  /** Rows to write: ids `${prefix}${from}` .. `${prefix}${from + count - 1}`. */
  count: number;
  prefix: string;
  from?: number;
  /** COMPLETED rows wait to be processed; PROCESSED rows are history the claim must not pay for. */
  status: 'COMPLETED' | 'PROCESSED';
}

/**
 * Due rows get distinct run_after values 1 ms apart, oldest first, so the claim's
 * `ORDER BY run_after, id` walks the index in insertion order as it would in production.
 */
export async function insertBacklog(db: pg.Pool | pg.PoolClient, { count, prefix, from = 1, status }: BacklogOptions): Promise<void> {
  await db.query(
    `INSERT INTO rowfleet.records (id, version, data, status, run_after, processed_version, processed_at)
     SELECT $1 || g, 1, jsonb_build_object('n', g, 'name', 'Customer ' || g, 'plan', 'team'), $2,
            now() - ($3::int + $4::int - g) * interval '1 millisecond',
            CASE WHEN $2 = 'PROCESSED' THEN 1 END, CASE WHEN $2 = 'PROCESSED' THEN now() END
       FROM generate_series($3::int, $3::int + $4::int - 1) AS g`,
    [prefix, status, from, count],
  );
}

/** The job data for the pg-boss baseline: the same object as a record's. */
export function jobData(n: number): { n: number; name: string; plan: string } {
  return { n, name: `Customer ${n}`, plan: 'team' };
}

/**
 * Whether any record is not yet PROCESSED, asked through the partial indexes (due, leased, failed)
 * and stopping at the first hit: polled during a drain, it must cost Postgres little (counting the
 * remaining rows took 15-20 ms a poll at 100,000, a fifth of a core at 10 polls a second).
 */
export async function anyUnprocessed(db: pg.Pool): Promise<boolean> {
  const { rows } = await db.query<{ any: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM rowfleet.records WHERE status = 'COMPLETED')
         OR EXISTS (SELECT 1 FROM rowfleet.records WHERE status = 'PROCESSING')
         OR EXISTS (SELECT 1 FROM rowfleet.records WHERE status = 'FAILED') AS any`,
  );
  return rows[0]!.any;
}
