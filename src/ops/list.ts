/**
 * `rowfleet records list` and `GET /records`: a page of records in a stable order (kind, id),
 * filtered by status, kinds and last error, with an opaque cursor for the next page.
 */
import type pg from 'pg';
import { RECORD_STATUSES, type RecordStatus } from '../db/schema.ts';
import { listPage, recordFilter, type ListedRow } from '../records/filter.ts';
import { MessageError, presentVersion } from '../records/message.ts';
import type { RecordKey } from '../records/key.ts';
import { DEFAULT_KIND, KIND_PATTERN } from '../kind.ts';

export const DEFAULT_LIST_LIMIT = 50;
export const MAX_LIST_LIMIT = 1000;

export interface ListOptions {
  /** Any status but DELETED when not given. */
  status?: RecordStatus | undefined;
  kinds?: readonly string[] | undefined;
  /** A POSIX regular expression (Postgres `~`) the last error must match. */
  error?: string | undefined;
  limit?: number | undefined;
  /** From a previous page's `nextCursor`. */
  cursor?: string | undefined;
  /** The most recently changed first, one page only (no cursor): the dashboard's latest failures. */
  recent?: boolean | undefined;
}

export interface ListedRecord {
  kind: string;
  id: string;
  version: number | string;
  status: string;
  attempts: number;
  lastError: string | null;
  updatedAt: string;
}

export interface RecordPage {
  records: ListedRecord[];
  /** Pass it as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

export async function listRecords(pool: pg.Pool, options: ListOptions): Promise<RecordPage> {
  const limit = options.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) throw new MessageError('limit', `must be an integer from 1 to ${MAX_LIST_LIMIT}, got ${limit}`);
  if (options.status !== undefined && !RECORD_STATUSES.includes(options.status)) throw new MessageError('status', `must be one of ${RECORD_STATUSES.join(', ')}, got ${JSON.stringify(options.status)}`);
  if (options.recent === true && options.cursor !== undefined) throw new MessageError('cursor', 'does not apply to the most recent records, which come as one page; leave out one of them');
  if (options.recent === true && options.status === undefined) throw new MessageError('status', 'is needed for the most recent records (it reads every record of that status), like status=FAILED');
  const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
  const where = recordFilter({ status: options.status, kinds: options.kinds, error: options.error });
  if (options.recent === true) {
    const rows = await listPage(pool, where, undefined, limit, 'recent');
    return { records: rows.map(listed), nextCursor: null };
  }
  // One more than asked: whether a next page exists, without a count.
  const rows = await listPage(pool, where, after, limit + 1);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    records: page.map(listed),
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last) : null,
  };
}

const listed = (r: ListedRow): ListedRecord => ({
  kind: r.kind, id: r.id, version: presentVersion(r.version), status: r.status, attempts: r.attempts, lastError: r.lastError, updatedAt: r.updatedAt.toISOString(),
});

const encodeCursor = (key: RecordKey) => Buffer.from(JSON.stringify([key.kind, key.id])).toString('base64url');

function decodeCursor(cursor: string): RecordKey {
  const bad = () => new MessageError('cursor', 'is not a cursor this listing gave (pass a page\'s nextCursor as it is)');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string' || !KIND_PATTERN.test(parsed[0])) throw bad();
  return { kind: parsed[0], id: parsed[1] };
}

/** One line per record, then how to get the next page. */
export function renderPage(page: RecordPage): string {
  if (page.records.length === 0) return 'no records match';
  const lines = page.records.map((r) => {
    const name = r.kind === DEFAULT_KIND ? r.id : `${r.kind}/${r.id}`;
    const error = r.lastError === null ? '' : `  ${r.lastError.split('\n')[0]!.slice(0, 120)}`;
    return `${name}  v${r.version}  ${r.status}  attempts ${r.attempts}  ${r.updatedAt}${error}`;
  });
  if (page.nextCursor !== null) lines.push(`more: --cursor ${page.nextCursor}`);
  return lines.join('\n');
}
