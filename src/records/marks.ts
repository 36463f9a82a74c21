/**
 * The enqueue marks (`enqueued_at`): which COMPLETED records the sweep has sent a pg-boss job for.
 * A hint, never the truth: the claim clears it, and so does every return to COMPLETED. See
 * src/boss/sweep.ts for how the sweep uses them.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import { DEFAULT_KIND, keyColumns, type RecordKey } from './key.ts';

/**
 * The pg-boss queue of a kind's jobs: `queue` itself for kind `default` (the one queue of the
 * versions before kinds), `queue.kind` for the others. Queues are per kind so that a worker
 * fetches only jobs of the kinds it has handlers for. The SQL below spells the same rule.
 */
export function queueOfKind(queue: string, kind: string): string {
  return kind === DEFAULT_KIND ? queue : `${queue}.${kind}`;
}

/**
 * Marks up to `limit` due COMPLETED records that have no job (records_unenqueued_idx, in due
 * order), and those due within `lookaheadMs` with the time they fall due.
 */
export async function markUnenqueued(
  db: Queryable,
  limit: number,
  lookaheadMs: number,
  now?: Date,
): Promise<{ kind: string; id: string; version: string; start_after: Date | null; priority: number }[]> {
  return query(
    db,
    sql`SELECT * FROM rowfleet.mark_unenqueued(${limit}::int, ${Math.round(lookaheadMs)}::int, ${now ?? null}::timestamptz)`,
    'rowfleet_mark_unenqueued',
  );
}

/**
 * Checks the next `limit` marked COMPLETED records (records_marked_idx, in due order, after the
 * saved cursor) and clears the mark of those whose job is no longer pending. One statement; the
 * cursor wraps at the end.
 */
export async function repairLostJobs(db: Queryable, queue: string, schema: string, limit: number): Promise<{ checked: number; repaired: number }> {
  const jobs = sql.raw(`"${schema}".job`);
  const rows = await query<{ checked: number; repaired: number }>(
    db,
    sql`WITH cursor AS (
          SELECT coalesce((SELECT cursor_run_after FROM rowfleet.sweep_state WHERE queue = ${queue}), '-infinity') AS run_after,
                 coalesce((SELECT cursor_kind FROM rowfleet.sweep_state WHERE queue = ${queue}), '') AS kind,
                 coalesce((SELECT cursor_id FROM rowfleet.sweep_state WHERE queue = ${queue}), '') AS id
        ),
        slice AS (
          SELECT r.kind, r.id, r.run_after, r.enqueued_at FROM rowfleet.records r, cursor c
           WHERE r.status = 'COMPLETED' AND r.enqueued_at IS NOT NULL AND (r.run_after, r.kind, r.id) > (c.run_after, c.kind, c.id)
           ORDER BY r.run_after, r.kind, r.id
           LIMIT ${limit}
        ),
        -- One index probe per record (LATERAL ... LIMIT 1). Written as NOT EXISTS, it was planned
        -- as a hash anti join over every pending job of the queue: O(backlog), 150 ms at 200,000.
        lost AS (
          SELECT s.kind, s.id FROM slice s
            LEFT JOIN LATERAL (
              SELECT true AS found FROM ${jobs} j
               WHERE j.name = CASE WHEN s.kind = ${DEFAULT_KIND} THEN ${queue} ELSE ${queue} || '.' || s.kind END
                 AND j.singleton_key = s.id AND j.state < 'active' LIMIT 1
            ) pending ON true
           WHERE s.enqueued_at IS NOT NULL AND pending.found IS NULL
        ),
        cleared AS (
          SELECT rowfleet.clear_marks(ARRAY(SELECT kind FROM lost), ARRAY(SELECT id FROM lost)) AS n
        ),
        last AS (
          SELECT run_after, kind, id FROM slice ORDER BY run_after DESC, kind DESC, id DESC LIMIT 1
        ),
        saved AS (
          INSERT INTO rowfleet.sweep_state AS s (queue, cursor_run_after, cursor_kind, cursor_id, updated_at)
          SELECT ${queue}, CASE WHEN (SELECT count(*) FROM slice) = ${limit} THEN (SELECT run_after FROM last) END,
                 CASE WHEN (SELECT count(*) FROM slice) = ${limit} THEN (SELECT kind FROM last) END,
                 CASE WHEN (SELECT count(*) FROM slice) = ${limit} THEN (SELECT id FROM last) END, now()
          ON CONFLICT (queue) DO UPDATE SET cursor_run_after = excluded.cursor_run_after, cursor_kind = excluded.cursor_kind,
                                            cursor_id = excluded.cursor_id, updated_at = excluded.updated_at
        )
        SELECT (SELECT count(*) FROM slice WHERE enqueued_at IS NOT NULL)::int AS checked, (SELECT n FROM cleared) AS repaired`,
  );
  return rows[0] ?? { checked: 0, repaired: 0 };
}

/**
 * Jobs that found nothing to claim: a record still COMPLETED keeps no pending job of its own (this
 * one is spent, or the sweep's own send was dropped in favour of it), so its mark is cleared and
 * the next sweep sends it again. Records held or finished need nothing.
 */
export async function clearMarks(db: Queryable, keys: readonly RecordKey[]): Promise<number> {
  if (keys.length === 0) return 0;
  const { kinds, ids } = keyColumns(keys);
  const rows = await query<{ n: number }>(db, sql`SELECT rowfleet.clear_marks(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[]) AS n`, 'rowfleet_clear_marks');
  return rows[0]?.n ?? 0;
}
