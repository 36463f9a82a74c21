/**
 * Requeue's statements: FAILED (or PROCESSED) → COMPLETED, fresh attempts, one `requeued` event
 * each with what the record was. Pages go in id order with SKIP LOCKED (a record held by a
 * statement that is changing it is left for the next run), each guarded by the status, so running
 * twice is a no-op. The paging, rate and progress are src/ops/bulk.ts's.
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export const REQUEUE_STATUSES = ['FAILED', 'PROCESSED'] as const;
export type RequeueStatus = (typeof REQUEUE_STATUSES)[number];

/** Requeues the next `limit` matching records after id `after`; each picked id, whether it moved. */
export async function requeuePage(
  db: Queryable,
  where: SQL,
  status: RequeueStatus,
  after: string,
  limit: number,
  set: { priority?: number | undefined; runAt?: string | undefined } = {},
): Promise<{ id: string; changed: boolean }[]> {
  return query<{ id: string; changed: boolean }>(
    db,
    sql`WITH picked AS (
          SELECT id, status, last_error FROM rowfleet.records
           WHERE ${where} AND id > ${after}
           ORDER BY id
           LIMIT ${limit}
           FOR UPDATE SKIP LOCKED
        ),
        moved AS (
          UPDATE rowfleet.records r
             SET status = 'COMPLETED', attempts = 0, lease_expirations = 0, last_error = NULL,
                 run_after = greatest(coalesce(${set.runAt ?? null}::timestamptz, now()), now()),
                 priority = coalesce(${set.priority ?? null}::int, r.priority),
                 enqueued_at = NULL, updated_at = now()
            FROM picked p
           WHERE r.id = ANY (ARRAY(SELECT id FROM picked)) AND r.id = p.id AND r.status = ${status}
          RETURNING r.id, r.version, p.status AS was, p.last_error
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (record_id, version, applied, reason, detail)
          SELECT m.id, m.version, false, 'requeued', jsonb_build_object('from', m.was, 'lastError', m.last_error)
            FROM moved m
        )
        SELECT p.id, EXISTS (SELECT 1 FROM moved m WHERE m.id = p.id) AS changed
          FROM picked p
         ORDER BY p.id`,
  );
}
