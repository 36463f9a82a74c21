/**
 * Keeping and giving back leases. Both are guarded by the token and an unexpired expiry: once a
 * lease expires only rescue may touch the row, so an old holder's late write can never race the
 * rescue or a new holder. Rows are locked in (kind, id) order (see drizzle/0006_hot_path.sql).
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import { keyColumns, keyOf, type RecordKey } from './key.ts';

export interface Lease extends RecordKey {
  leaseToken: string;
}

/** Heartbeat: extends the leases still held; returns those that were lost (expired, rescued, reclaimed). */
export async function extendLeases<L extends Lease>(db: Queryable, options: { leases: readonly L[]; leaseMs: number; now?: Date | undefined }): Promise<L[]> {
  if (options.leases.length === 0) return [];
  const { kinds, ids } = keyColumns(options.leases);
  const rows = await query<RecordKey>(
    db,
    sql`SELECT * FROM rowfleet.extend_leases(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[], ${sql.param(options.leases.map((l) => l.leaseToken))}::uuid[],
                                             ${options.leaseMs}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_extend_leases',
  );
  const held = new Set(rows.map(keyOf));
  return options.leases.filter((l) => !held.has(keyOf(l)));
}

/** Gives records back (shutdown): COMPLETED, due now, the attempt not spent. Returns how many. */
export async function release(db: Queryable, leases: readonly Lease[], now?: Date): Promise<number> {
  if (leases.length === 0) return 0;
  const { kinds, ids } = keyColumns(leases);
  const rows = await query<RecordKey>(
    db,
    sql`SELECT * FROM rowfleet.release_records(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[], ${sql.param(leases.map((l) => l.leaseToken))}::uuid[],
                                               ${now ?? null}::timestamptz)`,
    'rowfleet_release_records',
  );
  return rows.length;
}
