/**
 * The enqueue sweep: sends one pg-boss job `{kind, id, version}` for each due COMPLETED record that
 * has none, into its kind's queue (see KindQueues), so that boss-engine workers find it.
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
import type { PgBoss, JobInsert } from 'pg-boss';
import { inTransaction } from '../db/sql.ts';
import { markUnenqueued, repairLostJobs } from '../records/marks.ts';
import { wakeWorkers } from '../records/wake.ts';
import { bossDb, KindQueues } from './boss.ts';

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

/** The job a record's pointer is sent as (in its kind's queue). */
export interface RecordJob {
  kind: string;
  id: string;
  version: string;
}

export async function sweep(pool: pg.Pool, boss: PgBoss, options: SweepOptions, queues = new KindQueues(boss, pool, options.queue, options.schema)): Promise<SweepResult> {
  const { checked, repaired } = await repairLostJobs(pool, options.queue, options.schema, options.repairLimit ?? 10_000);
  let enqueued = 0;
  for (;;) {
    const want = options.limit === undefined ? options.batch : Math.min(options.batch, options.limit - enqueued);
    if (want <= 0) break;
    const { sent, marked } = await sendBatch(pool, boss, queues, want, options.lookaheadMs ?? 0);
    enqueued += sent;
    if (marked > 0) options.onProgress?.(enqueued);
    if (marked < want) break;
  }
  // pg-boss's fetch on a job table whose statistics predate a bulk load sorts every queued job
  // (measured: 50-58 ms per fetch of 500, 8-9 ms after ANALYZE); autovacuum would get there later.
  if (enqueued >= ANALYZE_AFTER) await pool.query(`ANALYZE "${options.schema}".job`).catch(() => undefined);
  // Boss-engine workers sleep on rowfleet_due like direct ones (see records/wake.ts).
  if (enqueued > 0) await wakeWorkers(pool);
  return { enqueued, repaired, checked };
}

/** Marks up to `limit` new records and sends their jobs, each kind's to its queue, in one transaction. */
async function sendBatch(pool: pg.Pool, boss: PgBoss, queues: KindQueues, limit: number, lookaheadMs: number): Promise<{ sent: number; marked: number }> {
  return inTransaction(pool, async (tx) => {
    const rows = await markUnenqueued(tx, limit, lookaheadMs);
    if (rows.length === 0) return { sent: 0, marked: 0 };
    const jobs = rows.map((r) => recordJob(r.kind, r.id, r.version, r.start_after ?? undefined, r.priority));
    const sent = await insertJobs(boss, queues, jobs, { db: bossDb(tx), returnId: true });
    return { sent, marked: rows.length };
  });
}

/** Sends jobs to their kinds' queues (kinds in name order, each kind's in key order); how many were created. */
export async function insertJobs(boss: PgBoss, queues: KindQueues, jobs: JobInsert<RecordJob>[], options: Parameters<PgBoss['insert']>[2] = {}): Promise<number> {
  const byKind = [...Map.groupBy(jobs, (j) => j.data!.kind)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  let sent = 0;
  for (const [kind, ofKind] of byKind) {
    const queue = await queues.ensure(kind);
    const ids = await boss.insert(queue, inKeyOrder(ofKind), options);
    sent += options.returnId === true ? (ids?.length ?? 0) : ofKind.length;
  }
  return sent;
}

/**
 * The job for a record: keyed by its ID in its kind's queue, so pg-boss keeps one pending per
 * record; with the record's priority (pg-boss fetches higher first) and, when it is due later, its
 * due time.
 */
export function recordJob(kind: string, id: string, version: string, startAfter?: Date | string, priority?: number): JobInsert<RecordJob> {
  return { data: { kind, id, version }, singletonKey: id, retryLimit: 0, ...(startAfter !== undefined && { startAfter }), ...(priority ? { priority } : {}) };
}

/**
 * Jobs in the order every sender inserts them: by record ID. Two transactions inserting the same
 * keys in different orders deadlock on the unique index that keeps one pending job per record
 * (each waits for the other's uncommitted entry); found by the racing-senders test.
 */
export function inKeyOrder<T extends { singletonKey?: string }>(jobs: T[]): T[] {
  return jobs.sort((a, b) => (a.singletonKey! < b.singletonKey! ? -1 : a.singletonKey! > b.singletonKey! ? 1 : 0));
}
