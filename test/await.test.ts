/**
 * Waiting for a result: POST /upsert?wait=, the library's upsert(m, { wait }) and
 * `rowfleet upsert --wait` answer once the applied version is PROCESSED or FAILED, or when the
 * wait runs out with the record's state, without a polling loop, and the settling statements
 * notify only while somebody waits.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { rowfleet } from './helpers/cli.ts';
import { waitFor } from './helpers/wait.ts';
import { buildServer } from '../src/http/server.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { createClient, createWorker, MessageError, PermanentError, UsageError, UserError, type RowfleetClient } from '../src/index.ts';

let db: TestDatabase;
let app: FastifyInstance;
let client: RowfleetClient;
let worker: ReturnType<typeof createWorker>;
let running: Promise<void>;
/** Reads of waiters' records, and writes of the server's row in rowfleet.awaits (named statements). */
let stateReads = 0;
let registrations = 0;
/** Handlers of records with `data.hold` wait until released. */
const held = new Map<string, () => void>();
const release = (id: string) => held.get(id)?.();

beforeAll(async () => {
  db = await createTestDatabase();
  const counting = new Proxy(db.pool, {
    get(target, prop, receiver) {
      if (prop !== 'query') return Reflect.get(target, prop, receiver);
      return (config: unknown, ...rest: unknown[]) => {
        const name = (config as { name?: string } | null)?.name;
        if (name === 'rowfleet_await_states') stateReads += 1;
        if (name === 'rowfleet_await_register') registrations += 1;
        return (target.query as (...a: unknown[]) => unknown)(config, ...rest);
      };
    },
  });
  app = buildServer({ config: loadConfig({}, { databaseUrl: db.url }), pool: counting, log: silentLogger, listenUrl: db.url });
  client = createClient({ databaseUrl: db.url, poolSize: 2 });
  worker = createWorker({
    databaseUrl: db.url,
    concurrency: 10,
    pollMs: 60_000,
    maxAttempts: 1,
    handler: async (record) => {
      const data = record.data as { fail?: boolean; hold?: boolean; n?: number };
      if (data.hold) await new Promise<void>((resolve) => held.set(record.id, resolve));
      if (data.fail) throw new PermanentError('refused by the test');
      return { n: data.n, version: record.version };
    },
  });
  running = worker.start();
});
afterAll(async () => {
  for (const resolve of held.values()) resolve();
  await worker?.stop();
  await running;
  await app?.close();
  await client?.close();
  await db?.drop();
});

const post = (body: unknown, query = '', target = app) =>
  target.inject({ method: 'POST', url: `/upsert${query}`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });

async function count(id: string): Promise<number> {
  const { rows } = await db.pool.query(`SELECT (SELECT count(*) FROM rowfleet.records WHERE id = $1) + (SELECT count(*) FROM rowfleet.event_log WHERE record_id = $1) AS n`, [id]);
  return Number(rows[0].n);
}

/** Resolves once `id`'s handler is running (and held). */
const heldNow = (id: string) => waitFor(() => held.has(id), 10_000, `the handler of ${id} to start`);

describe('POST /upsert?wait=', () => {
  it('answers once the worker processed the applied version, with its result', async () => {
    const res = await post({ id: 'aw-1', data: { n: 1 }, version: 1 }, '?wait=10s');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      kind: 'default',
      id: 'aw-1',
      applied: true,
      version: 1,
      reason: 'applied',
      outcome: { settled: true, status: 'PROCESSED', processedVersion: 1, result: { n: 1, version: 1 } },
    });
  });

  it('answers a FAILED record with its error, and a stale message at once, without an outcome', async () => {
    const failed = await post({ id: 'aw-2', data: { fail: true }, version: 5 }, '?wait=10s');
    expect(failed.json()).toMatchObject({ applied: true, outcome: { settled: true, status: 'FAILED', processedVersion: null, error: 'PermanentError: refused by the test' } });
    const stale = await post({ id: 'aw-2', data: {}, version: 4 }, '?wait=10s');
    expect(stale.json()).toEqual({ kind: 'default', id: 'aw-2', applied: false, version: 4, currentVersion: 5, reason: 'stale' });
  });

  it('a batch: each applied message gets its outcome, in request order', async () => {
    const res = await post({ items: [{ id: 'aw-3', data: { n: 3 }, version: 1 }, { id: 'aw-4', data: { n: 4 } }, { id: 'aw-3', data: { n: 0 }, version: 1 }] }, '?wait=10s');
    const { results } = res.json() as { results: Record<string, unknown>[] };
    expect(results[0]).toMatchObject({ id: 'aw-3', applied: true, outcome: { settled: true, status: 'PROCESSED', result: { n: 3 } } });
    expect(results[1]).toMatchObject({ id: 'aw-4', applied: true, outcome: { settled: true, status: 'PROCESSED', result: { n: 4 } } });
    expect(results[2]).toMatchObject({ kind: 'default', id: 'aw-3', applied: false, reason: 'conflict' });
    expect(results[2]).not.toHaveProperty('outcome');
  });

  it('when the wait runs out: the record state, settled false, and no polling meanwhile', async () => {
    const before = stateReads;
    const res = await post({ id: 'aw-5', data: { hold: true }, version: 1 }, '?wait=1500ms');
    expect(res.json()).toMatchObject({ applied: true, outcome: { settled: false, status: 'PROCESSING', processedVersion: null } });
    // The read when the waiter registered, and the one when its wait ran out: nothing in 1.5 s between.
    expect(stateReads - before).toBeLessThanOrEqual(2);
    release('aw-5');
  });

  it('a newer version arriving meanwhile settles the wait with its result (conflation)', async () => {
    const waiting = post({ id: 'aw-6', data: { hold: true, n: 1 }, version: 1 }, '?wait=10s');
    await heldNow('aw-6');
    expect((await post({ id: 'aw-6', data: { n: 2 }, version: 2 })).json()).toMatchObject({ applied: true });
    release('aw-6');
    expect((await waiting).json()).toMatchObject({ version: 1, outcome: { settled: true, status: 'PROCESSED', processedVersion: 2, result: { n: 2 } } });
  });

  it('200 requests waiting at once on the same worker: each gets its own result, none waits its wait out', async () => {
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 200 }, (_, n) => post({ id: `aw-many-${n}`, data: { n } }, '?wait=20s')));
    for (const [n, res] of answers.entries()) {
      expect(res.json()).toMatchObject({ id: `aw-many-${n}`, applied: true, outcome: { settled: true, status: 'PROCESSED', result: { n } } });
    }
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('the server wrote its row in rowfleet.awaits once for all the waits above', () => {
    expect(registrations).toBe(1);
  });

  it('refuses a bad wait with 400 naming it, and writes nothing', async () => {
    for (const [query, message] of [
      ['?wait=soon', /^wait must be a duration with a unit/],
      ['?wait=10', /^wait needs a unit: "10" could be 10ms or 10s/],
      ['?wait=10m', /^wait must be between 0ms and 5m, got 10m$/],
      ['?wait=1s&wait=2s', /^wait must be given once$/],
    ] as const) {
      const res = await post({ id: 'aw-bad', data: {} }, query);
      expect(res.statusCode, query).toBe(400);
      expect(res.json()).toMatchObject({ error: 'invalid_request', field: 'wait' });
      expect(res.json().message).toMatch(message);
    }
    expect(await count('aw-bad')).toBe(0);
  });

  it('a server shutting down answers its waiting requests at once, with their state', async () => {
    const other = buildServer({ config: loadConfig({}, { databaseUrl: db.url }), pool: db.pool, log: silentLogger });
    const waiting = post({ id: 'aw-7', data: { hold: true }, version: 1 }, '?wait=60s', other);
    await heldNow('aw-7');
    const started = Date.now();
    await other.close();
    expect((await waiting).json()).toMatchObject({ applied: true, outcome: { settled: false, status: 'PROCESSING' } });
    expect(Date.now() - started).toBeLessThan(30_000);
    release('aw-7');
  });
});

describe('upsert(message, { wait }) in the library', () => {
  it('resolves with the outcome; a bad wait throws MessageError naming it before anything is written', async () => {
    expect(await client.upsert({ id: 'aw-lib', data: { n: 9 } }, { wait: 10_000 })).toMatchObject({
      applied: true,
      outcome: { settled: true, status: 'PROCESSED', result: { n: 9 } },
    });
    await expect(client.upsert({ id: 'aw-lib-bad', data: {} }, { wait: 'later' })).rejects.toThrow(MessageError);
    await expect(client.upsert({ id: 'aw-lib-bad', data: {} }, { wait: -1 })).rejects.toThrow(/^wait must be between 0ms and 5m/);
    expect(await count('aw-lib-bad')).toBe(0);
  });
});

describe('rowfleet upsert --wait', () => {
  it('prints the outcome; exit 0 when processed, 1 when FAILED, 3 when the wait ran out, 2 for a bad duration', async () => {
    const env = { DATABASE_URL: db.url };
    const exit = (run: { error?: unknown }) => (run.error === undefined ? 0 : (run.error as UserError).exitCode);
    const done = await rowfleet(env, 'upsert', 'aw-cli-1', '{"n": 1}', '--wait', '10s');
    expect(exit(done)).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ applied: true, outcome: { settled: true, status: 'PROCESSED', result: { n: 1 } } });

    const failed = await rowfleet(env, 'upsert', 'aw-cli-2', '{"fail": true}', '--wait', '10s');
    expect(exit(failed)).toBe(1);
    expect((failed.error as Error).message).toBe('the record is FAILED: PermanentError: refused by the test');

    const late = await rowfleet(env, 'upsert', 'aw-cli-3', '{"hold": true}', '--wait', '300ms');
    expect(exit(late)).toBe(3);
    expect(JSON.parse(late.stdout)).toMatchObject({ outcome: { settled: false } });
    expect((late.error as Error).message).toMatch(/^not processed within 300ms \(status (COMPLETED|PROCESSING)\); it stays queued$/);
    release('aw-cli-3');

    const bad = await rowfleet(env, 'upsert', 'aw-cli-4', '{}', '--wait', '5');
    expect(bad.error).toBeInstanceOf(UsageError);
    expect((bad.error as Error).message).toMatch(/^--wait needs a unit/);
    expect(await count('aw-cli-4')).toBe(0);
  });
});

const waitForStatus = (id: string, status: string) =>
  waitFor(async () => (await db.pool.query(`SELECT status FROM rowfleet.records WHERE id = $1`, [id])).rows[0]?.status === status, 10_000, `${id} to be ${status}`);

describe('the settling statements', () => {
  it('notify rowfleet_settled only while a client waits', async () => {
    // Nobody waits (the rows of the waits above are removed), and nothing of the tests above is still
    // settling: a completion that began while a row existed would notify after the LISTEN below
    // (CI met one). Only then listen.
    await db.pool.query(`DELETE FROM rowfleet.awaits`);
    await waitFor(async () => (await db.pool.query(`SELECT 1 FROM rowfleet.records WHERE status IN ('COMPLETED', 'PROCESSING')`)).rows.length === 0, 10_000, 'the records above to settle');
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(n.channel));
    await listener.query('LISTEN rowfleet_settled');
    try {
      // Nobody waits: a processed record sends nothing.
      await client.upsert({ id: 'aw-quiet', data: { n: 1 } });
      await waitForStatus('aw-quiet', 'PROCESSED');
      await listener.query('SELECT 1'); // a round trip: a notification sent before it has arrived
      expect(notes).toEqual([]);

      await db.pool.query(`INSERT INTO rowfleet.awaits (client, expires_at) VALUES (gen_random_uuid(), now() + interval '1 minute')`);
      await client.upsert({ id: 'aw-loud', data: { n: 1 } });
      await waitForStatus('aw-loud', 'PROCESSED');
      await listener.query('SELECT 1');
      expect(notes).toEqual(['rowfleet_settled']);
    } finally {
      await listener.end();
      await db.pool.query(`DELETE FROM rowfleet.awaits`);
    }
  });
});
