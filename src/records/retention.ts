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
    // rowfleet.apply_retention (drizzle/0015_runtime_role.sql): the runtime role deletes from
    // event_log only through it.
    const [row] = await query<{ deleted: number; newer: number }>(pool, sql`SELECT deleted, newer FROM rowfleet.apply_retention(${retentionMs}::bigint)`);
    deleted += row!.deleted;
    if (row!.deleted === 0 || row!.newer > 0) return deleted;
  }
}
