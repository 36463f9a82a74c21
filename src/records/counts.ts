/**
 * Counting records for `rowfleet status` and the dashboard. COMPLETED, PROCESSING, FAILED, DELETED and due
 * are read from their partial indexes; PROCESSED, usually most of the table, is counted exactly up
 * to `exactUpTo` rows and estimated from the planner's statistics above that.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface RecordCounts {
  /** Every kind of record counted (all of them, or those asked for). */
  kinds: KindCounts[];
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

/** One kind's counts. PROCESSED is null when the table is too large to count it exactly. */
export interface KindCounts {
  kind: string;
  completed: number;
  processing: number;
  processed: number | null;
  failed: number;
  deleted: number;
  due: number;
  /** Seconds its oldest due record has waited; null when nothing is due. */
  oldest: number | null;
}

type StatusColumn = 'completed' | 'processing' | 'processed' | 'failed' | 'deleted';

/**
 * Counts per kind, and over all the kinds asked for (`kinds`; every kind when undefined). Each
 * status but PROCESSED is read through its partial index, per kind; PROCESSED is counted exactly
 * while the table holds at most `exactUpTo` rows, and estimated from statistics (in total only)
 * above that.
 */
export async function countRecords(db: Queryable, exactUpTo: number, kinds?: readonly string[]): Promise<RecordCounts> {
  const only = kinds === undefined ? sql`true` : sql`kind = ANY (${sql.param([...kinds])}::text[])`;
  const [head] = await query<{ estimate: number; at: Date }>(
    db,
    sql`SELECT (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'rowfleet.records'::regclass)::float8 AS estimate, now() AS at`,
  );
  const exact = head!.estimate <= exactUpTo;
  const per = (status: string, column: StatusColumn) =>
    sql`SELECT kind, ${column}::text AS what, count(*)::int AS n FROM rowfleet.records WHERE status = ${status} AND ${only} GROUP BY kind`;
  const rows = await query<{ kind: string; what: StatusColumn; n: number }>(
    db,
    sql`${per('COMPLETED', 'completed')} UNION ALL ${per('PROCESSING', 'processing')} UNION ALL ${per('FAILED', 'failed')}
        UNION ALL ${per('DELETED', 'deleted')}${exact ? sql` UNION ALL ${per('PROCESSED', 'processed')}` : sql``}`,
  );
  const due = await query<{ kind: string; due: number; oldest: number | null }>(
    db,
    sql`SELECT d.kind, d.due, extract(epoch FROM now() - d.oldest)::float8 AS oldest FROM rowfleet.due_summary(2147483647, NULL) d WHERE ${only}`,
  );
  const byKind = new Map<string, KindCounts>();
  const of = (kind: string) => {
    let counts = byKind.get(kind);
    if (counts === undefined) byKind.set(kind, (counts = { kind, completed: 0, processing: 0, processed: exact ? 0 : null, failed: 0, deleted: 0, due: 0, oldest: null }));
    return counts;
  };
  for (const row of rows) of(row.kind)[row.what] = row.n;
  for (const row of due) Object.assign(of(row.kind), { due: row.due, oldest: row.oldest });
  const list = [...byKind.values()].sort((a, b) => (a.kind < b.kind ? -1 : 1));
  const sum = (column: 'completed' | 'processing' | 'failed' | 'deleted' | 'due') => list.reduce((n, k) => n + k[column], 0);
  const oldest = list.reduce<number | null>((o, k) => (k.oldest === null ? o : o === null ? k.oldest : Math.max(o, k.oldest)), null);
  const totals = { completed: sum('completed'), processing: sum('processing'), failed: sum('failed'), deleted: sum('deleted'), due: sum('due'), oldest, at: head!.at };
  if (exact) return { kinds: list, ...totals, processed: list.reduce((n, k) => n + k.processed!, 0), processedEstimated: false };
  // Above the exact limit the estimate covers every kind: with a filter it is not theirs to report.
  const estimate = kinds === undefined ? Math.max(0, Math.round(head!.estimate) - totals.completed - totals.processing - totals.failed - totals.deleted) : 0;
  return { kinds: list, ...totals, processed: estimate, processedEstimated: true };
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
