/**
 * Counting records for `rowfleet status` and the dashboard. COMPLETED, PROCESSING, FAILED, DELETED and due
 * are read from their partial indexes; PROCESSED, usually most of the table, has no index: it is
 * counted exactly while the table is small (a scan of it), and estimated above that.
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
 * while the table is at most `exactUpToBytes` on disk, and estimated (in total only) above that.
 *
 * The size, not pg_class.reltuples, decides: it is current in every state, where reltuples is -1
 * on a table never analyzed (a million records written in bulk were once counted on every
 * dashboard poll, 0.4-0.6 s each), and a count's cost is a scan of those bytes. The estimate is
 * the planner's, which scales the last statistics to the table's current size, or sizes a table
 * never analyzed from its pages.
 */
export async function countRecords(db: Queryable, exactUpToBytes: number, kinds?: readonly string[]): Promise<RecordCounts> {
  const only = kinds === undefined ? sql`true` : sql`kind = ANY (${sql.param([...kinds])}::text[])`;
  const [head] = await query<{ bytes: number; at: Date }>(db, sql`SELECT pg_relation_size('rowfleet.records'::regclass)::float8 AS bytes, now() AS at`);
  const exact = head!.bytes <= exactUpToBytes;
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
  // Uncounted, a kind whose records are all PROCESSED would be missing: every kind is listed, one
  // descent of records_pkey each.
  if (!exact) for (const kind of await kindsPresent(db, kinds)) of(kind);
  for (const row of rows) of(row.kind)[row.what] = row.n;
  for (const row of due) Object.assign(of(row.kind), { due: row.due, oldest: row.oldest });
  const list = [...byKind.values()].sort((a, b) => (a.kind < b.kind ? -1 : 1));
  const sum = (column: 'completed' | 'processing' | 'failed' | 'deleted' | 'due') => list.reduce((n, k) => n + k[column], 0);
  const oldest = list.reduce<number | null>((o, k) => (k.oldest === null ? o : o === null ? k.oldest : Math.max(o, k.oldest)), null);
  const totals = { completed: sum('completed'), processing: sum('processing'), failed: sum('failed'), deleted: sum('deleted'), due: sum('due'), oldest, at: head!.at };
  if (exact) return { kinds: list, ...totals, processed: list.reduce((n, k) => n + k.processed!, 0), processedEstimated: false };
  // Above the exact limit the estimate covers every kind: with a filter it is not theirs to report.
  const estimate = kinds === undefined ? Math.max(0, (await plannedRows(db)) - totals.completed - totals.processing - totals.failed - totals.deleted) : 0;
  return { kinds: list, ...totals, processed: estimate, processedEstimated: true };
}

/** The kinds with records (among `kinds`), by a loose scan of records_pkey: one descent per kind. */
async function kindsPresent(db: Queryable, kinds: readonly string[] | undefined): Promise<string[]> {
  const rows = await query<{ kind: string }>(
    db,
    sql`WITH RECURSIVE k(kind) AS (
          SELECT (SELECT min(kind) FROM rowfleet.records)
          UNION ALL
          SELECT (SELECT min(r.kind) FROM rowfleet.records r WHERE r.kind > k.kind) FROM k WHERE k.kind IS NOT NULL
        )
        SELECT kind FROM k WHERE kind IS NOT NULL${kinds === undefined ? sql`` : sql` AND kind = ANY (${sql.param([...kinds])}::text[])`}`,
  );
  return rows.map((r) => r.kind);
}

/** The planner's estimate of the rows in rowfleet.records (EXPLAIN: planned, not run). */
async function plannedRows(db: Queryable): Promise<number> {
  const [row] = await query<{ 'QUERY PLAN': [{ Plan: { 'Plan Rows': number } }] }>(db, sql`EXPLAIN (FORMAT JSON) SELECT 1 FROM rowfleet.records`);
  return Math.round(row!['QUERY PLAN'][0].Plan['Plan Rows']);
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
