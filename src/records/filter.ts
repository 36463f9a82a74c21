/**
 * Which records an operator's bulk command (requeue, delete) applies to: one WHERE clause from its
 * filters, the count it matches, and a dry run's listing in key order (kind, id).
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import type { RecordStatus } from '../db/schema.ts';
import type { RecordKey } from './key.ts';

export interface RecordFilter {
  /** Any status but DELETED when not given. */
  status?: RecordStatus | undefined;
  /** Only records of these kinds (every kind when not given). */
  kinds?: readonly string[] | undefined;
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
  kind: string;
  id: string;
  status: string;
  version: string;
  lastError: string | null;
  updatedAt: Date;
}

/** The WHERE clause of a filter: the status (any but DELETED if not given), and each filter given. */
export function recordFilter(f: RecordFilter): SQL {
  const parts: SQL[] = [f.status === undefined ? sql`status <> 'DELETED'` : sql`status = ${f.status}`];
  if (f.kinds !== undefined && f.kinds.length > 0) parts.push(sql`kind = ANY (${sql.param([...f.kinds])}::text[])`);
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

/** `(kind, id) > after`: the rest of a paged walk in key order. */
export function afterKey(after: RecordKey): SQL {
  return sql`(kind, id) > (${after.kind}::text, ${after.id}::text)`;
}

/** The next `limit` matching records after `after`, for a dry run's listing. */
export async function previewPage(db: Queryable, where: SQL, after: RecordKey, limit: number): Promise<PreviewRow[]> {
  return (await listPage(db, where, after, limit)).map(({ attempts: _attempts, ...row }) => row);
}

/** A record as a listing shows it. */
export interface ListedRow extends PreviewRow {
  attempts: number;
}

/**
 * Up to `limit` records matching `where`, in key order (kind, id), after `after` when given.
 * FAILED and DELETED listings read their partial indexes (records_failed_idx, records_deleted_idx,
 * both on (kind, id)) in order; other statuses walk records_pkey.
 *
 * `recent`: the most recently changed first (updated_at), with no `after`. There is no index on
 * updated_at (it would make every upsert a non-HOT update), so this reads every record that
 * matches and keeps the top `limit`: meant for FAILED, whose partial index holds only those.
 */
export async function listPage(db: Queryable, where: SQL, after: RecordKey | undefined, limit: number, order: 'key' | 'recent' = 'key'): Promise<ListedRow[]> {
  const rows = await query<{ kind: string; id: string; status: string; version: string; attempts: number; last_error: string | null; updated_at: Date }>(
    db,
    sql`SELECT kind, id, status, version, attempts, last_error, updated_at FROM rowfleet.records
         WHERE ${where}${after === undefined ? sql`` : sql` AND ${afterKey(after)}`}
         ORDER BY ${order === 'recent' ? sql`updated_at DESC, kind, id` : sql`kind, id`} LIMIT ${limit}`,
  );
  return rows.map((r) => ({ kind: r.kind, id: r.id, status: r.status, version: r.version, attempts: r.attempts, lastError: r.last_error, updatedAt: r.updated_at }));
}
