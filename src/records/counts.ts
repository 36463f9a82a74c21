/**
 * Counting records for `rowfleet status` and the dashboard. COMPLETED, PROCESSING, FAILED, DELETED and due
 * are read from their partial indexes; PROCESSED, usually most of the table, is counted exactly up
 * to `exactUpTo` rows and estimated from the planner's statistics above that.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface RecordCounts {
  completed: number;
  processing: number;
  processed: number;
  /** `processed` comes from statistics, not from a count. */
  processedEstimated: boolean;
  failed: number;
  /** Tombstones (deleted records). */
  deleted: number;
  /** COMPLETED and due now. */
  due: number;
  /** Seconds the oldest due record has waited; null when nothing is due. */
  oldest: number | null;
  /** The database's now(), when counted. */
  at: Date;
}

export async function countRecords(db: Queryable, exactUpTo: number): Promise<RecordCounts> {
  const [row] = await query<{ completed: number; processing: number; failed: number; deleted: number; estimate: number; due: number; oldest: number | null; at: Date }>(
    db,
    sql`SELECT (SELECT count(*) FROM rowfleet.records WHERE status = 'COMPLETED')::int AS completed,
               (SELECT count(*) FROM rowfleet.records WHERE status = 'PROCESSING')::int AS processing,
               (SELECT count(*) FROM rowfleet.records WHERE status = 'FAILED')::int AS failed,
               (SELECT count(*) FROM rowfleet.records WHERE status = 'DELETED')::int AS deleted,
               (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'rowfleet.records'::regclass)::float8 AS estimate,
               d.due, extract(epoch FROM now() - d.oldest)::float8 AS oldest,
               now() AS at
          FROM rowfleet.due_summary(2147483647, NULL) d`,
  );
  const r = row!;
  if (r.estimate <= exactUpTo) {
    const [exact] = await query<{ n: number }>(db, sql`SELECT count(*)::int AS n FROM rowfleet.records WHERE status = 'PROCESSED'`);
    return { ...r, processed: exact!.n, processedEstimated: false };
  }
  return { ...r, processed: Math.max(0, Math.round(r.estimate) - r.completed - r.processing - r.failed - r.deleted), processedEstimated: true };
}

export interface WorkerHoldings {
  id: string;
  host: string;
  pid: number;
  engine: string;
  concurrency: number;
  /** Records it holds under a lease right now (from the records, not from its last heartbeat). */
  in_flight: number;
  started_at: Date;
  last_seen_at: Date;
  alive: boolean;
}

/** Every registered worker with what it holds; alive when heard from within `aliveWithinSeconds`. */
export async function workersWithHoldings(db: Queryable, aliveWithinSeconds: number): Promise<WorkerHoldings[]> {
  return query<WorkerHoldings>(
    db,
    sql`SELECT w.id, w.host, w.pid, w.engine, w.concurrency, coalesce(h.n, 0)::int AS in_flight, w.started_at, w.last_seen_at,
               w.last_seen_at > now() - ${aliveWithinSeconds} * interval '1 second' AS alive
          FROM rowfleet.workers w
          LEFT JOIN (SELECT lease_owner, count(*) AS n FROM rowfleet.records WHERE status = 'PROCESSING' GROUP BY lease_owner) h ON h.lease_owner = w.id
         ORDER BY w.host, w.pid, w.id`,
  );
}
