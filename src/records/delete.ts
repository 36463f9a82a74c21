/**
 * Deleting records: any status but DELETED → DELETED, a tombstone. The row keeps its version and
 * data, so the upsert refuses a late message at that version or older (stale, as for any record:
 * the same data is a harmless repeat, other data a conflict) and a newer one creates the record
 * again as COMPLETED. A record being processed loses its lease with it: the holder's heartbeat
 * and completion are refused (fenced by the token), and its handler is aborted. One `deleted`
 * event each, with the status it had.
 *
 * `deleteByKey` waits for the row's lock (one row: no lock order to keep); `deletePage`, the bulk
 * command's page, skips locked rows in key order, as requeue does (src/records/requeue.ts). After
 * a delete commits, clients waiting for one of the records' results (src/records/await.ts) are
 * told, as the settling functions tell them.
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import { afterKey } from './filter.ts';
import type { RecordKey } from './key.ts';
import type { PageRow } from './requeue.ts';

const TOMBSTONE = sql`status = 'DELETED', attempts = 0, lease_expirations = 0, run_after = now(), next_seq = NULL,
                      lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, enqueued_at = NULL, updated_at = now()`;

/** Deletes one record; its version, or undefined when there is no such record (or it is deleted already). */
export async function deleteByKey(db: Queryable, key: RecordKey): Promise<{ kind: string; id: string; version: string } | undefined> {
  const [row] = await query<{ kind: string; id: string; version: string }>(
    db,
    sql`WITH target AS (
          SELECT kind, id, status FROM rowfleet.records WHERE kind = ${key.kind} AND id = ${key.id} AND status <> 'DELETED' FOR UPDATE
        ),
        moved AS (
          UPDATE rowfleet.records r SET ${TOMBSTONE}
            FROM target t
           WHERE r.kind = t.kind AND r.id = t.id
          RETURNING r.kind, r.id, r.version, t.status AS was
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
          SELECT m.kind, m.id, m.version, false, 'deleted', jsonb_build_object('from', m.was) FROM moved m
        )
        SELECT kind, id, version FROM moved`,
    'rowfleet_delete_record',
  );
  if (row !== undefined) await announce(db);
  return row;
}

/** Deletes the next `limit` matching records after `after`; each picked record, whether it was deleted. */
export async function deletePage(db: Queryable, where: SQL, after: RecordKey, limit: number): Promise<PageRow[]> {
  const rows = await query<PageRow>(
    db,
    sql`WITH picked AS (
          SELECT kind, id, status FROM rowfleet.records
           WHERE ${where} AND ${afterKey(after)}
           ORDER BY kind, id
           LIMIT ${limit}
           FOR UPDATE SKIP LOCKED
        ),
        moved AS (
          UPDATE rowfleet.records r SET ${TOMBSTONE}
            FROM picked p
           WHERE r.kind = p.kind AND r.id = p.id AND r.status <> 'DELETED'
          RETURNING r.kind, r.id, r.version, p.status AS was
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
          SELECT m.kind, m.id, m.version, false, 'deleted', jsonb_build_object('from', m.was) FROM moved m
        )
        SELECT p.kind, p.id, EXISTS (SELECT 1 FROM moved m WHERE m.kind = p.kind AND m.id = p.id) AS changed
          FROM picked p
         ORDER BY p.kind, p.id`,
  );
  if (rows.some((r) => r.changed)) await announce(db);
  return rows;
}

/** A NOTIFY on rowfleet_settled if a client waits (drizzle/0008_await_results.sql). */
async function announce(db: Queryable): Promise<void> {
  await query(db, sql`SELECT rowfleet.notify_settled()`);
}
