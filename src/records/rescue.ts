/**
 * Rescue of expired leases (rowfleet.rescue_expired, whose body is rescue_expired_core, latest in
 * drizzle/0011_kinds.sql): the one way out of PROCESSING that does not hold the lease.
 * Run by every worker and by the scheduler; SKIP LOCKED, so any number of them split the work.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import type { RecordKey } from './key.ts';

export interface Rescued extends RecordKey {
  version: string;
  /** The worker whose lease expired. */
  owner: string | null;
  /** COMPLETED (will be retried) or FAILED (poison: expired more than maxExpirations times). */
  status: 'COMPLETED' | 'FAILED';
}

/**
 * Returns up to `limit` records whose lease expired (crash, kill -9, a pause past the lease) to
 * COMPLETED, or to FAILED once their lease has expired more than `maxExpirations` times without a
 * completion (poison: a record that kills its worker). One `rescued` or `failed` event each.
 */
export async function rescueExpired(db: Queryable, options: { maxExpirations: number; limit?: number; now?: Date }): Promise<Rescued[]> {
  return query<Rescued>(
    db,
    sql`SELECT * FROM rowfleet.rescue_expired(${options.maxExpirations}::int, ${options.limit ?? 1000}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_rescue_expired',
  );
}
