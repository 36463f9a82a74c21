/**
 * Kinds: a record is keyed by (kind, id), so `order/17` and `invoice/17` are two records with their
 * own versions; every surface takes the kind (default `default`) and refuses a bad one naming it;
 * a worker claims only the kinds it has handlers for (a map, narrowed by --kinds), holds each
 * kind to its own concurrency and policy, and shares its claims fairly among kinds; the boss
 * engine keeps a queue per kind.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { PgBoss } from 'pg-boss';
import type { TestDatabase } from './helpers/database.ts';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { rowfleet } from './helpers/cli.ts';
import { settleAll } from './helpers/records.ts';
import { waitFor } from './helpers/wait.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { createWorker, MessageError, UsageError, type HandlerRecord, type RowfleetClient } from '../src/index.ts';
import { claimDue } from '../src/records/claim.ts';
import { parseMessage, type MessageInput } from '../src/records/message.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { handlerFromExport, type Handler, type HandlerExport } from '../src/worker/handler.ts';
import { bossEngine, shareOut, type Engine } from '../src/worker/engine.ts';
import { Worker, type WorkerOptions } from '../src/worker/worker.ts';
import { KindQueues, startBoss, stopBoss } from '../src/boss/boss.ts';
import { sweep } from '../src/boss/sweep.ts';

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
const post = (body: unknown) => app.inject({ method: 'POST', url: '/upsert', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });
const get = (url: string) => app.inject({ method: 'GET', url });

async function row(kind: string, id: string): Promise<{ status: string; version: string; data: unknown; attempts: number } | undefined> {
  return (await db.pool.query(`SELECT status, version, data, attempts FROM rowfleet.records WHERE kind = $1 AND id = $2`, [kind, id])).rows[0];
}

describe('a record is keyed by kind and id', () => {
  it('order/17 and invoice/17 are two records with their own versions, on every surface', async () => {
    expect((await post({ kind: 'order', id: '17', data: { total: 5 }, version: 3 })).json()).toEqual({ kind: 'order', id: '17', applied: true, version: 3, reason: 'applied' });
    // The same id and version in another kind is not stale: a record of its own.
    expect((await post({ kind: 'invoice', id: '17', data: { due: 1 }, version: 3 })).json()).toMatchObject({ kind: 'invoice', applied: true, version: 3 });
    expect((await post({ kind: 'order', id: '17', data: { total: 4 }, version: 2 })).json()).toMatchObject({ kind: 'order', applied: false, reason: 'stale', currentVersion: 3 });
    // A batch mixing kinds, and the same id without a kind: kind default.
    const batch = (await post({ items: [{ kind: 'invoice', id: '17', data: { due: 2 }, version: 4 }, { id: '17', data: { plain: true } }] })).json();
    expect(batch.results).toMatchObject([{ kind: 'invoice', applied: true, version: 4 }, { kind: 'default', id: '17', applied: true }]);

    expect((await get('/records/17?kind=order')).json()).toMatchObject({ kind: 'order', id: '17', version: 3, data: { total: 5 } });
    expect((await get('/records/17?kind=invoice&history=1')).json()).toMatchObject({ kind: 'invoice', version: 4, history: [{ version: 3 }, { version: 4 }] });
    expect((await get('/records/17')).json()).toMatchObject({ kind: 'default', data: { plain: true } });
    expect(await client.getRecord('17', { kind: 'order' })).toMatchObject({ kind: 'order', version: 3 });
    expect(await client.upsert({ kind: 'order', id: '17', data: { total: 6 }, version: 5 })).toMatchObject({ kind: 'order', applied: true, version: 5 });

    // The event log keeps each message's kind.
    const { rows } = await db.pool.query(`SELECT kind, count(*)::int AS n FROM rowfleet.event_log WHERE record_id = '17' GROUP BY kind ORDER BY kind`);
    expect(rows).toEqual([{ kind: 'default', n: 1 }, { kind: 'invoice', n: 2 }, { kind: 'order', n: 3 }]);
  });

  it('deletes one kind\'s record and leaves the other kind\'s', async () => {
    await upsertMessages(db.pool, [msg({ kind: 'order', id: 'del-1', data: {} }), msg({ kind: 'invoice', id: 'del-1', data: {} })]);
    expect((await app.inject({ method: 'DELETE', url: '/records/del-1?kind=order' })).json()).toMatchObject({ kind: 'order', id: 'del-1', deleted: true });
    expect(await row('order', 'del-1')).toMatchObject({ status: 'DELETED' });
    expect(await row('invoice', 'del-1')).toMatchObject({ status: 'COMPLETED' });
    expect(await client.deleteRecord('del-1', { kind: 'invoice' })).toMatchObject({ kind: 'invoice', id: 'del-1' });
    const missing = await app.inject({ method: 'DELETE', url: '/records/del-1?kind=customer' });
    expect(missing.statusCode).toBe(404);
  });

  it('refuses a bad kind with a 400 (or MessageError) naming it, and writes nothing', async () => {
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log`)).rows[0].n;
    for (const kind of ['Order', '', '1st', 'a/b', 'x'.repeat(64), 7]) {
      const res = await post({ kind, id: 'bad-kind', data: {} });
      expect(res.statusCode).toBe(400);
      expect(res.json().message).toMatch(/^kind must be a kind name: a lower-case letter/);
    }
    const inBatch = await post({ items: [{ id: 'ok', data: {} }, { kind: 'Bad', id: 'bad', data: {} }] });
    expect(inBatch.statusCode).toBe(400);
    expect(inBatch.json().message).toMatch(/^items\[1\]\.kind must be a kind name/);
    expect((await get('/records/17?kind=NO')).statusCode).toBe(400);
    await expect(client.upsert({ kind: 'NO', id: 'x', data: {} })).rejects.toThrow(MessageError);
    await expect(client.getRecord('17', { kind: 'NO' })).rejects.toThrow(/^kind must be a kind name/);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log`)).rows[0].n).toBe(before);
  });
});

describe('the CLI takes --kind', () => {
  it('upsert, inspect, requeue, delete and status, each for the kind given', async () => {
    const up = await rowfleet(env, 'upsert', 'c-1', '{"n": 1}', '--kind', 'cli.order', '--version', '2');
    expect(up.error).toBeUndefined();
    expect(JSON.parse(up.stdout)).toEqual({ kind: 'cli.order', id: 'c-1', applied: true, version: 2, reason: 'applied' });
    const inspect = await rowfleet(env, 'inspect', 'c-1', '--kind', 'cli.order', '--json');
    expect(JSON.parse(inspect.stdout).record).toMatchObject({ kind: 'cli.order', id: 'c-1', version: 2 });
    const wrongKind = await rowfleet(env, 'inspect', 'c-1');
    expect((wrongKind.error as Error).message).toBe('no record "c-1" of kind default; check the id and --kind (rowfleet status shows the kinds that exist)');

    // Two FAILED records of two kinds: requeue --kind moves one kind's only.
    await upsertMessages(db.pool, [msg({ kind: 'cli.invoice', id: 'c-1', data: {} })]);
    await db.pool.query(`UPDATE rowfleet.records SET status = 'FAILED', last_error = 'boom' WHERE id = 'c-1'`);
    const dry = await rowfleet(env, 'requeue', '--kind', 'cli.invoice', '--dry-run');
    expect(dry.stdout).toMatch(/^cli\.invoice\tc-1\tFAILED\t/);
    const requeued = await rowfleet(env, 'requeue', '--kind', 'cli.invoice', '--json');
    expect(JSON.parse(requeued.stdout)).toMatchObject({ matched: 1, requeued: 1 });
    expect(await row('cli.invoice', 'c-1')).toMatchObject({ status: 'COMPLETED' });
    expect(await row('cli.order', 'c-1')).toMatchObject({ status: 'FAILED' });

    const status = JSON.parse((await rowfleet(env, 'status', '--kind', 'cli.order,cli.invoice', '--json')).stdout);
    expect(status.kindFilter).toEqual(['cli.order', 'cli.invoice']);
    expect(status.kinds).toEqual([
      { kind: 'cli.invoice', counts: { COMPLETED: 1, PROCESSING: 0, PROCESSED: 0, FAILED: 0, DELETED: 0 }, due: 1, oldestDueAgeSeconds: expect.any(Number) },
      { kind: 'cli.order', counts: { COMPLETED: 0, PROCESSING: 0, PROCESSED: 0, FAILED: 1, DELETED: 0 }, due: 0, oldestDueAgeSeconds: 0 },
    ]);
    expect(status.counts).toMatchObject({ COMPLETED: 1, FAILED: 1 });
    // GET /stats answers the same JSON, with the same filter (as a list or repeated).
    for (const url of ['/stats?kind=cli.order,cli.invoice', '/stats?kind=cli.order&kind=cli.invoice']) {
      const stats = await get(url);
      expect(stats.statusCode, url).toBe(200);
      const { at: _at, ...fromApi } = stats.json();
      const { at: _cliAt, ...fromCli } = status;
      expect(fromApi, url).toEqual({ ...fromCli, kinds: fromCli.kinds.map((k: { oldestDueAgeSeconds: number }) => ({ ...k, oldestDueAgeSeconds: expect.any(Number) })), oldestDueAgeSeconds: expect.any(Number) });
    }
    const all = (await get('/stats')).json();
    expect(all.kindFilter).toBeUndefined();
    expect(all.kinds.map((k: { kind: string }) => k.kind)).toEqual(expect.arrayContaining(['cli.invoice', 'cli.order']));
    for (const bad of ['/stats?kind=NOPE', '/stats?kind=a,,b', '/stats?kind=']) {
      const res = await get(bad);
      expect(res.statusCode, bad).toBe(400);
      expect(res.json(), bad).toMatchObject({ error: 'invalid_request', field: 'kind' });
    }
    const table = (await rowfleet(env, 'status', '--kind', 'cli.order')).stdout;
    expect(table).toMatch(/^kinds \(cli\.order\)\n {2}cli\.order {2}COMPLETED 0 {2}PROCESSING 0 {2}PROCESSED 0 {2}FAILED 1 {2}DELETED 0 {3}due 0$/m);

    const deleted = await rowfleet(env, 'delete', '--kind', 'cli.order', '--json');
    expect(JSON.parse(deleted.stdout)).toMatchObject({ matched: 1, deleted: 1 });
    expect(await row('cli.invoice', 'c-1')).toMatchObject({ status: 'COMPLETED' });
  });

  it('refuses a bad --kind as a usage error naming it', async () => {
    for (const args of [['upsert', 'x', '{}', '--kind', 'BAD'], ['inspect', 'x', '--kind', 'a b'], ['requeue', '--kind', 'ok,NOPE'], ['status', '--kind', ','], ['worker', '--handler', 'noop', '--kinds', 'Bad']]) {
      const run = await rowfleet(env, ...args);
      expect(run.error, args.join(' ')).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toMatch(/--kinds?\b.*(kind name|at least one kind)/);
    }
  });
});

describe('the claim shares a batch fairly among kinds', () => {
  beforeEach(async () => {
    await settleAll(db.pool);
  });

  it('a flood of one kind leaves room for the others; a kind with less leaves its share to the rest', async () => {
    await upsertMessages(db.pool, Array.from({ length: 200 }, (_, i) => msg({ kind: 'flood', id: `f-${i}`, data: {} })));
    await upsertMessages(db.pool, Array.from({ length: 3 }, (_, i) => msg({ kind: 'trickle', id: `t-${i}`, data: {} })));
    const claimed = await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 60_000 });
    const byKind = Map.groupBy(claimed, (c) => c.kind);
    expect(byKind.get('trickle')?.length).toBe(3);
    expect(byKind.get('flood')?.length).toBe(7);
    // With caps: at most 2 of the flood, whatever is left.
    const capped = await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 60_000, kinds: [{ kind: 'flood', cap: 2, leaseMs: 60_000 }, { kind: 'none', cap: 10, leaseMs: 60_000 }] });
    expect(capped.map((c) => c.kind)).toEqual(['flood', 'flood']);
    // Only the kinds asked for.
    expect(await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 60_000, kinds: [{ kind: 'trickle', cap: 10, leaseMs: 60_000 }] })).toEqual([]);
  });

  it('each kind under its own lease', async () => {
    await upsertMessages(db.pool, [msg({ kind: 'short', id: 's', data: {} }), msg({ kind: 'long', id: 'l', data: {} })]);
    await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 0, kinds: [{ kind: 'short', cap: 10, leaseMs: 1_000 }, { kind: 'long', cap: 10, leaseMs: 600_000 }] });
    const { rows } = await db.pool.query(`SELECT kind, round(extract(epoch FROM lease_expires_at - updated_at))::int AS s FROM rowfleet.records WHERE id IN ('s', 'l') ORDER BY kind`);
    expect(rows).toEqual([{ kind: 'long', s: 600 }, { kind: 'short', s: 1 }]);
  });

  it('shareOut (the boss engine\'s) gives the same shares, starting at the turn', async () => {
    const due = new Map([['a', 100], ['b', 3], ['c', 100]]);
    const share = async (turn: number, limit: number) => {
      const got = new Map<string, number>();
      const left = new Map(due);
      await shareOut(['a', 'b', 'c'].map((kind) => ({ kind, cap: kind === 'c' ? 2 : limit, leaseMs: 1 })), limit, turn, async (s, n) => {
        const take = Math.min(n, left.get(s.kind)!);
        left.set(s.kind, left.get(s.kind)! - take);
        got.set(s.kind, (got.get(s.kind) ?? 0) + take);
        return take;
      });
      return Object.fromEntries(got);
    };
    expect(await share(0, 12)).toEqual({ a: 7, b: 3, c: 2 });
    expect(await share(1, 3)).toEqual({ b: 1, c: 1, a: 1 });
  });
});

const runWorker = (handler: HandlerExport, until: () => Promise<unknown>, overrides: Partial<WorkerOptions> = {}, engine?: Engine) =>
  runWorkerUntil(db, handler, until, overrides, engine);

describe('a worker with a handler map', () => {
  beforeEach(async () => {
    await settleAll(db.pool);
  });

  it('runs each kind\'s handler, never claims a kind it has no handler for, and --kinds narrows the map', async () => {
    const seen: HandlerRecord[] = [];
    const keys: string[] = [];
    const record: Handler = async (r, ctx) => {
      seen.push(r);
      keys.push(ctx.idempotencyKey);
      return { kind: r.kind };
    };
    await upsertMessages(db.pool, [msg({ kind: 'm.a', id: '1', data: {} }), msg({ kind: 'm.b', id: '1', data: {} }), msg({ kind: 'm.other', id: '1', data: {} })]);
    await runWorker({ 'm.a': record, 'm.b': { handler: record } }, () => waitFor(async () => (await row('m.b', '1'))?.status === 'PROCESSED' && (await row('m.a', '1'))?.status === 'PROCESSED', 10_000, 'm.a/1 and m.b/1 processed'));
    expect(seen.map((r) => r.kind).sort()).toEqual(['m.a', 'm.b']);
    expect(keys.sort()).toEqual([`m.a:1:${seen.find((r) => r.kind === 'm.a')!.version}`, `m.b:1:${seen.find((r) => r.kind === 'm.b')!.version}`]);
    expect(await row('m.other', '1')).toMatchObject({ status: 'COMPLETED', attempts: 0 });

    await upsertMessages(db.pool, [msg({ kind: 'm.a', id: '2', data: {} }), msg({ kind: 'm.b', id: '2', data: {} })]);
    seen.length = 0;
    await runWorker({ 'm.a': record, 'm.b': record }, () => waitFor(async () => (await row('m.b', '2'))?.status === 'PROCESSED', 10_000, 'm.b/2 processed'), { kinds: ['m.b'] });
    expect(seen.map((r) => r.kind)).toEqual(['m.b']);
    expect(await row('m.a', '2')).toMatchObject({ status: 'COMPLETED' });
    expect(() => new Worker({ ...({} as WorkerOptions), handler: handlerFromExport({ 'm.a': record }, 'map.js', false), kinds: ['m.a', 'm.c'], log: silentLogger })).toThrow(
      'the handler map.js has no handler for it (it handles m.a)',
    );
  });

  it('holds a kind to its own concurrency within the worker\'s, while other kinds use the rest', async () => {
    let slow = 0;
    let slowPeak = 0;
    let fastDone = 0;
    const slowHandler: Handler = async () => {
      slowPeak = Math.max(slowPeak, ++slow);
      await new Promise((resolve) => setTimeout(resolve, 30));
      slow -= 1;
      return null;
    };
    await upsertMessages(db.pool, Array.from({ length: 12 }, (_, i) => msg({ kind: 'c.slow', id: `${i}`, data: {} })));
    await upsertMessages(db.pool, Array.from({ length: 40 }, (_, i) => msg({ kind: 'c.fast', id: `${i}`, data: {} })));
    await runWorker(
      { 'c.slow': { handler: slowHandler, concurrency: 2 }, 'c.fast': async () => (fastDone += 1) },
      () => waitFor(async () => (await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE kind LIKE 'c.%' AND status <> 'PROCESSED'`)).rows[0].n === 0, 20_000, 'every c.* record processed'),
    );
    expect(slowPeak).toBe(2);
    expect(fastDone).toBe(40);
  });

  it('applies a kind\'s own maxAttempts and backoff; the others keep the worker\'s', async () => {
    const failing: Handler = async () => {
      throw new Error('nope');
    };
    await upsertMessages(db.pool, [msg({ kind: 'p.strict', id: '1', data: {} }), msg({ kind: 'p.lenient', id: '1', data: {} })]);
    await runWorker(
      { 'p.strict': { handler: failing, maxAttempts: 1 }, 'p.lenient': { handler: failing, backoff: { base: '1h', cap: '1h' } } },
      () => waitFor(async () => (await row('p.strict', '1'))?.status === 'FAILED' && (await row('p.lenient', '1'))?.attempts === 1, 10_000, 'p.strict FAILED and p.lenient retried'),
      // The jitter in the middle: half the hour (full jitter could draw under a minute, 1 in 60).
      { random: () => 0.5 },
    );
    expect(await row('p.strict', '1')).toMatchObject({ status: 'FAILED', attempts: 1 });
    // One attempt, then a retry an hour away (the worker's backoff is 0).
    expect(await row('p.lenient', '1')).toMatchObject({ status: 'COMPLETED', attempts: 1 });
    const { rows } = await db.pool.query(`SELECT run_after > now() + interval '1 minute' AS later FROM rowfleet.records WHERE kind = 'p.lenient'`);
    expect(rows).toEqual([{ later: true }]);
  });

  it('createWorker takes a map; a bad map is a usage error naming the kind and the option', async () => {
    await upsertMessages(db.pool, [msg({ kind: 'lib.a', id: '1', data: { n: 2 } })]);
    const worker = createWorker({ databaseUrl: db.url, handler: { 'lib.a': async (r) => ({ doubled: (r.data as { n: number }).n * 2 }) }, pollMs: 50 });
    void worker.start();
    await waitFor(async () => (await row('lib.a', '1'))?.status === 'PROCESSED', 10_000, 'lib.a/1 processed');
    await worker.stop();
    expect(await client.getRecord('1', { kind: 'lib.a' })).toMatchObject({ result: { doubled: 4 } });

    const bad = (handler: unknown) => () => handlerFromExport(handler, 'h', false, 'handler.js');
    expect(bad({})).toThrow('handler.js: the handler map is empty; map at least one kind to a handler');
    expect(bad({ Orders: async () => null })).toThrow(/^handler\.js: kind "Orders" is not a kind name/);
    expect(bad({ order: 'nope' })).toThrow('handler.js: kind "order" must map to a handler function or to { handler: async (record, ctx) => result, ...options }');
    expect(bad({ order: { handler: async () => null, retries: 3 } })).toThrow(/^handler\.js: kind "order": retries is not a kind option/);
    expect(bad({ order: { handler: async () => null, concurrency: 0 } })).toThrow('handler.js: kind "order": concurrency must be a whole number from 1 to 10000, got 0');
    expect(bad({ order: { handler: async () => null, lease: 'soon' } })).toThrow(/^handler\.js: kind "order": lease must be a duration like 30s/);
    expect(bad({ order: { handler: async () => null, backoff: { base: '1m', cap: '1s' } } })).toThrow(/backoff\.cap \(1000 ms\) must not be below backoff\.base/);
    expect(bad(42)).toThrow(/^handler\.js must default-export an async function/);
  });
});

describe('the boss engine keeps a queue per kind', () => {
  const b = loadConfig({}).boss;
  let boss: PgBoss;
  beforeAll(async () => {
    boss = await startBoss({ config: b, pool: db.pool, role: 'worker', log: silentLogger });
  });
  afterAll(async () => {
    if (boss) await stopBoss(boss);
  });

  it('sweeps each kind into its own queue, and a worker fetches only its kinds\' jobs', async () => {
    await settleAll(db.pool);
    await upsertMessages(db.pool, [msg({ kind: 'q.one', id: '1', data: {} }), msg({ kind: 'q.two', id: '1', data: {} }), msg({ id: 'q-default', data: {} })]);
    const queues = new KindQueues(boss, db.pool, b.queue, b.schema);
    expect(await sweep(db.pool, boss, { queue: b.queue, schema: b.schema, batch: 100 }, queues)).toMatchObject({ enqueued: 3 });
    const { rows } = await db.pool.query(`SELECT name, singleton_key AS key FROM pgboss.job WHERE state = 'created' AND singleton_key IN ('1', 'q-default') ORDER BY name`);
    expect(rows).toEqual([
      { name: b.queue, key: 'q-default' },
      { name: `${b.queue}.q.one`, key: '1' },
      { name: `${b.queue}.q.two`, key: '1' },
    ]);
    expect(await queues.list(0)).toEqual(expect.arrayContaining(['default', 'q.one', 'q.two']));

    const seen: string[] = [];
    await runWorker(
      { 'q.two': async (r) => seen.push(`${r.kind}/${r.id}`) },
      () => waitFor(async () => (await row('q.two', '1'))?.status === 'PROCESSED', 10_000, 'q.two/1 processed'),
      {},
      bossEngine(db.pool, boss, b.queue, b.schema),
    );
    expect(seen).toEqual(['q.two/1']);
    expect(await row('q.one', '1')).toMatchObject({ status: 'COMPLETED' });
    // q.one's job is still waiting for a worker of its kind.
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'created'`, [`${b.queue}.q.one`])).rows[0].n).toBe(1);
  });
});
