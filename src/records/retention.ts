/**
 * The event_log retention (ROWFLEET_EVENT_RETENTION), run by the scheduler.
 */
import type pg from 'pg';
import { sql } from 'drizzle-orm';
import { query } from '../db/sql.ts';

/**
 * Deletes event_log rows received before `now - retentionMs`, oldest first, 10,000 per statement.
 * It walks the primary key from the oldest row and stops at the first newer one, so its cost is
 * what it deletes, not the table's size. A repeated messageId older than the retention is no
 * longer recognized, and `replay` can only rebuild from what is kept. A message still to be
 * handled (mode every: a record's `next_seq` or later) is never deleted, however old: the walk
 * stops there.
 */
export async function applyRetention(pool: pg.Pool, retentionMs: number): Promise<number> {
  let deleted = 0;
  for (;;) {
    const [row] = await query<{ deleted: number; newer: number }>(
      pool,
      sql`WITH head AS (
            SELECT seq, received_at FROM rowfleet.event_log ORDER BY seq LIMIT 10000
          ),
          -- The oldest message a record in mode every still waits on (records_next_seq_idx).
          pending AS (
            SELECT coalesce((SELECT r.next_seq FROM rowfleet.records r WHERE r.next_seq IS NOT NULL ORDER BY r.next_seq LIMIT 1), 9223372036854775807) AS seq
          ),
          gone AS (
            DELETE FROM rowfleet.event_log e
             WHERE e.seq IN (SELECT h.seq FROM head h, pending p WHERE h.received_at < now() - ${retentionMs} * interval '1 millisecond' AND h.seq < p.seq)
            RETURNING 1
          )
          SELECT (SELECT count(*) FROM gone)::int AS deleted,
                 (SELECT count(*) FROM head h, pending p WHERE h.received_at >= now() - ${retentionMs} * interval '1 millisecond' OR h.seq >= p.seq)::int AS newer`,
    );
    deleted += row!.deleted;
    if (row!.deleted === 0 || row!.newer > 0) return deleted;
  }
}
