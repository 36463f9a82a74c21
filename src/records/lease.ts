/**
 * Keeping and giving back leases. Both are guarded by the token and an unexpired expiry: once a
 * lease expires only rescue may touch the row, so an old holder's late write can never race the
 * rescue or a new holder. Rows are locked in id order (see drizzle/0006_hot_path.sql).
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface Lease {
  id: string;
  leaseToken: string;
}

/** Heartbeat: extends the leases still held; returns the ids whose lease was lost (expired, rescued, reclaimed). */
export async function extendLeases(db: Queryable, options: { leases: readonly Lease[]; leaseMs: number; now?: Date }): Promise<string[]> {
  if (options.leases.length === 0) return [];
  const rows = await query<{ id: string }>(
    db,
    sql`SELECT id FROM rowfleet.extend_leases(${sql.param(options.leases.map((l) => l.id))}::text[], ${sql.param(options.leases.map((l) => l.leaseToken))}::uuid[],
                                              ${options.leaseMs}::int, ${options.now ?? null}::timestamptz) AS id`,
    'rowfleet_extend_leases',
  );
  const held = new Set(rows.map((r) => r.id));
  return options.leases.filter((l) => !held.has(l.id)).map((l) => l.id);
}

/** Gives records back (shutdown): COMPLETED, due now, the attempt not spent. Returns how many. */
export async function release(db: Queryable, leases: readonly Lease[], now?: Date): Promise<number> {
  if (leases.length === 0) return 0;
  const rows = await query<{ id: string }>(
    db,
    sql`SELECT id FROM rowfleet.release_records(${sql.param(leases.map((l) => l.id))}::text[], ${sql.param(leases.map((l) => l.leaseToken))}::uuid[],
                                                ${now ?? null}::timestamptz) AS id`,
    'rowfleet_release_records',
  );
  return rows.length;
}
