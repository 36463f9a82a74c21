/**
 * The operator's bulk commands (requeue, delete): the records a filter matches, changed page by
 * page in key order (kind, id), each page one guarded statement, so that running a command twice is a no-op
 * and an interruption keeps what is done. A dry run lists the matches and changes nothing. A rate
 * spreads a large change out; progress is reported after each page.
 */
import type pg from 'pg';
import type { SQL } from 'drizzle-orm';
import { sqlState } from '../db/sql.ts';
import { countMatching, previewPage, recordFilter, type PreviewRow, type RecordFilter } from '../records/filter.ts';
import { UsageError } from '../errors.ts';
import { MessageError } from '../records/message.ts';
import { FIRST_KEY, type RecordKey } from '../records/key.ts';
import type { PageRow } from '../records/requeue.ts';
import { durationProblem, parseDuration } from '../duration.ts';

export interface BulkOptions extends RecordFilter {
  dryRun: boolean;
  /** Records per second; unlimited when undefined. */
  rate?: number | undefined;
  /** Called after each page with the records changed so far and the number matched. */
  onProgress?: (done: number, matched: number) => void;
  /** Lists each record a dry run would change (in key order). */
  onPreview?: (records: PreviewRow[]) => void;
  /** Waits between pages when `rate` is set (tests inject one that does not sleep). */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** Stops between pages (Ctrl-C, SIGTERM, a reader that closed the output): what is done stays done. */
  signal?: AbortSignal;
}

export interface BulkResult {
  matched: number;
  /** Records changed (requeued, deleted); the others changed meanwhile. */
  changed: number;
  dryRun: boolean;
  /** Stopped by `signal` before every page was done. */
  interrupted: boolean;
}

/** One page: changes up to `limit` matching records after `after`; each picked record, whether it changed. */
export type Page = (where: SQL, after: RecordKey, limit: number) => Promise<PageRow[]>;

const PAGE = 1000;

export async function runBulk(pool: pg.Pool, options: BulkOptions, page: Page): Promise<BulkResult> {
  await checkRegex(pool, options.error);
  const where = recordFilter(options);
  const matched = Math.min(await countMatching(pool, where), options.limit ?? Number.POSITIVE_INFINITY);
  if (options.dryRun) {
    const complete = options.onPreview === undefined || (await preview(pool, where, matched, options.onPreview, options.signal));
    return { matched, changed: 0, dryRun: true, interrupted: !complete };
  }
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = options.now ?? Date.now;
  const size = options.rate === undefined ? PAGE : Math.max(1, Math.min(PAGE, Math.floor(options.rate)));
  const started = now();
  let after: RecordKey = FIRST_KEY;
  let done = 0;
  let seen = 0;
  while (seen < matched) {
    if (options.signal?.aborted) return { matched, changed: done, dryRun: false, interrupted: true };
    const rows = await page(where, after, Math.min(size, matched - seen));
    if (rows.length === 0) break;
    after = rows.at(-1)!;
    seen += rows.length;
    done += rows.filter((r) => r.changed).length;
    options.onProgress?.(done, matched);
    if (options.rate !== undefined && seen < matched) {
      const dueAt = started + (seen / options.rate) * 1000;
      const wait = dueAt - now();
      if (wait > 0) await sleep(wait);
    }
  }
  return { matched, changed: done, dryRun: false, interrupted: false };
}

/** Lists the matched records page by page; false if `signal` stopped it first. */
async function preview(pool: pg.Pool, where: SQL, matched: number, emit: (rows: PreviewRow[]) => void, signal: AbortSignal | undefined): Promise<boolean> {
  let after: RecordKey = FIRST_KEY;
  let seen = 0;
  while (seen < matched) {
    if (signal?.aborted) return false;
    const rows = await previewPage(pool, where, after, Math.min(PAGE, matched - seen));
    if (rows.length === 0) return true;
    emit(rows);
    after = rows.at(-1)!;
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
    // Named by its field (`error`): the CLI says --error, the API's 400 names the field.
    if (sqlState(err) === '2201B') throw new MessageError('error', `${JSON.stringify(pattern)} is not a valid regular expression: ${(err as Error).message}`);
    throw err;
  }
}

/** `2h` (that long ago), or a timestamp like 2026-11-01T12:00:00Z. */
export function parseMoment(raw: string, name: string, now = Date.now()): Date {
  const ms = parseDuration(raw);
  if (ms !== undefined) return new Date(now - ms);
  const t = Date.parse(raw);
  if (/^\d{4}-\d{2}-\d{2}/.test(raw.trim()) && Number.isFinite(t)) return new Date(t);
  if (/^\s*\d+(\.\d+)?\s*$/.test(raw)) throw new UsageError(`${name} ${durationProblem(raw)}, or a timestamp like 2026-11-01T12:00:00Z`);
  throw new UsageError(`${name} must be a duration like 2h or 30m, or a timestamp like 2026-11-01T12:00:00Z, got "${raw}"`);
}
