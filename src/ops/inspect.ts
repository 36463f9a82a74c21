/**
 * `rowfleet inspect <id>`: a record and its timeline. Every message (with its outcome) and every
 * lifecycle event (retried, failed, rescued, requeued, replayed, deleted) comes from event_log; the last
 * completion and a lease held right now come from the record itself.
 */
import type pg from 'pg';
import { getRecord, type EventView, type RecordView } from '../records/read.ts';
import type { RecordKey } from '../records/key.ts';

export interface TimelineEntry {
  at: string;
  /** An event_log reason, or `completed` / `processing` from the record. */
  what: string;
  version: number | string | null;
  /** event_log's seq, for events. */
  seq?: number | string;
  summary: string;
}

export interface Inspection {
  record: Omit<RecordView, 'history'>;
  timeline: TimelineEntry[];
}

export async function inspectRecord(pool: pg.Pool, key: RecordKey): Promise<Inspection | undefined> {
  const view = await getRecord(pool, key, { history: true, deleted: true });
  if (view === undefined) return undefined;
  const { history = [], ...record } = view;
  const timeline: TimelineEntry[] = history.map(eventEntry);
  if (record.processedAt !== null) {
    timeline.push({ at: record.processedAt, what: 'completed', version: record.processedVersion, summary: `PROCESSED, result ${short(record.result)}` });
  }
  if (record.lease !== null) {
    timeline.push({ at: record.updatedAt, what: 'processing', version: record.version, summary: `held by ${record.lease.owner} until ${record.lease.expiresAt}` });
  }
  // Events in seq order; the record's own entries where their time falls.
  timeline.sort((a, b) => (a.at === b.at ? 0 : a.at < b.at ? -1 : 1));
  return { record, timeline };
}

function eventEntry(e: EventView): TimelineEntry {
  const detail = (e.detail ?? {}) as Record<string, unknown>;
  const message = e.messageId === null ? '' : ` (messageId ${e.messageId})`;
  const summaries: Record<string, () => string> = {
    applied: () => `message applied${e.versionAssigned ? ', version assigned' : ''}${message}: ${short(e.data)}`,
    stale: () => `message refused as stale: the record was at version ${e.currentVersion}${message}`,
    conflict: () => `message refused as a conflict: other data at the same version${message}`,
    duplicate: () => `repeated message${message}`,
    retried: () => `attempt ${detail.attempts} failed: ${detail.error}; retry at ${detail.retryAt}`,
    failed: () =>
      detail.leaseExpirations !== undefined
        ? `FAILED as poison: the lease of ${detail.owner} expired ${detail.leaseExpirations} times without a completion`
        : `FAILED after attempt ${detail.attempts}${detail.permanent === true ? ' (permanent error)' : ''}: ${detail.error}`,
    rescued: () => `lease of ${detail.owner} expired (${detail.leaseExpirations} so far); back to COMPLETED`,
    requeued: () => `requeued from ${detail.from}${detail.lastError ? ` (last error: ${detail.lastError})` : ''}`,
    replayed: () => `replayed from event_log: version ${detail.from ?? '(none)'} → ${e.version}`,
    deleted: () => `deleted (was ${detail.from}); a newer version creates it again`,
  };
  return { at: e.receivedAt, what: e.reason, version: e.version, seq: e.seq, summary: (summaries[e.reason] ?? (() => e.reason))() };
}

function short(value: unknown): string {
  const text = JSON.stringify(value) ?? 'null';
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

export function renderInspection({ record, timeline }: Inspection): string {
  const lines = [
    `record     ${record.id}`,
    `status     ${record.status}   version ${record.version}   attempts ${record.attempts}${record.status === 'COMPLETED' ? `   due ${record.runAfter}` : ''}`,
    ...(record.lastError === null ? [] : [`last error ${record.lastError}`]),
    `data       ${short(record.data)}`,
    ...(record.processedAt === null ? [] : [`result     ${short(record.result)} (version ${record.processedVersion}, ${record.processedAt})`]),
    `created    ${record.createdAt}   updated ${record.updatedAt}`,
    '',
    'timeline',
    ...timeline.map((t) => `  ${t.at}  ${t.what.padEnd(10)} ${t.version === null ? '' : `v${t.version}  `}${t.summary}`),
  ];
  return lines.join('\n');
}
