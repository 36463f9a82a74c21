/**
 * Random concurrent interleavings of upserts (single messages and batches; ids, versions,
 * missing versions, repeated and reused messageIds, conflicts) against a real Postgres, checked
 * against the max-register model:
 * - every processed message has exactly one event_log row, and a repeated messageId none;
 * - replaying each id's event_log in seq order through the model gives the recorded outcome of
 *   every row (so the stored order is a valid serial order of the writes);
 * - the record holds the version and data of its last applied message (I1);
 * - per id, applied versions strictly increase in seq order;
 * - each response matches its event_log row; duplicates repeat the first response.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { upsertMessages, type UpsertResult } from '../src/records/upsert.ts';
import type { Message } from '../src/records/message.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ poolSize: 8 });
});
afterAll(async () => {
  await db?.drop();
});

interface GenMessage {
  id: number;
  version: number | null;
  data: number;
  messageId: number | null;
}

const genMessage = fc.record({
  id: fc.integer({ min: 0, max: 3 }),
  version: fc.option(fc.integer({ min: 1, max: 8 }), { freq: 4 }),
  data: fc.integer({ min: 0, max: 2 }),
  messageId: fc.option(fc.integer({ min: 0, max: 5 }), { freq: 2 }),
});
/** A call: one message or a batch of several. Several calls run at once. */
const genCalls = fc.array(fc.array(genMessage, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 6 });

let run = 0;

describe('versioned upsert, property-based', () => {
  it('matches the max-register model under concurrent calls', async () => {
    await fc.assert(
      fc.asyncProperty(genCalls, async (calls) => {
        run += 1;
        const prefix = `r${run}-`;
        const toMessage = (g: GenMessage): Message => ({
          id: `${prefix}${g.id}`,
          data: { v: g.data },
          ...(g.version !== null && { version: String(g.version) }),
          ...(g.messageId !== null && { messageId: `${prefix}m${g.messageId}` }),
        });
        const batches = calls.map((call) => call.map(toMessage));
        const responses = await Promise.all(batches.map((batch) => upsertMessages(db.pool, batch)));
        await checkInvariants(prefix, batches, responses);
      }),
      { numRuns: 60 },
    );
  });
});

interface EventRow {
  seq: string;
  record_id: string;
  message_id: string | null;
  version: string;
  version_assigned: boolean;
  data: unknown;
  applied: boolean;
  reason: string;
  current_version: string | null;
}

async function checkInvariants(prefix: string, batches: Message[][], responses: UpsertResult[][]): Promise<void> {
  const { rows: events } = await db.pool.query<EventRow>(
    `SELECT seq, record_id, message_id, version, version_assigned, data, applied, reason, current_version
       FROM rowfleet.event_log WHERE record_id LIKE $1 || '%' ORDER BY seq`,
    [prefix],
  );
  const { rows: recordRows } = await db.pool.query<{ id: string; version: string; data: unknown }>(
    `SELECT id, version, data FROM rowfleet.records WHERE id LIKE $1 || '%'`,
    [prefix],
  );
  const stored = new Map(recordRows.map((r) => [r.id, r]));

  // Replay per id through the model.
  const model = new Map<string, { version: bigint; data: unknown }>();
  for (const e of events) {
    const cur = model.get(e.record_id);
    const v = BigInt(e.version);
    let expected: string;
    if (cur === undefined || v > cur.version) expected = 'applied';
    else if (v < cur.version) expected = 'stale';
    else expected = isDeepStrictEqual(e.data, cur.data) ? 'stale' : 'conflict';
    expect(e.reason, `seq ${e.seq}`).toBe(expected);
    expect(e.applied).toBe(expected === 'applied');
    expect(e.current_version, `seq ${e.seq} current_version`).toBe(cur === undefined ? null : cur.version.toString());
    if (expected === 'applied') model.set(e.record_id, { version: v, data: e.data });
  }

  // I1: the record holds the last applied message.
  expect(new Set(stored.keys())).toEqual(new Set(model.keys()));
  for (const [id, m] of model) {
    expect(stored.get(id)!.version).toBe(m.version.toString());
    expect(stored.get(id)!.data).toEqual(m.data);
  }

  // I2: one row per processed message; none for repeats; one per messageId.
  const all = batches.flatMap((batch, b) => batch.map((message, i) => ({ message, result: responses[b]![i]! })));
  const processed = all.filter(({ result }) => result.reason !== 'message_id_reused' && !('duplicate' in result && result.duplicate));
  expect(events.length).toBe(processed.length);
  const withIds = events.filter((e) => e.message_id !== null).map((e) => e.message_id);
  expect(new Set(withIds).size).toBe(withIds.length);

  // Each processed response matches an event row with its version and outcome (client versions
  // are unique per (id, version, data) only loosely, so match on the full tuple as a multiset).
  const key = (id: string, version: string, reason: string, data: unknown) => `${id}|${version}|${reason}|${JSON.stringify(data)}`;
  const eventKeys = events.map((e) => key(e.record_id, e.version, e.reason, e.data)).sort();
  const responseKeys = processed
    .map(({ message, result }) => {
      expect(result.reason).not.toBe('message_id_reused');
      const r = result as Exclude<UpsertResult, { reason: 'message_id_reused' }>;
      if (message.version !== undefined) expect(r.version).toBe(message.version);
      return key(message.id, r.version, r.reason, message.data);
    })
    .sort();
  expect(responseKeys).toEqual(eventKeys);

  // Repeated messageIds: same content → the first response again; other content → reused.
  const byMessageId = new Map(events.filter((e) => e.message_id !== null).map((e) => [e.message_id!, e]));
  for (const { message, result } of all) {
    if (message.messageId === undefined) continue;
    const first = byMessageId.get(message.messageId);
    expect(first, `messageId ${message.messageId} logged`).toBeDefined();
    const sameContent =
      first!.record_id === message.id &&
      isDeepStrictEqual(first!.data, message.data) &&
      (first!.version_assigned ? message.version === undefined : message.version === first!.version);
    if (!sameContent) {
      expect(result.reason).toBe('message_id_reused');
      continue;
    }
    expect(result.reason).toBe(first!.reason);
    if (result.reason !== 'message_id_reused') expect(result.version).toBe(first!.version);
  }
}
