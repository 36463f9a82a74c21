/**
 * The versioned upsert (invariants I1 newest wins, I2 every message audited once).
 *
 * All the work happens in one call of a database function (drizzle/0011_kinds.sql, first in 0001):
 * take versions, lock rows in (kind, id) order, classify each message against the stored version, write
 * the newest per record, append one event_log row per message. A single message and a batch of
 * a thousand cost one round trip each.
 */
import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import { inTransaction, query, sqlState, type Queryable } from '../db/sql.ts';
import { presentVersion, type Message } from './message.ts';
import { wakeAfterCommit } from './wake.ts';
import { DEFAULT_KIND, keyOf, type RecordKey } from './key.ts';

export type UpsertResult =
  | { kind: string; id: string; applied: true; version: string; reason: 'applied'; duplicate?: true }
  | { kind: string; id: string; applied: false; version: string; currentVersion: string; reason: 'stale' | 'conflict'; duplicate?: true }
  | { kind: string; id: string; applied: false; reason: 'message_id_reused'; messageId: string; error: string };

interface ResultRow {
  ord: number;
  record_id: string;
  applied: boolean;
  version: string;
  current_version: string | null;
  reason: 'applied' | 'stale' | 'conflict';
  duplicate: boolean;
  reused: boolean;
}

/**
 * Failures that mean "run the same call again": the function's own retry signal when a record was
 * created concurrently (40001), a deadlock between batches sharing messageIds on different records
 * (40P01), and two identical messageIds racing on different records (23505 on the messageId index).
 * Each attempt is one atomic statement, so a failed one wrote nothing.
 */
const RETRY_LIMIT = 20;

function isRetryable(err: unknown): boolean {
  const code = sqlState(err);
  if (code === '40001' || code === '40P01') return true;
  return code === '23505' && (err as { constraint?: string }).constraint === 'event_log_message_id_key';
}

/**
 * Sends jobs for the records a call applied, inside the call's own transaction (the boss engine's
 * enqueue-on-upsert): the write and its jobs commit together or not at all.
 */
export type Enqueue = (tx: pg.PoolClient, applied: readonly AppliedRecord[]) => Promise<void>;

export interface AppliedRecord extends RecordKey {
  version: string;
  priority?: number;
  runAt?: string;
}

export interface UpsertOptions {
  enqueue?: Enqueue | undefined;
}

/** Applies messages in order (several for one id apply in array order); one result per message. */
export async function upsertMessages(db: Queryable, messages: readonly Message[], options: UpsertOptions = {}): Promise<UpsertResult[]> {
  if (messages.length === 0) return [];
  const [name, statement] = messages.length === 1 ? singleStatement(messages[0]!) : batchStatement(messages);
  const run = options.enqueue === undefined ? (d: Queryable) => query<ResultRow>(d, statement, name) : enqueuing(statement, name, options.enqueue, messages);

  for (let attempt = 1; ; attempt++) {
    try {
      const rows = await run(db);
      if (rows.some((row) => row.applied && !row.duplicate)) wake(db);
      return rows.map((row) => toResult(row, messages[row.ord - 1]!));
    } catch (err) {
      if (!isRetryable(err) || attempt >= RETRY_LIMIT) throw err;
      // Jittered pause so that the writers who collided do not collide again in lockstep.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** attempt)));
    }
  }
}

/**
 * Closes the gap of a flag raised while the write's transaction ran (see wake.ts): in the
 * background, so that the caller's answer does not wait for it. On a client the write may sit in
 * the caller's own transaction, not yet committed: that caller calls wakeWorkers after its commit.
 */
function wake(db: Queryable): void {
  if ('totalCount' in db) wakeAfterCommit(db as pg.Pool);
}

/** The upsert and its jobs in one transaction (on a client of its own when given a pool). */
function enqueuing(statement: SQL, name: string, enqueue: Enqueue, messages: readonly Message[]): (db: Queryable) => Promise<ResultRow[]> {
  return (db) =>
    inTransaction(db, async (tx) => {
      const rows = await query<ResultRow>(tx, statement, name);
      // Newest applied version per record, with its message's priority and runAt; a repeated
      // messageId wrote nothing and sends nothing.
      const applied = new Map<string, AppliedRecord>();
      for (const row of rows) {
        if (!row.applied || row.duplicate || row.reused) continue;
        const { kind = DEFAULT_KIND, priority, runAt } = messages[row.ord - 1]!;
        const key = { kind, id: row.record_id };
        applied.set(keyOf(key), { ...key, version: row.version, ...(priority !== undefined && { priority }), ...(runAt !== undefined && { runAt }) });
      }
      if (applied.size > 0) await enqueue(tx, [...applied.values()]);
      return rows;
    });
}

/**
 * One message goes to `rowfleet.upsert_message`, a few simple statements: the batch function's
 * set-based statement costs more than the whole write for one row (see the migration).
 */
function singleStatement(m: Message): [string, SQL] {
  return [
    'rowfleet_upsert_message',
    sql`SELECT * FROM rowfleet.upsert_message(${m.kind ?? DEFAULT_KIND}::text, ${m.id}::text, ${JSON.stringify(m.data)}::jsonb, ${m.version ?? null}::bigint, ${m.messageId ?? null}::text,
                                              ${m.priority ?? null}::int, ${m.runAt ?? null}::timestamptz)`,
  ];
}

function batchStatement(messages: readonly Message[]): [string, SQL] {
  const ids = messages.map((m) => m.id);
  // Most batches are of kind default only: NULL, as for the priorities below.
  const kinds = messages.some((m) => (m.kind ?? DEFAULT_KIND) !== DEFAULT_KIND) ? messages.map((m) => m.kind ?? DEFAULT_KIND) : null;
  const data = JSON.stringify(messages.map((m) => m.data));
  const versions = messages.map((m) => m.version ?? null);
  const messageIds = messages.map((m) => m.messageId ?? null);
  // Most batches carry neither: NULL arrays, so that nothing per message is sent or unnested for them.
  const priorities = messages.some((m) => m.priority !== undefined) ? messages.map((m) => m.priority ?? null) : null;
  const runAts = messages.some((m) => m.runAt !== undefined) ? messages.map((m) => m.runAt ?? null) : null;
  return [
    'rowfleet_upsert_messages',
    sql`SELECT * FROM rowfleet.upsert_messages(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[], ${data}::jsonb, ${sql.param(versions)}::bigint[], ${sql.param(messageIds)}::text[],
                                               ${sql.param(priorities)}::int[], ${sql.param(runAts)}::timestamptz[])`,
  ];
}

function toResult(row: ResultRow, message: Message): UpsertResult {
  if (row.reused) {
    return {
      kind: message.kind ?? DEFAULT_KIND,
      id: row.record_id,
      applied: false,
      reason: 'message_id_reused',
      messageId: message.messageId!,
      error: `messageId ${JSON.stringify(message.messageId)} was already used for a different message (other id, version or data)`,
    };
  }
  const duplicate = row.duplicate ? { duplicate: true as const } : {};
  if (row.applied) return { kind: message.kind ?? DEFAULT_KIND, id: row.record_id, applied: true, version: row.version, reason: 'applied', ...duplicate };
  return {
    kind: message.kind ?? DEFAULT_KIND,
    id: row.record_id,
    applied: false,
    version: row.version,
    currentVersion: row.current_version!,
    reason: row.reason as 'stale' | 'conflict',
    ...duplicate,
  };
}

/** An upsert result as the HTTP API and the library return it: versions as numbers when exact. */
export type UpsertResponse =
  | { kind: string; id: string; applied: true; version: number | string; reason: 'applied'; duplicate?: true }
  | { kind: string; id: string; applied: false; version: number | string; currentVersion: number | string; reason: 'stale' | 'conflict'; duplicate?: true }
  | { kind: string; id: string; applied: false; reason: 'message_id_reused'; messageId: string; error: string };

export function presentResult(result: UpsertResult): UpsertResponse {
  if (result.reason === 'message_id_reused') return result;
  if (result.applied) return { ...result, version: presentVersion(result.version) };
  return { ...result, version: presentVersion(result.version), currentVersion: presentVersion(result.currentVersion) };
}

/** The HTTP status of a single message's result. */
export function statusOf(result: UpsertResult): 200 | 409 | 422 {
  if (result.reason === 'message_id_reused') return 422;
  return result.reason === 'conflict' ? 409 : 200;
}
