import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { UpsertCoalescer } from '../src/records/coalescer.ts';
import { Coalescer } from '../src/coalescer.ts';
import { parseMessage, type Message } from '../src/records/message.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const msg = (id: string, n: number, version?: number, messageId?: string) => parseMessage({ id, data: { n }, version, messageId }, { maxDepth: 64 });

/** The real pool, counting the calls that reach it. */
function counting(pool: pg.Pool): { db: pg.Pool; calls: () => number } {
  let calls = 0;
  const db = new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop === 'query') return (...args: unknown[]) => ((calls += 1), (target.query as (...a: unknown[]) => unknown)(...args));
      return Reflect.get(target, prop, receiver);
    },
  });
  return { db, calls: () => calls };
}

describe('UpsertCoalescer', () => {
  it('sends concurrent messages in few calls, with the outcomes of sending them one by one in arrival order', async () => {
    const { db: spied, calls } = counting(db.pool);
    const coalescer = new UpsertCoalescer(spied, { maxInFlight: 1, maxBatch: 1000 });
    const messages: Message[] = Array.from({ length: 200 }, (_, i) => msg(`co-${i % 7}`, i, (i * 13) % 50 + 1, i % 9 === 0 ? `co-evt-${i % 4}` : undefined));
    const results = await Promise.all(messages.map((m) => coalescer.upsert(m)));
    expect(calls()).toBeLessThan(10);

    // The same messages, one call each, in the same order, on fresh ids: the same outcomes.
    const sequential = new UpsertCoalescer(db.pool, { maxInFlight: 1, maxBatch: 1 });
    const replayed = [];
    for (const m of messages) {
      replayed.push(await sequential.upsert({ ...m, id: m.id.replace('co-', 'seq-'), ...(m.messageId && { messageId: m.messageId.replace('co-', 'seq-') }) }));
    }
    const shape = (r: object) => JSON.stringify({ ...r, id: undefined, messageId: undefined, error: undefined });
    expect(results.map(shape)).toEqual(replayed.map(shape));
  });

  it('fails only the message the database refuses when a coalesced call fails', async () => {
    const coalescer = new UpsertCoalescer(db.pool, { maxInFlight: 1, maxBatch: 1000 });
    // A NUL in the id bypasses validation here (parseMessage refuses it): Postgres rejects it.
    const bad: Message = { id: 'bad\u0000id', data: {} };
    const outcomes = await Promise.allSettled([coalescer.upsert(msg('ok-0', 0)), coalescer.upsert(msg('ok-1', 1)), coalescer.upsert(bad), coalescer.upsert(msg('ok-2', 2))]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id LIKE 'ok-%'`);
    expect(rows[0].n).toBe(3);
  });
});

describe('Coalescer', () => {
  const recording = (gather: boolean) => {
    const calls: number[][] = [];
    const coalescer = new Coalescer<number, number>({
      maxInFlight: 1,
      maxBatch: 1000,
      gather,
      send: async (items) => (calls.push(items), items.map((n) => n * 2)),
    });
    return { calls, coalescer };
  };

  it('with gather, items submitted in one turn share the first call', async () => {
    const { calls, coalescer } = recording(true);
    // As a claimed batch's handlers finish: each submits after a few promise hops of its own.
    const outs = await Promise.all(Array.from({ length: 500 }, (_, i) => Promise.resolve(i).then((n) => coalescer.submit(n))));
    expect(outs).toEqual(Array.from({ length: 500 }, (_, i) => i * 2));
    expect(calls.map((c) => c.length)).toEqual([500]);
  });

  it('without it, the first item goes alone and the rest wait for it', async () => {
    const { calls, coalescer } = recording(false);
    await Promise.all(Array.from({ length: 500 }, (_, i) => Promise.resolve(i).then((n) => coalescer.submit(n))));
    expect(calls.map((c) => c.length)).toEqual([1, 499]);
  });
});

describe('Coalescer with a key', () => {
  it('keeps one key in arrival order across calls in flight, and lets other keys pass', async () => {
    // Calls finish when the test says so, in the order it chooses.
    const calls: { items: string[]; finish(): void }[] = [];
    const coalescer = new Coalescer<string, string>({
      maxInFlight: 2,
      maxBatch: 1000,
      key: (item) => item.split(':')[0]!,
      send: (items) => new Promise((resolve) => calls.push({ items, finish: () => resolve(items) })),
    });
    const outs = ['a:1', 'b:1', 'a:2', 'c:1', 'b:2', 'a:3'].map((item) => coalescer.submit(item));
    const tick = () => new Promise((resolve) => setImmediate(resolve));
    // Two calls in flight at once, each alone: the rest queue.
    expect(calls.map((c) => c.items)).toEqual([['a:1'], ['b:1']]);
    calls[1]!.finish();
    await tick();
    // The next call takes the queue but a's items: a:1 is still in flight.
    expect(calls.map((c) => c.items)).toEqual([['a:1'], ['b:1'], ['c:1', 'b:2']]);
    calls[2]!.finish();
    await tick();
    expect(calls).toHaveLength(3);
    calls[0]!.finish();
    await tick();
    expect(calls.map((c) => c.items)).toEqual([['a:1'], ['b:1'], ['c:1', 'b:2'], ['a:2', 'a:3']]);
    calls[3]!.finish();
    expect(await Promise.all(outs)).toEqual(['a:1', 'b:1', 'a:2', 'c:1', 'b:2', 'a:3']);
  });

  it('retries a refused call item by item with each key in order', async () => {
    const sent: string[][] = [];
    const coalescer = new Coalescer<string, string>({
      maxInFlight: 1,
      maxBatch: 1000,
      gather: true,
      key: (item) => item.split(':')[0]!,
      isolate: () => true,
      send: async (items) => {
        sent.push(items);
        if (items.length > 1 || items[0] === 'b:1') throw new Error('refused');
        return items;
      },
    });
    const outcomes = await Promise.allSettled(['a:1', 'b:1', 'a:2', 'a:3'].map((item) => coalescer.submit(item)));
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    // One call for all four, refused; then one call each, a's in arrival order.
    expect(sent[0]).toEqual(['a:1', 'b:1', 'a:2', 'a:3']);
    expect(sent.slice(1).filter((s) => s[0]!.startsWith('a:'))).toEqual([['a:1'], ['a:2'], ['a:3']]);
    expect(sent).toHaveLength(5);
  });
});
