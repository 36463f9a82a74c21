/**
 * Priority and runAt: a message may carry both; the record takes them from its latest applied
 * message; the claim takes due records highest priority first, then oldest due, then by id, and
 * never one before its runAt (also when the runAt arrived while the record was being processed);
 * requeue can set both; every surface validates them, naming the field.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { TestDatabase } from './helpers/database.ts';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { rowfleet } from './helpers/cli.ts';
import { settleAll } from './helpers/records.ts';
import { waitFor } from './helpers/wait.ts';
import { createWorker, MessageError, UsageError, type RowfleetClient } from '../src/index.ts';
import { claimDue } from '../src/records/claim.ts';
import { complete, fail } from '../src/records/settle.ts';
import { parseMessage, type MessageInput } from '../src/records/message.ts';
import { upsertMessages } from '../src/records/upsert.ts';

let surfaces: Surfaces;
let db: TestDatabase;
let app: FastifyInstance;
let client: RowfleetClient;
let env: Record<string, string>;

beforeAll(async () => {
  surfaces = await openSurfaces();
  ({ db, app, client, env } = surfaces);
});
afterAll(async () => {
  await surfaces?.close();
});

const msg = (input: MessageInput) => parseMessage(input, { maxDepth: 64 });
const upsert = (body: unknown) => app.inject({ method: 'POST', url: '/upsert', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });
const HOUR = 3_600_000;
const inAnHour = () => new Date(Date.now() + HOUR);
const claimAll = (now?: Date) => claimDue(db.pool, { owner: 'w', limit: 1000, leaseMs: 60_000, ...(now && { now }) });

async function row(id: string): Promise<{ status: string; priority: number; run_after: Date; version: string }> {
  return (await db.pool.query(`SELECT status, priority, run_after, version FROM rowfleet.records WHERE id = $1`, [id])).rows[0];
}

describe('the claim order', () => {
  it('highest priority first, then oldest due, then id; a record before its runAt is never claimed', async () => {
    await settleAll(db.pool);
    // Written one call each, so that due times follow the order written.
    for (const [id, priority] of [['o-low', -5], ['o-mid-b', 0], ['o-mid-a', 0], ['o-high-2', 7], ['o-high-1', 7], ['o-top', 1000]] as const) {
      await upsertMessages(db.pool, [msg({ id, data: {}, priority })]);
    }
    await upsertMessages(db.pool, [msg({ id: 'o-later', data: {}, priority: 1000, runAt: inAnHour() })]);
    await upsertMessages(db.pool, [msg({ id: 'o-past', data: {}, priority: 7, runAt: '2020-01-01T00:00:00Z' })]);
    // Two records at one due time: the id decides.
    await db.pool.query(`UPDATE rowfleet.records SET run_after = (SELECT run_after FROM rowfleet.records WHERE id = 'o-mid-b') WHERE id = 'o-mid-a'`);

    // One at a time: the order the claim takes them in (a claim returns its rows in their order on disk).
    const claimed = [];
    for (let c = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 60_000 }); c.length > 0; c = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 60_000 })) {
      claimed.push(c[0]!);
    }
    expect(claimed.map((c) => [c.id, c.priority])).toEqual([
      ['o-top', 1000],
      ['o-high-2', 7],
      ['o-high-1', 7],
      ['o-past', 7],
      ['o-mid-a', 0],
      ['o-mid-b', 0],
      ['o-low', -5],
    ]);
    // Due in an hour, at the highest priority: claimed then, not before.
    expect(await claimAll(new Date(Date.now() + HOUR - 60_000))).toEqual([]);
    expect((await claimAll(new Date(Date.now() + HOUR + 1_000))).map((c) => c.id)).toEqual(['o-later']);
  });

  it('a claim limit is filled across priorities, highest first', async () => {
    await settleAll(db.pool);
    for (let i = 0; i < 5; i++) await upsertMessages(db.pool, [msg({ id: `f-${i}`, data: {}, priority: i % 3 })]);
    const first = await claimDue(db.pool, { owner: 'w', limit: 3, leaseMs: 60_000 });
    expect(first.map((c) => c.priority).sort()).toEqual([1, 1, 2]);
    const rest = await claimDue(db.pool, { owner: 'w', limit: 3, leaseMs: 60_000 });
    expect(rest.map((c) => c.priority)).toEqual([0, 0]);
  });
});

describe('the record takes priority and runAt from its latest applied message', () => {
  it('a newer message without them: priority 0, due at once; a stale one changes nothing', async () => {
    await settleAll(db.pool);
    await upsertMessages(db.pool, [msg({ id: 't-1', data: { n: 1 }, version: 1, priority: 9, runAt: inAnHour() })]);
    expect(await row('t-1')).toMatchObject({ status: 'COMPLETED', priority: 9 });
    expect((await row('t-1')).run_after.getTime()).toBeGreaterThan(Date.now() + HOUR - 60_000);
    await upsertMessages(db.pool, [msg({ id: 't-1', data: { n: 0 }, version: 0 + 1, priority: -1 })]); // stale
    expect(await row('t-1')).toMatchObject({ priority: 9 });
    await upsertMessages(db.pool, [msg({ id: 't-1', data: { n: 2 }, version: 2 })]);
    expect(await row('t-1')).toMatchObject({ priority: 0 });
    expect((await row('t-1')).run_after.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('a runAt that arrives while the record is processed holds after the superseded completion, and after a superseded failure', async () => {
    for (const [id, settle] of [
      ['t-run', (c: Awaited<ReturnType<typeof claimAll>>[number]) => complete(db.pool, [{ ...c, result: { stale: true } }])],
      ['t-fail', (c: Awaited<ReturnType<typeof claimAll>>[number]) => fail(db.pool, { ...c, error: 'x', permanent: false, maxAttempts: 3, backoffMs: 10 })],
    ] as const) {
      await settleAll(db.pool);
      await upsertMessages(db.pool, [msg({ id, data: { n: 1 }, version: 1 })]);
      const [held] = await claimAll();
      expect(held!.id).toBe(id);
      await upsertMessages(db.pool, [msg({ id, data: { n: 2 }, version: 2, runAt: inAnHour(), priority: 3 })]);
      await settle(held!);
      expect(await row(id)).toMatchObject({ status: 'COMPLETED', version: '2', priority: 3 });
      expect(await claimAll()).toEqual([]);
      expect((await claimAll(new Date(Date.now() + HOUR + 1_000))).map((c) => [c.id, c.data])).toEqual([[id, { n: 2 }]]);
    }
  });

  it('event_log keeps each message’s priority and runAt; GET /records shows the record’s', async () => {
    const runAt = '2031-05-06T07:08:09.000Z';
    expect((await upsert({ id: 't-http', data: {}, priority: 4, runAt })).json()).toMatchObject({ applied: true });
    const view = (await app.inject({ url: '/records/t-http?history=1' })).json();
    expect(view).toMatchObject({ priority: 4, runAfter: runAt, history: [{ reason: 'applied', priority: 4, runAt }] });
    // A batch, with an offset written the other way round.
    const batch = await upsert({ items: [{ id: 't-http-b', data: {}, priority: -2, runAt: '2031-05-06T09:08:09+02:00' }, { id: 't-http-c', data: {} }] });
    expect(batch.statusCode).toBe(200);
    expect(await row('t-http-b')).toMatchObject({ priority: -2, run_after: new Date(runAt) });
    expect(await row('t-http-c')).toMatchObject({ priority: 0 });
  });

  it('replay rebuilds a lost record with its latest message’s priority and runAt', async () => {
    await upsertMessages(db.pool, [msg({ id: 't-replay', data: { n: 1 }, priority: 6, runAt: '2033-03-03T03:03:03Z' })]);
    await db.pool.query(`DELETE FROM rowfleet.records WHERE id = 't-replay'`);
    const run = await rowfleet(env, 'replay', '--id', 't-replay');
    expect(run.error).toBeUndefined();
    expect(await row('t-replay')).toMatchObject({ status: 'COMPLETED', priority: 6, run_after: new Date('2033-03-03T03:03:03Z') });
  });

  it('the handler sees the record’s priority', async () => {
    await settleAll(db.pool);
    const seen: number[] = [];
    const worker = createWorker({ databaseUrl: db.url, pollMs: 50, handler: async (record) => void seen.push(record.priority) });
    const running = worker.start();
    try {
      await client.upsert({ id: 't-handler', data: {}, priority: 12 });
      await waitFor(() => seen.length > 0, 10_000, 'the handler to run');
    } finally {
      await worker.stop();
      await running;
    }
    expect(seen).toEqual([12]);
  });
});

describe('validation', () => {
  it('refuses a bad priority or runAt with 400 naming the field, and writes nothing', async () => {
    for (const [body, field, message] of [
      [{ id: 'v-1', data: {}, priority: 1001 }, 'priority', 'priority must be an integer from -1000 to 1000, got 1001'],
      [{ id: 'v-1', data: {}, priority: 1.5 }, 'priority', 'priority must be an integer from -1000 to 1000, got 1.5'],
      [{ id: 'v-1', data: {}, priority: 'high' }, 'priority', 'priority must be an integer from -1000 to 1000, got "high"'],
      [{ id: 'v-1', data: {}, runAt: 'tomorrow' }, 'runAt', 'runAt must be an ISO-8601 timestamp with a time zone, like 2026-12-01T12:00:00Z, got "tomorrow"'],
      [{ id: 'v-1', data: {}, runAt: '2026-12-01T12:00:00' }, 'runAt', 'runAt must be an ISO-8601 timestamp with a time zone, like 2026-12-01T12:00:00Z, got "2026-12-01T12:00:00"'],
      [{ id: 'v-1', data: {}, runAt: 1764590400000 }, 'runAt', 'runAt must be an ISO-8601 timestamp with a time zone, like 2026-12-01T12:00:00Z, got 1764590400000'],
      [{ items: [{ id: 'v-1', data: {} }, { id: 'v-2', data: {}, priority: -1001 }] }, 'items[1].priority', 'items[1].priority must be an integer from -1000 to 1000, got -1001'],
    ] as const) {
      const res = await upsert(body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json()).toEqual({ error: 'invalid_request', field, message });
    }
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id LIKE 'v-%'`)).rows[0].n).toBe(0);
    await expect(client.upsert({ id: 'v-lib', data: {}, priority: 5000 })).rejects.toThrow(MessageError);
  });
});

describe('the CLI', () => {
  it('upsert --priority --run-at, and requeue --priority --run-at', async () => {
    const done = await rowfleet(env, 'upsert', 'c-1', '{}', '--priority', '-7', '--run-at', '2031-01-01T00:00:00Z');
    expect(done.error).toBeUndefined();
    expect(await row('c-1')).toMatchObject({ priority: -7, run_after: new Date('2031-01-01T00:00:00Z') });

    const bad = await rowfleet(env, 'upsert', 'c-2', '{}', '--priority', 'urgent');
    expect(bad.error).toBeInstanceOf(UsageError);
    expect((bad.error as Error).message).toBe('--priority must be an integer from -1000 to 1000, got "urgent"');
    const badTime = await rowfleet(env, 'upsert', 'c-2', '{}', '--run-at', 'soon');
    expect((badTime.error as Error).message).toMatch(/^--run-at must be an ISO-8601 timestamp/);
    expect(await row('c-2')).toBeUndefined();

    await db.pool.query(`UPDATE rowfleet.records SET status = 'FAILED', last_error = 'x', run_after = now() WHERE id = 'c-1'`);
    const requeued = await rowfleet(env, 'requeue', '--id', 'c-1', '--priority', '50', '--run-at', '2032-02-02T00:00:00Z', '--json');
    expect(JSON.parse(requeued.stdout)).toMatchObject({ requeued: 1 });
    expect(await row('c-1')).toMatchObject({ status: 'COMPLETED', priority: 50, run_after: new Date('2032-02-02T00:00:00Z') });
    const badRequeue = await rowfleet(env, 'requeue', '--all', '--priority', '2000');
    expect((badRequeue.error as Error).message).toBe('--priority must be an integer from -1000 to 1000, got 2000');
  });
});
