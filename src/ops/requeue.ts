/**
 * `rowfleet requeue`: moves FAILED (or PROCESSED) records back to COMPLETED so that they are
 * processed again, with fresh attempts. Each page is one guarded statement (the record must still
 * be in the status being requeued, and still match the filter), which also appends one `requeued`
 * event per record with what it was (status, last error): running it twice is a no-op, and the
 * error history stays in event_log.
 */
import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import { query, sqlState } from '../db/sql.ts';
import { UsageError } from '../errors.ts';
import { wakeWorkers } from '../records/wake.ts';
import { durationProblem, parseDuration } from '../duration.ts';

export const REQUEUE_STATUSES = ['FAILED', 'PROCESSED'] as const;
export type RequeueStatus = (typeof REQUEUE_STATUSES)[number];

export interface RequeueFilter {
  status: RequeueStatus;
  ids?: readonly string[] | undefined;
  /** A POSIX regular expression (Postgres `~`) the last error must match. */
  error?: string | undefined;
  /** Only records that reached their status at or after this time (updated_at). */
  since?: Date | undefined;
  /** Only records that reached their status before this time. */
  before?: Date | undefined;
  limit?: number | undefined;
}

export interface RequeueOptions extends RequeueFilter {
  dryRun: boolean;
  /** Records per second; unlimited when undefined. */
  rate?: number | undefined;
  /** Called after each page with the records requeued so far and the number matched. */
  onProgress?: (done: number, matched: number) => void;
  /** Lists each record a dry run would requeue (in id order). */
  onPreview?: (records: PreviewRow[]) => void;
  /** Waits between pages when `rate` is set (tests inject one that does not sleep). */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** Stops between pages (Ctrl-C, SIGTERM, a reader that closed the output): what is done stays done. */
  signal?: AbortSignal;
}

export interface PreviewRow {
  id: string;
  status: string;
  version: string;
  lastError: string | null;
  updatedAt: Date;
}

export interface RequeueResult {
  matched: number;
  requeued: number;
  dryRun: boolean;
  /** Stopped by `signal` before every page was done. */
  interrupted: boolean;
}

const PAGE = 1000;

export async function requeue(pool: pg.Pool, options: RequeueOptions): Promise<RequeueResult> {
  await checkRegex(pool, options.error);
  const where = filterSql(options);
  const [counted] = await query<{ n: number }>(pool, sql`SELECT count(*)::int AS n FROM rowfleet.records WHERE ${where}`);
  const matched = Math.min(counted!.n, options.limit ?? Number.POSITIVE_INFINITY);
  if (options.dryRun) {
    const complete = options.onPreview === undefined || (await preview(pool, where, matched, options.onPreview, options.signal));
    return { matched, requeued: 0, dryRun: true, interrupted: !complete };
  }
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = options.now ?? Date.now;
  const page = options.rate === undefined ? PAGE : Math.max(1, Math.min(PAGE, Math.floor(options.rate)));
  const started = now();
  let after = '';
  let done = 0;
  let seen = 0;
  while (seen < matched) {
    if (options.signal?.aborted) return { matched, requeued: done, dryRun: false, interrupted: true };
    const rows = await query<{ id: string; requeued: boolean }>(
      pool,
      sql`WITH picked AS (
            SELECT id, status, last_error FROM rowfleet.records
             WHERE ${where} AND id > ${after}
             ORDER BY id
             LIMIT ${Math.min(page, matched - seen)}
             FOR UPDATE SKIP LOCKED
          ),
          moved AS (
            UPDATE rowfleet.records r
               SET status = 'COMPLETED', attempts = 0, lease_expirations = 0, run_after = now(), last_error = NULL,
                   enqueued_at = NULL, updated_at = now()
              FROM picked p
             WHERE r.id = ANY (ARRAY(SELECT id FROM picked)) AND r.id = p.id AND r.status = ${options.status}
            RETURNING r.id, r.version, p.status AS was, p.last_error
          ),
          logged AS (
            INSERT INTO rowfleet.event_log (record_id, version, applied, reason, detail)
            SELECT m.id, m.version, false, 'requeued', jsonb_build_object('from', m.was, 'lastError', m.last_error)
              FROM moved m
          )
          SELECT p.id, EXISTS (SELECT 1 FROM moved m WHERE m.id = p.id) AS requeued
            FROM picked p
           ORDER BY p.id`,
    );
    if (rows.length === 0) break;
    if (rows.some((r) => r.requeued)) await wakeWorkers(pool);
    after = rows.at(-1)!.id;
    seen += rows.length;
    done += rows.filter((r) => r.requeued).length;
    options.onProgress?.(done, matched);
    if (options.rate !== undefined && seen < matched) {
      const dueAt = started + (seen / options.rate) * 1000;
      const wait = dueAt - now();
      if (wait > 0) await sleep(wait);
    }
  }
  return { matched, requeued: done, dryRun: false, interrupted: false };
}

function filterSql(f: RequeueFilter): SQL {
  const parts: SQL[] = [sql`status = ${f.status}`];
  if (f.ids !== undefined && f.ids.length > 0) parts.push(sql`id = ANY (${sql.param([...f.ids])}::text[])`);
  if (f.error !== undefined) parts.push(sql`last_error ~ ${f.error}`);
  if (f.since !== undefined) parts.push(sql`updated_at >= ${f.since.toISOString()}::timestamptz`);
  if (f.before !== undefined) parts.push(sql`updated_at < ${f.before.toISOString()}::timestamptz`);
  return sql.join(parts, sql` AND `);
}

/** Lists the matched records page by page; false if `signal` stopped it first. */
async function preview(pool: pg.Pool, where: SQL, matched: number, emit: (rows: PreviewRow[]) => void, signal: AbortSignal | undefined): Promise<boolean> {
  let after = '';
  let seen = 0;
  while (seen < matched) {
    if (signal?.aborted) return false;
    const rows = await query<{ id: string; status: string; version: string; last_error: string | null; updated_at: Date }>(
      pool,
      sql`SELECT id, status, version, last_error, updated_at FROM rowfleet.records
           WHERE ${where} AND id > ${after} ORDER BY id LIMIT ${Math.min(PAGE, matched - seen)}`,
    );
    if (rows.length === 0) return true;
    emit(rows.map((r) => ({ id: r.id, status: r.status, version: r.version, lastError: r.last_error, updatedAt: r.updated_at })));
    after = rows.at(-1)!.id;
    seen += rows.length;
  }
  return true;
}

/** Asks Postgres whether `pattern` is a valid regular expression, before anything is read. */
async function checkRegex(pool: pg.Pool, pattern: string | undefined): Promise<void> {
  if (pattern === undefined) return;
  try {
    await pool.query(`SELECT '' ~ $1`, [pattern]);
  } catch (err) {
    if (sqlState(err) === '2201B') throw new UsageError(`--error ${JSON.stringify(pattern)} is not a valid regular expression: ${(err as Error).message}`);
    throw err;
  }
}

/** `2h` (that long ago), or a timestamp like 2026-11-01T12:00:00Z. */
export function parseMoment(raw: string, name: string, now = Date.now()): Date {
  const ms = parseDuration(raw);
  if (ms !== undefined) return new Date(now - ms);
  const t = Date.parse(raw);
  if (/^\d{4}-\d{2}-\d{2}/.test(raw.trim()) && Number.isFinite(t)) return new Date(t);
  if (/^\s*\d+(\.\d+)?\s*$/.test(raw)) throw new UsageError(`${durationProblem(raw, name)}, or a timestamp like 2026-11-01T12:00:00Z`);
  throw new UsageError(`${name} must be a duration like 2h or 30m, or a timestamp like 2026-11-01T12:00:00Z, got "${raw}"`);
}
