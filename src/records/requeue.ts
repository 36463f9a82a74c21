/**
 * Requeue's statements: FAILED (or PROCESSED) → COMPLETED, fresh attempts, one `requeued` event
 * each with what the record was. Pages go in id order with SKIP LOCKED (a record held by a
 * statement that is changing it is left for the next run), each guarded by the status, so running
 * twice is a no-op. The paging, rate and progress are src/ops/requeue.ts's.
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export const REQUEUE_STATUSES = ['FAILED', 'PROCESSED'] as const;
export type RequeueStatus = (typeof REQUEUE_STATUSES)[number];

export interface RequeueFilter {
  status: RequeueStatus;
  ids?: readonly string[] | undefined;
  /** A POSIX regular expression (Postgres `~`) the last error must match. */
  error?: string | undefined;
  /** Only records that reached their status at or after this time (updated_at). */
  since?: Date | undefined;
  /** Only records that reached their status before this time. */
  before?: Date | undefined;
  limit?: number | undefined;
}

export interface PreviewRow {
  id: string;
  status: string;
  version: string;
  lastError: string | null;
  updatedAt: Date;
}

/** The WHERE clause of a filter: the status, and each filter given. */
export function requeueFilter(f: RequeueFilter): SQL {
  const parts: SQL[] = [sql`status = ${f.status}`];
  if (f.ids !== undefined && f.ids.length > 0) parts.push(sql`id = ANY (${sql.param([...f.ids])}::text[])`);
  if (f.error !== undefined) parts.push(sql`last_error ~ ${f.error}`);
  if (f.since !== undefined) parts.push(sql`updated_at >= ${f.since.toISOString()}::timestamptz`);
  if (f.before !== undefined) parts.push(sql`updated_at < ${f.before.toISOString()}::timestamptz`);
  return sql.join(parts, sql` AND `);
}

/** Records the filter matches now. */
export async function countMatching(db: Queryable, where: SQL): Promise<number> {
  const [counted] = await query<{ n: number }>(db, sql`SELECT count(*)::int AS n FROM rowfleet.records WHERE ${where}`);
  return counted!.n;
}

/** Requeues the next `limit` matching records after id `after`; each picked id, whether it moved. */
export async function requeuePage(db: Queryable, where: SQL, status: RequeueStatus, after: string, limit: number): Promise<{ id: string; requeued: boolean }[]> {
  return query<{ id: string; requeued: boolean }>(
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
             SET status = 'COMPLETED', attempts = 0, lease_expirations = 0, run_after = now(), last_error = NULL,
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
        SELECT p.id, EXISTS (SELECT 1 FROM moved m WHERE m.id = p.id) AS requeued
          FROM picked p
         ORDER BY p.id`,
  );
}

/** The next `limit` matching records after id `after`, for a dry run's listing. */
export async function previewPage(db: Queryable, where: SQL, after: string, limit: number): Promise<PreviewRow[]> {
  const rows = await query<{ id: string; status: string; version: string; last_error: string | null; updated_at: Date }>(
    db,
    sql`SELECT id, status, version, last_error, updated_at FROM rowfleet.records
         WHERE ${where} AND id > ${after} ORDER BY id LIMIT ${limit}`,
  );
  return rows.map((r) => ({ id: r.id, status: r.status, version: r.version, lastError: r.last_error, updatedAt: r.updated_at }));
}
