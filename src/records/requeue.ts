/**
 * Requeue's statements: FAILED (or PROCESSED) → COMPLETED, fresh attempts, one `requeued` event
 * each with what the record was. Pages go in key order (kind, id) with SKIP LOCKED (a record held by a
 * statement that is changing it is left for the next run), each guarded by the status, so running
 * twice is a no-op. The paging, rate and progress are src/ops/bulk.ts's.
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import { afterKey } from './filter.ts';
import type { RecordKey } from './key.ts';

/** A record a bulk page picked, and whether it changed (it may have changed meanwhile). */
export interface PageRow extends RecordKey {
  changed: boolean;
}

export const REQUEUE_STATUSES = ['FAILED', 'PROCESSED'] as const;
export type RequeueStatus = (typeof REQUEUE_STATUSES)[number];

/** Requeues the next `limit` matching records after `after`; each picked record, whether it moved. */
export async function requeuePage(
  db: Queryable,
  where: SQL,
  status: RequeueStatus,
  after: RecordKey,
  limit: number,
  set: { priority?: number | undefined; runAt?: string | undefined; via?: string | undefined } = {},
): Promise<PageRow[]> {
  return query<PageRow>(
    db,
    sql`WITH picked AS (
          SELECT kind, id, status, last_error FROM rowfleet.records
           WHERE ${where} AND ${afterKey(after)}
           ORDER BY kind, id
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
           WHERE r.kind = p.kind AND r.id = p.id AND r.status = ${status}
          RETURNING r.kind, r.id, r.version, p.status AS was, p.last_error
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
          SELECT m.kind, m.id, m.version, false, 'requeued', jsonb_build_object('from', m.was, 'lastError', m.last_error)
                 || CASE WHEN ${set.via ?? null}::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('via', ${set.via ?? null}::text) END
            FROM moved m
        ),
        counted AS (
          INSERT INTO rowfleet.stats AS s (minute, backend, requeued)
          SELECT date_trunc('minute', now()), pg_backend_pid(), count(*) FROM moved HAVING count(*) > 0
          ON CONFLICT (minute, backend) DO UPDATE SET requeued = s.requeued + excluded.requeued
        )
        SELECT p.kind, p.id, EXISTS (SELECT 1 FROM moved m WHERE m.kind = p.kind AND m.id = p.id) AS changed
          FROM picked p
         ORDER BY p.kind, p.id`,
  );
}
