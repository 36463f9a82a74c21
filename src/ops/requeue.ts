/**
 * `rowfleet requeue`: moves FAILED (or PROCESSED) records back to COMPLETED so that they are
 * processed again, with fresh attempts. Each page is one guarded statement (the record must still
 * be in the status being requeued, and still match the filter), which also appends one `requeued`
 * event per record with what it was (status, last error): running it twice is a no-op, and the
 * error history stays in event_log.
 */
import type pg from 'pg';
import type { SQL } from 'drizzle-orm';
import { sqlState } from '../db/sql.ts';
import { countMatching, previewPage, requeueFilter, requeuePage, type PreviewRow, type RequeueFilter } from '../records/requeue.ts';
import { UsageError } from '../errors.ts';
import { wakeWorkers } from '../records/wake.ts';
import { durationProblem, parseDuration } from '../duration.ts';



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
  const where = requeueFilter(options);
  const matched = Math.min(await countMatching(pool, where), options.limit ?? Number.POSITIVE_INFINITY);
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
    const rows = await requeuePage(pool, where, options.status, after, Math.min(page, matched - seen));
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


/** Lists the matched records page by page; false if `signal` stopped it first. */
async function preview(pool: pg.Pool, where: SQL, matched: number, emit: (rows: PreviewRow[]) => void, signal: AbortSignal | undefined): Promise<boolean> {
  let after = '';
  let seen = 0;
  while (seen < matched) {
    if (signal?.aborted) return false;
    const rows = await previewPage(pool, where, after, Math.min(PAGE, matched - seen));
    if (rows.length === 0) return true;
    emit(rows);
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
