/**
 * Claims: COMPLETED → PROCESSING under a fresh lease, one more attempt, in one statement (the
 * functions rowfleet.claim_due and rowfleet.claim_ids, latest in drizzle/0010_priority_run_at.sql). SKIP LOCKED:
 * a claim never waits for a lock, so two workers never take one record and never deadlock.
 * The enqueued mark goes: whatever job pointed here has served.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface Claimed {
  id: string;
  version: string;
  data: unknown;
  /** Claims of this version so far, this one included. */
  attempts: number;
  leaseToken: string;
  /** -1000..1000: the latest applied message's (0 when it carried none). */
  priority: number;
}

interface ClaimRow {
  id: string;
  version: string;
  data: unknown;
  attempts: number;
  lease_token: string;
  priority: number;
}

const toClaimed = (row: ClaimRow): Claimed => ({ id: row.id, version: row.version, data: row.data, attempts: row.attempts, leaseToken: row.lease_token, priority: row.priority });

/**
 * Up to `limit` due records, highest priority first, then oldest due: per priority present one
 * descent of records_due_idx and a range of its due entries, however large the backlog.
 */
export async function claimDue(db: Queryable, options: { owner: string; limit: number; leaseMs: number; now?: Date }): Promise<Claimed[]> {
  const rows = await query<ClaimRow>(
    db,
    sql`SELECT * FROM rowfleet.claim_due(${options.owner}::text, ${options.limit}::int, ${options.leaseMs}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_claim_due',
  );
  return rows.map(toClaimed);
}

/**
 * The given records, if due and not held: the pg-boss engine's claim of the records its jobs
 * point to. Records held by another worker, not due, or gone are skipped.
 */
export async function claimIds(db: Queryable, options: { ids: readonly string[]; owner: string; leaseMs: number; now?: Date }): Promise<Claimed[]> {
  const rows = await query<ClaimRow>(
    db,
    sql`SELECT * FROM rowfleet.claim_ids(${sql.param([...options.ids])}::text[], ${options.owner}::text, ${options.leaseMs}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_claim_ids',
  );
  return rows.map(toClaimed);
}
