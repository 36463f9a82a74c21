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
  /**
   * Row n gets run_after = base - (end - n) ms; by default base is the statement's now() and end
   * is from + count. Loads written in several statements share one base and end, so that their
   * rows stay in insertion order across statements.
   */
  base?: Date;
  end?: number;
}

/**
 * Due rows get distinct run_after values 1 ms apart, oldest first, so the claim's
 * `ORDER BY run_after, id` walks the index in insertion order as it would in production.
 */
export async function insertBacklog(db: pg.Pool | pg.PoolClient, { count, prefix, from = 1, status, base, end = from + count }: BacklogOptions): Promise<void> {
  await db.query(
    `INSERT INTO rowfleet.records (id, version, data, status, run_after, processed_version, processed_at)
     SELECT $1 || g, 1, jsonb_build_object('n', g, 'name', 'Customer ' || g, 'plan', 'team'), $2,
            coalesce($5::timestamptz, now()) - ($6::int - g) * interval '1 millisecond',
            CASE WHEN $2 = 'PROCESSED' THEN 1 END, CASE WHEN $2 = 'PROCESSED' THEN now() END
       FROM generate_series($3::int, $3::int + $4::int - 1) AS g`,
    [prefix, status, from, count, base ?? null, end],
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

/**
 * insertBacklog in chunks of `chunk` rows, one transaction each, with progress: five million rows
 * are a minute or two of INSERT ... SELECT on a small machine, and one transaction that long would
 * hold back every vacuum horizon while it runs.
 */
export async function insertBacklogChunked(
  db: pg.Pool,
  options: BacklogOptions,
  { chunk = 250_000, progress }: { chunk?: number; progress(line: string): void },
): Promise<void> {
  const from = options.from ?? 1;
  const end = from + options.count;
  const base = options.base ?? (await db.query<{ now: Date }>('SELECT now()')).rows[0]!.now;
  const started = performance.now();
  for (let at = from; at < end; at += chunk) {
    const count = Math.min(chunk, end - at);
    await insertBacklog(db, { ...options, from: at, count, base, end: options.end ?? end });
    if (options.count > chunk) {
      const done = at + count - from;
      const seconds = (performance.now() - started) / 1000;
      progress(`  ${done.toLocaleString('en-US')} / ${options.count.toLocaleString('en-US')} ${options.status} rows (${Math.round(done / seconds).toLocaleString('en-US')} rows/s)`);
    }
  }
}
