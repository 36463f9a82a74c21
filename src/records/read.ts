/**
 * Reading a record and its history, for GET /records/:id, `rowfleet inspect` and tests.
 */
import { and, asc, eq } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { eventLog, records, type EventRow, type RecordRow } from '../db/schema.ts';
import { presentVersion } from './message.ts';
import { DEFAULT_KIND, type RecordKey } from './key.ts';

export interface RecordView {
  kind: string;
  id: string;
  version: number | string;
  status: RecordRow['status'];
  data: unknown;
  attempts: number;
  priority: number;
  runAfter: string;
  lease: { owner: string | null; expiresAt: string | null } | null;
  lastError: string | null;
  result: unknown;
  processedVersion: number | string | null;
  processedAt: string | null;
  createdAt: string;
  updatedAt: string;
  history?: EventView[];
}

export interface EventView {
  seq: number | string;
  messageId: string | null;
  version: number | string | null;
  versionAssigned: boolean;
  applied: boolean;
  reason: EventRow['reason'];
  currentVersion: number | string | null;
  /** The message's priority and runAt, as sent (null when it carried none). */
  priority: number | null;
  runAt: string | null;
  data: unknown;
  detail: unknown;
  receivedAt: string;
}

/** The record, or undefined when there is none or it was deleted (a tombstone, shown with `deleted`). */
/** `key` as an id alone names a record of kind `default`. */
export async function getRecord(pool: pg.Pool | pg.PoolClient, keyOrId: RecordKey | string, options: { history?: boolean; deleted?: boolean } = {}): Promise<RecordView | undefined> {
  const key = typeof keyOrId === 'string' ? { kind: DEFAULT_KIND, id: keyOrId } : keyOrId;
  const db = drizzle({ client: pool });
  const [row] = await db.select().from(records).where(and(eq(records.kind, key.kind), eq(records.id, key.id)));
  if (row === undefined || (row.status === 'DELETED' && options.deleted !== true)) return undefined;
  const view = toRecordView(row);
  if (options.history) {
    const events = await db.select().from(eventLog).where(and(eq(eventLog.kind, key.kind), eq(eventLog.recordId, key.id))).orderBy(asc(eventLog.seq));
    view.history = events.map(toEventView);
  }
  return view;
}

const optionalVersion = (v: string | null) => (v === null ? null : presentVersion(v));
const optionalTime = (t: Date | null) => (t === null ? null : t.toISOString());

function toRecordView(row: RecordRow): RecordView {
  return {
    kind: row.kind,
    id: row.id,
    version: presentVersion(row.version),
    status: row.status,
    data: row.data,
    attempts: row.attempts,
    priority: row.priority,
    runAfter: row.runAfter.toISOString(),
    lease: row.status === 'PROCESSING' ? { owner: row.leaseOwner, expiresAt: optionalTime(row.leaseExpiresAt) } : null,
    lastError: row.lastError,
    result: row.result,
    processedVersion: optionalVersion(row.processedVersion),
    processedAt: optionalTime(row.processedAt),
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

function toEventView(row: EventRow): EventView {
  return {
    seq: presentVersion(row.seq.toString()),
    messageId: row.messageId,
    version: optionalVersion(row.version),
    versionAssigned: row.versionAssigned,
    applied: row.applied,
    reason: row.reason,
    currentVersion: optionalVersion(row.currentVersion),
    priority: row.priority,
    runAt: optionalTime(row.runAt),
    data: row.data,
    detail: row.detail,
    receivedAt: row.receivedAt.toISOString(),
  };
}
