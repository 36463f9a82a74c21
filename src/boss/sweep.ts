/**
 * The enqueue sweep: sends one pg-boss job `{id, version}` for each due COMPLETED record that has
 * none, so that boss-engine workers find it.
 *
 * Its cost follows new work, not the backlog. A record the sweep sent a job for is marked
 * (`enqueued_at`), and the claim clears the mark, so new work is exactly "COMPLETED, due, not
 * marked": the partial index records_unenqueued_idx holds those rows and nothing else. A million
 * waiting records with jobs cost the sweep nothing.
 *
 * A mark can outlive its job: jobs deleted behind pg-boss's back, a job fetched by a worker that
 * died before claiming. Each sweep therefore also checks one slice of the marked backlog against
 * pg-boss's pending jobs, resuming where the previous sweep stopped (rowfleet.sweep_state), and
 * clears the marks of records whose job is gone, which makes them new work in the same sweep. A
 * backlog no larger than the slice (`repairLimit`) is checked completely by every sweep.
 *
 * Two sweeps at once split the work (SKIP LOCKED), and pg-boss's `short` policy keeps at most one
 * pending job per record whatever happens (see processQueueOptions).
 */
import type pg from 'pg';
import { sql } from 'drizzle-orm';
import type { PgBoss, JobInsert } from 'pg-boss';
import { inTransaction, query, type Queryable } from '../db/sql.ts';
import { bossDb } from './boss.ts';

/** Jobs sent by one sweep after which pg-boss's job table is analyzed. */
const ANALYZE_AFTER = 10_000;

export interface SweepOptions {
  /** The process queue. */
  queue: string;
  /** pg-boss's schema (validated as an identifier by the config). */
  schema: string;
  /** Records marked and sent per transaction. */
  batch: number;
  /** Most jobs to send in this sweep; unlimited when undefined. */
  limit?: number;
  /** Also send jobs for records due within this many ms, deferred (startAfter) to when they are due. */
  lookaheadMs?: number;
  /** Marked records checked for a lost job per sweep. */
  repairLimit?: number;
  /** Called after each transaction with the total sent so far. */
  onProgress?: (enqueued: number) => void;
}

export interface SweepResult {
  /** Jobs created. */
  enqueued: number;
  /** Records found with a mark but no pending job (lost jobs), sent again. */
  repaired: number;
  /** Marked records checked for a lost job. */
  checked: number;
}

/** The job a record's pointer is sent as. */
export interface RecordJob {
  id: string;
  version: string;
}

export async function sweep(pool: pg.Pool, boss: PgBoss, options: SweepOptions): Promise<SweepResult> {
  const { checked, repaired } = await repairLostJobs(pool, options.queue, options.schema, options.repairLimit ?? 10_000);
  let enqueued = 0;
  for (;;) {
    const want = options.limit === undefined ? options.batch : Math.min(options.batch, options.limit - enqueued);
    if (want <= 0) break;
    const { sent, marked } = await sendBatch(pool, boss, options.queue, want, options.lookaheadMs ?? 0);
    enqueued += sent;
    if (marked > 0) options.onProgress?.(enqueued);
    if (marked < want) break;
  }
  // pg-boss's fetch on a job table whose statistics predate a bulk load sorts every queued job
  // (measured: 50-58 ms per fetch of 500, 8-9 ms after ANALYZE); autovacuum would get there later.
  if (enqueued >= ANALYZE_AFTER) await pool.query(`ANALYZE "${options.schema}".job`).catch(() => undefined);
  return { enqueued, repaired, checked };
}

/** Marks up to `limit` new records and sends their jobs, in one transaction. */
async function sendBatch(pool: pg.Pool, boss: PgBoss, queue: string, limit: number, lookaheadMs: number): Promise<{ sent: number; marked: number }> {
  return inTransaction(pool, async (tx) => {
    const rows = await query<{ id: string; version: string; start_after: Date | null }>(
      tx,
      sql`WITH fresh AS (
            SELECT id FROM rowfleet.records
             WHERE status = 'COMPLETED' AND enqueued_at IS NULL AND run_after <= now() + ${lookaheadMs} * interval '1 millisecond'
             ORDER BY run_after, id
             LIMIT ${limit}
             FOR UPDATE SKIP LOCKED
          )
          UPDATE rowfleet.records r SET enqueued_at = now()
           WHERE r.id = ANY (ARRAY(SELECT id FROM fresh))
          RETURNING r.id, r.version, CASE WHEN r.run_after > now() THEN r.run_after END AS start_after`,
    );
    if (rows.length === 0) return { sent: 0, marked: 0 };
    const jobs = inKeyOrder(rows.map((r) => recordJob(r.id, r.version, r.start_after ?? undefined)));
    const sent = (await boss.insert(queue, jobs, { db: bossDb(tx), returnId: true }))?.length ?? 0;
    return { sent, marked: rows.length };
  });
}

/** The job for a record: keyed by its ID, so pg-boss keeps one pending per record. */
export function recordJob(id: string, version: string, startAfter?: Date | string): JobInsert<RecordJob> {
  return { data: { id, version }, singletonKey: id, retryLimit: 0, ...(startAfter !== undefined && { startAfter }) };
}

/**
 * Jobs in the order every sender inserts them: by record ID. Two transactions inserting the same
 * keys in different orders deadlock on the unique index that keeps one pending job per record
 * (each waits for the other's uncommitted entry); found by the racing-senders test.
 */
export function inKeyOrder<T extends { singletonKey?: string }>(jobs: T[]): T[] {
  return jobs.sort((a, b) => (a.singletonKey! < b.singletonKey! ? -1 : a.singletonKey! > b.singletonKey! ? 1 : 0));
}

/**
 * Checks the next `limit` COMPLETED records (in due order, after the saved cursor) and clears the
 * mark of those whose job is no longer pending. One statement; the cursor wraps at the end.
 */
async function repairLostJobs(db: Queryable, queue: string, schema: string, limit: number): Promise<{ checked: number; repaired: number }> {
  const jobs = sql.raw(`"${schema}".job`);
  const rows = await query<{ checked: number; repaired: number }>(
    db,
    sql`WITH cursor AS (
          SELECT coalesce((SELECT cursor_run_after FROM rowfleet.sweep_state WHERE queue = ${queue}), '-infinity') AS run_after,
                 coalesce((SELECT cursor_id FROM rowfleet.sweep_state WHERE queue = ${queue}), '') AS id
        ),
        slice AS (
          SELECT r.id, r.run_after, r.enqueued_at FROM rowfleet.records r, cursor c
           WHERE r.status = 'COMPLETED' AND (r.run_after, r.id) > (c.run_after, c.id)
           ORDER BY r.run_after, r.id
           LIMIT ${limit}
        ),
        -- One index probe per record (LATERAL ... LIMIT 1). Written as NOT EXISTS, it was planned
        -- as a hash anti join over every pending job of the queue: O(backlog), 150 ms at 200,000.
        lost AS (
          SELECT s.id FROM slice s
            LEFT JOIN LATERAL (
              SELECT true AS found FROM ${jobs} j WHERE j.name = ${queue} AND j.singleton_key = s.id AND j.state < 'active' LIMIT 1
            ) pending ON true
           WHERE s.enqueued_at IS NOT NULL AND pending.found IS NULL
        ),
        cleared AS (
          UPDATE rowfleet.records r SET enqueued_at = NULL
           WHERE r.id = ANY (ARRAY(SELECT id FROM lost)) AND r.status = 'COMPLETED' AND r.enqueued_at IS NOT NULL
          RETURNING r.id
        ),
        last AS (
          SELECT run_after, id FROM slice ORDER BY run_after DESC, id DESC LIMIT 1
        ),
        saved AS (
          INSERT INTO rowfleet.sweep_state AS s (queue, cursor_run_after, cursor_id, updated_at)
          SELECT ${queue}, CASE WHEN (SELECT count(*) FROM slice) = ${limit} THEN (SELECT run_after FROM last) END,
                 CASE WHEN (SELECT count(*) FROM slice) = ${limit} THEN (SELECT id FROM last) END, now()
          ON CONFLICT (queue) DO UPDATE SET cursor_run_after = excluded.cursor_run_after, cursor_id = excluded.cursor_id, updated_at = excluded.updated_at
        )
        SELECT (SELECT count(*) FROM slice WHERE enqueued_at IS NOT NULL)::int AS checked, (SELECT count(*) FROM cleared)::int AS repaired`,
  );
  return rows[0] ?? { checked: 0, repaired: 0 };
}

/**
 * Jobs that found nothing to claim: a record still COMPLETED keeps no pending job of its own (this
 * one is spent, or the sweep's own send was dropped in favour of it), so its mark is cleared and
 * the next sweep sends it again. Records held or finished need nothing.
 */
export async function clearMarks(db: Queryable, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const rows = await query<{ id: string }>(
    db,
    sql`UPDATE rowfleet.records r SET enqueued_at = NULL
         WHERE r.id = ANY (${sql.param([...ids])}::text[]) AND r.status = 'COMPLETED' AND r.enqueued_at IS NOT NULL
        RETURNING r.id`,
  );
  return rows.length;
}
