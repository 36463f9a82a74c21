/**
 * Mode every (`rowfleet kinds set <kind> --mode every`): each applied message of a record is handed
 * to the handler once, one at a time per record, in version order, while records run in parallel;
 * a failure retries that message, and exhausted blocks only its own record until a requeue; stale
 * messages are never handed out; the mode and policies live in the database for every process.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { PgBoss } from 'pg-boss';
import type { TestDatabase } from './helpers/database.ts';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { rowfleet } from './helpers/cli.ts';
import { settleAll } from './helpers/records.ts';
import { waitFor } from './helpers/wait.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { UsageError, type HandlerRecord } from '../src/index.ts';
import { parseMessage, type MessageInput } from '../src/records/message.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { claimDue } from '../src/records/claim.ts';
import { complete, completeChaining, fail } from '../src/records/settle.ts';
import { setKind } from '../src/records/kinds.ts';
import { applyRetention } from '../src/records/retention.ts';
import { latestTick, writeRecurring } from '../src/scheduler/recurring.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { handlerFromExport, type HandlerExport } from '../src/worker/handler.ts';
import { Execution } from '../src/worker/execution.ts';
import { heartbeat } from '../src/worker/heartbeat.ts';
import { bossEngine, type Engine } from '../src/worker/engine.ts';
import { CHAIN_LIMIT, type WorkerOptions } from '../src/worker/worker.ts';
import { KindQueues, startBoss, stopBoss } from '../src/boss/boss.ts';
import { sweep } from '../src/boss/sweep.ts';

let surfaces: Surfaces;
let db: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  surfaces = await openSurfaces();
  ({ db, env } = surfaces);
});
afterAll(async () => {
  await surfaces?.close();
});
beforeEach(async () => {
  await settleAll(db.pool);
});

const msg = (input: MessageInput) => parseMessage(input, { maxDepth: 64 });
/** Messages to one record, one call each (server-assigned versions, in this order). */
async function send(kind: string, id: string, values: readonly number[]): Promise<void> {
  for (const n of values) await upsertMessages(db.pool, [msg({ kind, id, data: { n } })]);
}
async function row(kind: string, id: string): Promise<{ status: string; version: string; processed_version: string | null; next_seq: string | null; attempts: number; result: unknown }> {
  return (await db.pool.query(`SELECT status, version, processed_version, next_seq, attempts, result FROM rowfleet.records WHERE kind = $1 AND id = $2`, [kind, id])).rows[0];
}
const every = (kind: string) => setKind(db.pool, kind, { mode: 'every' });
const claimOne = (kind: string) => claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 60_000, kinds: [{ kind, cap: 1, leaseMs: 60_000 }] });

const runWorker = (handler: HandlerExport, until: () => Promise<unknown>, overrides: Partial<WorkerOptions> = {}, engine?: Engine) =>
  runWorkerUntil(db, handler, until, overrides, engine);

describe('the claim and the completion in mode every', () => {
  it('hands out each message in turn, with its own version and data, and moves on at each completion', async () => {
    await every('e.basic');
    await send('e.basic', 'a', [1, 2, 3]);
    const seen: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const [c] = await claimOne('e.basic');
      expect(c).toMatchObject({ kind: 'e.basic', id: 'a', data: { n: i + 1 }, seq: expect.any(String) });
      // One at a time: while it is held, nothing else of the record is claimable.
      expect(await claimOne('e.basic')).toEqual([]);
      seen.push(c!.data);
      expect((await complete(db.pool, [{ ...c!, result: { done: i + 1 } }])).get('e.basic/a')).toBe(i < 2 ? 'advanced' : 'processed');
    }
    expect(seen).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    const done = await row('e.basic', 'a');
    expect(done).toMatchObject({ status: 'PROCESSED', next_seq: null, result: { done: 3 } });
    expect(done.processed_version).toBe(done.version);
    expect(await claimOne('e.basic')).toEqual([]);
  });

  it('a message arriving while one is handled waits its turn; a stale one is never handed out', async () => {
    await every('e.late');
    await upsertMessages(db.pool, [msg({ kind: 'e.late', id: 'a', data: { v: 1 }, version: 1 })]);
    const [first] = await claimOne('e.late');
    await upsertMessages(db.pool, [msg({ kind: 'e.late', id: 'a', data: { v: 3 }, version: 3 }), msg({ kind: 'e.late', id: 'a', data: { v: 2 }, version: 2 })]);
    expect(await complete(db.pool, [{ ...first!, result: null }])).toEqual(new Map([['e.late/a', 'advanced']]));
    const [second] = await claimOne('e.late');
    expect(second).toMatchObject({ version: '3', data: { v: 3 } });
    expect((await complete(db.pool, [{ ...second!, result: null }])).get('e.late/a')).toBe('processed');
  });

  it('a failure retries the same message; exhausted, the record is FAILED at it and its successors wait, until a requeue resumes', async () => {
    await every('e.fail');
    await send('e.fail', 'a', [1, 2]);
    await send('e.fail', 'b', [1]);
    const [a1] = await claimOne('e.fail');
    expect(a1).toMatchObject({ id: 'a', data: { n: 1 } });
    // A newer message does not supersede the one that failed: it is retried.
    expect(await fail(db.pool, { ...a1!, error: 'boom', permanent: false, maxAttempts: 2, backoffMs: 0 })).toBe('retry');
    const again = (await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 60_000, kinds: [{ kind: 'e.fail', cap: 10, leaseMs: 60_000 }] })).find((c) => c.id === 'a');
    expect(again).toMatchObject({ data: { n: 1 }, attempts: 2, seq: a1!.seq });
    expect(await fail(db.pool, { ...again!, error: 'boom', permanent: false, maxAttempts: 2, backoffMs: 0 })).toBe('failed');
    const failed = await row('e.fail', 'a');
    expect(failed).toMatchObject({ status: 'FAILED', next_seq: a1!.seq });
    // New messages keep it FAILED; another record is not blocked (b was claimed above, unaffected).
    await send('e.fail', 'a', [3]);
    expect(await row('e.fail', 'a')).toMatchObject({ status: 'FAILED', next_seq: a1!.seq });
    const requeued = await rowfleet(env, 'requeue', '--kind', 'e.fail', '--json');
    expect(JSON.parse(requeued.stdout)).toMatchObject({ requeued: 1 });
    const order: unknown[] = [];
    for (;;) {
      const [c] = await claimOne('e.fail');
      if (c === undefined) break;
      order.push(c.data);
      await complete(db.pool, [{ ...c, result: null }]);
    }
    expect(order).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
  });

  it('a completion may hand the next message straight back (chained), under a new lease, as a claim would', async () => {
    await every('e.chain');
    await send('e.chain', 'a', [1, 2, 3]);
    const [c1] = await claimOne('e.chain');
    const first = (await completeChaining(db.pool, [{ ...c1!, result: { done: 1 }, chainLeaseMs: 60_000 }])).get('e.chain/a')!;
    expect(first.outcome).toBe('chained');
    const c2 = first.next!;
    expect(c2).toMatchObject({ kind: 'e.chain', id: 'a', data: { n: 2 }, attempts: 1, priority: 0 });
    expect(BigInt(c2.version)).toBeGreaterThan(BigInt(c1!.version));
    expect(BigInt(c2.seq!)).toBeGreaterThan(BigInt(c1!.seq!));
    expect(c2.leaseToken).not.toBe(c1!.leaseToken);
    // Held: the first result is stored, nothing is claimable, and the first lease is gone.
    expect(await row('e.chain', 'a')).toMatchObject({ status: 'PROCESSING', processed_version: c1!.version, result: { done: 1 }, attempts: 1 });
    const { rows } = await db.pool.query(`SELECT lease_owner, lease_expires_at > now() + interval '50 seconds' AS long FROM rowfleet.records WHERE kind = 'e.chain' AND id = 'a'`);
    expect(rows[0]).toEqual({ lease_owner: 'w', long: true });
    expect(await claimOne('e.chain')).toEqual([]);
    expect((await complete(db.pool, [{ ...c1!, result: 'late' }])).get('e.chain/a')).toBe('lost');
    const second = (await completeChaining(db.pool, [{ ...c2, result: { done: 2 }, chainLeaseMs: 60_000 }])).get('e.chain/a')!;
    expect(second).toMatchObject({ outcome: 'chained', next: { data: { n: 3 } } });
    // The last message: nothing to chain to.
    expect((await completeChaining(db.pool, [{ ...second.next!, result: { done: 3 }, chainLeaseMs: 60_000 }])).get('e.chain/a')).toEqual({ outcome: 'processed' });
    expect(await row('e.chain', 'a')).toMatchObject({ status: 'PROCESSED', next_seq: null, result: { done: 3 } });
  });

  it('does not chain past a higher priority waiting in the kind, nor to a message not yet due, nor in mode latest', async () => {
    await every('e.nochain');
    await send('e.nochain', 'a', [1]);
    const [a1] = await claimOne('e.nochain');
    await upsertMessages(db.pool, [msg({ kind: 'e.nochain', id: 'a', data: { n: 2 } }), msg({ kind: 'e.nochain', id: 'b', data: { n: 1 }, priority: 5 })]);
    expect((await completeChaining(db.pool, [{ ...a1!, result: null, chainLeaseMs: 60_000 }])).get('e.nochain/a')).toEqual({ outcome: 'advanced' });
    expect(await row('e.nochain', 'a')).toMatchObject({ status: 'COMPLETED', attempts: 0 });
    // b first (priority 5), then a.
    const [b1] = await claimOne('e.nochain');
    expect(b1).toMatchObject({ id: 'b' });
    const [a2] = await claimOne('e.nochain');
    expect(a2).toMatchObject({ id: 'a', data: { n: 2 } });
    // A message due in an hour (the record's runAt is the latest message's): back in line, not handed out now.
    await upsertMessages(db.pool, [msg({ kind: 'e.nochain', id: 'a', data: { n: 3 }, runAt: new Date(Date.now() + 3_600_000).toISOString() })]);
    expect((await completeChaining(db.pool, [{ ...a2!, result: null, chainLeaseMs: 60_000 }])).get('e.nochain/a')).toEqual({ outcome: 'advanced' });
    expect(await claimOne('e.nochain')).toEqual([]);
    // Mode latest: a newer version supersedes, and is claimed again, not chained.
    await upsertMessages(db.pool, [msg({ kind: 'e.latest', id: 'x', data: { n: 1 } })]);
    const [x1] = await claimOne('e.latest');
    await upsertMessages(db.pool, [msg({ kind: 'e.latest', id: 'x', data: { n: 2 } })]);
    expect((await completeChaining(db.pool, [{ ...x1!, result: null, chainLeaseMs: 60_000 }])).get('e.latest/x')).toEqual({ outcome: 'superseded' });
  });

  it('the events of a failed message name its version, not the record\'s newest', async () => {
    await every('e.events');
    await send('e.events', 'a', [1, 2]);
    const [c] = await claimOne('e.events');
    await fail(db.pool, { ...c!, error: 'nope', permanent: true, maxAttempts: 5, backoffMs: 0 });
    const { rows } = await db.pool.query(`SELECT version, reason FROM rowfleet.event_log WHERE kind = 'e.events' AND NOT applied`);
    expect(rows).toEqual([{ version: c!.version, reason: 'failed' }]);
  });
});

describe('a worker in mode every', () => {
  it('processes every message of every record once, in order per record, records in parallel', async () => {
    await every('e.run');
    const ids = ['a', 'b', 'c', 'd'];
    for (const n of [1, 2, 3, 4, 5]) await upsertMessages(db.pool, ids.map((id) => msg({ kind: 'e.run', id, data: { n } })));
    const seen = new Map<string, number[]>();
    const running = new Set<string>();
    let overlap = false;
    let parallel = 0;
    await runWorker(
      {
        'e.run': async (r: HandlerRecord) => {
          if (running.has(r.id)) overlap = true;
          running.add(r.id);
          parallel = Math.max(parallel, running.size);
          await new Promise((resolve) => setTimeout(resolve, 5));
          seen.set(r.id, [...(seen.get(r.id) ?? []), (r.data as { n: number }).n]);
          running.delete(r.id);
          return { n: (r.data as { n: number }).n };
        },
      },
      () => waitFor(async () => (await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE kind = 'e.run' AND status <> 'PROCESSED'`)).rows[0].n === 0, 20_000, 'every e.run message processed'),
    );
    for (const id of ids) expect(seen.get(id), id).toEqual([1, 2, 3, 4, 5]);
    expect(overlap).toBe(false);
    expect(parallel).toBeGreaterThan(1);
    expect(await row('e.run', 'a')).toMatchObject({ status: 'PROCESSED', result: { n: 5 } });
  });

  it(`goes through a record's messages without a claim each, ${CHAIN_LIMIT} in a row at most, then puts it back in line`, async () => {
    await every('e.limit');
    const count = CHAIN_LIMIT + 20;
    await send('e.limit', 'a', Array.from({ length: count }, (_, i) => i + 1));
    const seen: number[] = [];
    const worker = await runWorker({ 'e.limit': async (r) => seen.push((r.data as { n: number }).n) }, () =>
      waitFor(async () => (await row('e.limit', 'a'))?.status === 'PROCESSED', 20_000, 'e.limit/a processed'),
    );
    expect(seen).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    // Claimed twice: message 1, and message CHAIN_LIMIT + 1 after the record went back in line.
    expect(worker.stats).toMatchObject({ processed: count, chained: count - 2 });
  });

  it('through the boss engine: messages are chained, and one that is not gets its job as the previous one completes', async () => {
    const b = loadConfig({}).boss;
    const boss: PgBoss = await startBoss({ config: b, pool: db.pool, role: 'worker', log: silentLogger });
    try {
      await every('e.boss');
      await send('e.boss', 'a', [1, 2, 3, 4]);
      await sweep(db.pool, boss, { queue: b.queue, schema: b.schema, batch: 100 }, new KindQueues(boss, db.pool, b.queue, b.schema));
      const seen: number[] = [];
      const worker = await runWorker(
        {
          'e.boss': async (r) => {
            const n = (r.data as { n: number }).n;
            seen.push(n);
            // A record of higher priority waits when message 2 completes: message 3 is not chained
            // (z has no job: nothing sweeps here, so it stays waiting).
            if (r.id === 'a' && n === 2) await upsertMessages(db.pool, [msg({ kind: 'e.boss', id: 'z', data: { n: 0 }, priority: 1 })]);
          },
        },
        () => waitFor(async () => (await row('e.boss', 'a'))?.status === 'PROCESSED', 10_000, 'e.boss/a processed'),
        {},
        bossEngine(db.pool, boss, b.queue, b.schema),
      );
      expect(seen).toEqual([1, 2, 3, 4]);
      expect(worker.stats.chained).toBe(1);
    } finally {
      await stopBoss(boss);
    }
  });
});

describe('the heartbeat', () => {
  it('aborts the execution whose lease it found gone, not a newer one of the same record', async () => {
    await every('e.beat');
    await send('e.beat', 'a', [1, 2]);
    const [first] = await claimOne('e.beat');
    const handler = handlerFromExport(async () => null, 'test', false);
    const policy = { concurrency: undefined, maxAttempts: 3, backoff: { baseMs: 0, capMs: 0 }, leaseMs: 60_000, timeoutMs: 60_000 };
    const old = new Execution(first!, 0, handler.any!, policy);
    const active = new Map([['e.beat/a', old]]);
    // The first message completes and the same worker claims the next one while a heartbeat that
    // still counts the first is in flight.
    expect((await complete(db.pool, [{ ...first!, result: null }])).get('e.beat/a')).toBe('advanced');
    const [second] = await claimOne('e.beat');
    const current = new Execution(second!, 1, handler.any!, policy);
    const beating = heartbeat(active, null, { pool: db.pool, workerId: 'w', log: silentLogger, monotonic: () => 0, warn: () => {} });
    // Replaced before the heartbeat's statement answers (it took its list of leases as it began).
    active.set('e.beat/a', current);
    await beating;
    expect(old.lost).toBe(true);
    expect(current.lost).toBe(false);
  });
});

describe('rowfleet kinds', () => {
  it('sets and lists modes and policies; workers apply them over the map and the flags', async () => {
    const set = await rowfleet(env, 'kinds', 'set', 'k.policy', '--max-attempts', '1', '--lease', '2m', '--json');
    expect(set.error).toBeUndefined();
    expect(JSON.parse(set.stdout)).toMatchObject({ kind: 'k.policy', mode: 'latest', maxAttempts: 1, leaseMs: 120_000, configured: true, released: 0 });
    await upsertMessages(db.pool, [msg({ kind: 'k.policy', id: 'a', data: {} }), msg({ kind: 'k.unset', id: 'a', data: {} })]);
    const listed = JSON.parse((await rowfleet(env, 'kinds', 'list', '--json')).stdout) as { kind: string }[];
    expect(listed.find((k) => k.kind === 'k.policy')).toMatchObject({ mode: 'latest', maxAttempts: 1, leaseMs: 120_000, configured: true });
    expect(listed.find((k) => k.kind === 'k.unset')).toMatchObject({ mode: 'latest', configured: false });
    expect((await rowfleet(env, 'kinds', 'list')).stdout).toMatch(/^k\.policy\tmode latest {2}max-attempts 1 {2}lease 120000ms$/m);

    // The map says 5 attempts and a 30 s lease (the flags' too): the stored 1 attempt and 2 minutes win.
    await upsertMessages(db.pool, [msg({ kind: 'k.policy', id: 'lease', data: {} })]);
    const leaseOf = async (id: string) =>
      (await db.pool.query(`SELECT round(extract(epoch FROM lease_expires_at - updated_at))::int AS s FROM rowfleet.records WHERE kind = 'k.policy' AND id = $1`, [id])).rows[0].s;
    await runWorker(
      { 'k.policy': { handler: async (r) => (r.id === 'lease' ? { leaseSeconds: await leaseOf('lease') } : Promise.reject(new Error('no'))), maxAttempts: 5, lease: '30s' } },
      () => waitFor(async () => (await row('k.policy', 'a'))?.status === 'FAILED' && (await row('k.policy', 'lease'))?.status === 'PROCESSED', 10_000, 'k.policy/a FAILED'),
    );
    expect(await row('k.policy', 'a')).toMatchObject({ status: 'FAILED', attempts: 1 });
    expect(await row('k.policy', 'lease')).toMatchObject({ result: { leaseSeconds: 120 } });
    // One function for every kind: the claim takes each kind's stored lease itself.
    await settleAll(db.pool);
    await rowfleet(env, 'kinds', 'set', 'k.any', '--lease', '90s');
    await upsertMessages(db.pool, [msg({ kind: 'k.any', id: 'a', data: {} })]);
    const anyLease = async () =>
      (await db.pool.query(`SELECT round(extract(epoch FROM lease_expires_at - updated_at))::int AS s FROM rowfleet.records WHERE kind = 'k.any'`)).rows[0].s;
    await runWorker(async () => ({ leaseSeconds: await anyLease() }), () => waitFor(async () => (await row('k.any', 'a'))?.status === 'PROCESSED', 10_000, 'k.any/a processed'));
    expect(await row('k.any', 'a')).toMatchObject({ result: { leaseSeconds: 90 } });

    const cleared = await rowfleet(env, 'kinds', 'set', 'k.policy', '--max-attempts', 'none', '--json');
    expect(JSON.parse(cleared.stdout)).not.toHaveProperty('maxAttempts');
    const reset = await rowfleet(env, 'kinds', 'set', 'k.policy', '--reset', '--json');
    expect(JSON.parse(reset.stdout)).toEqual({ kind: 'k.policy', reset: true, released: 0 });
  });

  it('switching every → latest stops the waiting messages: each record is processed once more, at its newest', async () => {
    await every('k.switch');
    await send('k.switch', 'a', [1, 2, 3]);
    const switched = await rowfleet(env, 'kinds', 'set', 'k.switch', '--mode', 'latest');
    expect(switched.stdout).toBe('k.switch\tmode latest; 1 record(s) stopped waiting on a message and will be processed at their newest version\n');
    const [c] = await claimOne('k.switch');
    expect(c).toMatchObject({ data: { n: 3 }, seq: null });
    expect((await complete(db.pool, [{ ...c!, result: null }])).get('k.switch/a')).toBe('processed');
  });

  it('refuses unclear requests with a usage error naming the problem, and changes nothing', async () => {
    for (const [args, message] of [
      [['kinds', 'set', 'Bad', '--mode', 'every'], /^<kind> "Bad" is not a kind name/],
      [['kinds', 'set', 'k.x'], /^nothing to set: give --mode/],
      [['kinds', 'set', 'k.x', '--reset', '--mode', 'every'], /^--reset removes every setting; give it alone$/],
      [['kinds', 'set', 'k.x', '--max-attempts', '0'], /--max-attempts/],
      [['kinds', 'set', 'k.x', '--lease', '5'], /--lease/],
      [['kinds', 'set', 'k.x', '--backoff-base', '1m', '--backoff-cap', '1s'], /^--backoff-cap \(1000 ms\) must not be below --backoff-base \(60000 ms\)$/],
    ] as const) {
      const run = await rowfleet(env, ...args);
      expect(run.error, args.join(' ')).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toMatch(message);
    }
    // A mode not offered: commander's own error, exit 1 with the choices named.
    const badMode = await rowfleet(env, 'kinds', 'set', 'k.x', '--mode', 'all');
    expect((badMode.error as Error).message).toMatch(/option '--mode <mode>' argument 'all' is invalid\. Allowed choices are latest, every/);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.kinds WHERE kind IN ('k.x', 'Bad')`)).rows[0].n).toBe(0);
  });
});

describe('kinds in the library', () => {
  it('client.setKind and client.listKinds, checked as the CLI checks its flags', async () => {
    const { client } = surfaces;
    expect(await client.setKind('lib.kind', { mode: 'every', maxAttempts: 2, lease: '1m', every: '*/5 * * * *' })).toMatchObject({
      kind: 'lib.kind',
      mode: 'every',
      maxAttempts: 2,
      leaseMs: 60_000,
      schedule: '*/5 * * * *',
      configured: true,
    });
    expect(await client.setKind('lib.kind', { maxAttempts: null, every: null })).not.toHaveProperty('maxAttempts');
    expect((await client.listKinds()).find((k) => k.kind === 'lib.kind')).toMatchObject({ mode: 'every', leaseMs: 60_000 });
    await expect(client.setKind('Lib', { mode: 'every' })).rejects.toThrow(/^kind must be a kind name/);
    await expect(client.setKind('lib.kind', { mode: 'all' as 'every' })).rejects.toThrow('mode must be latest or every, got "all"');
    await expect(client.setKind('lib.kind', { lease: 'soon' })).rejects.toThrow(/^lease must be a duration like 30s/);
    await expect(client.setKind('lib.kind', { every: 'hourly' })).rejects.toThrow(/^every must be a cron expression/);
    await expect(client.setKind('lib.kind', { retries: 3 } as object)).rejects.toThrow(/^retries is not a kind setting/);
    await setKind(db.pool, 'lib.kind', { mode: 'latest' });
  });
});

describe('recurring kinds', () => {
  it('kinds set --every stores a checked schedule; each tick makes one record, whoever writes it', async () => {
    const set = await rowfleet(env, 'kinds', 'set', 'r.report', '--every', '0 * * * *', '--json');
    expect(JSON.parse(set.stdout)).toMatchObject({ kind: 'r.report', schedule: '0 * * * *' });
    expect((await rowfleet(env, 'kinds', 'list')).stdout).toMatch(/^r\.report\tmode latest {2}every '0 \* \* \* \*'$/m);
    for (const bad of ['sometimes', '61 * * * *', '* * *']) {
      const run = await rowfleet(env, 'kinds', 'set', 'r.report', '--every', bad);
      expect(run.error, bad).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toMatch(/^--every must be a cron expression like "0 \* \* \* \*"/);
    }
    expect(latestTick('0 * * * *', new Date('2026-12-01T18:59:59.999Z')).toISOString()).toBe('2026-12-01T18:00:00.000Z');
    expect(latestTick('0 * * * *', new Date('2026-12-01T19:00:00.000Z')).toISOString()).toBe('2026-12-01T19:00:00.000Z');

    // Two schedulers at once, at the same time: one record for the tick, written once.
    const now = new Date('2026-12-01T18:30:00Z');
    const [a, b] = await Promise.all([writeRecurring(db.pool, now, silentLogger), writeRecurring(db.pool, now, silentLogger)]);
    const mine = [...a!, ...b!].filter((t) => t.kind === 'r.report');
    expect(mine.map((t) => t.id)).toEqual(['2026-12-01T18:00:00.000Z', '2026-12-01T18:00:00.000Z']);
    expect(mine.filter((t) => t.applied)).toHaveLength(1);
    // Down for hours: only the latest tick missed, once.
    await writeRecurring(db.pool, new Date('2026-12-01T22:10:00Z'), silentLogger);
    const { rows } = await db.pool.query(`SELECT id, data FROM rowfleet.records WHERE kind = 'r.report' ORDER BY id`);
    expect(rows).toEqual([
      { id: '2026-12-01T18:00:00.000Z', data: { scheduledAt: '2026-12-01T18:00:00.000Z' } },
      { id: '2026-12-01T22:00:00.000Z', data: { scheduledAt: '2026-12-01T22:00:00.000Z' } },
    ]);
    const cleared = await rowfleet(env, 'kinds', 'set', 'r.report', '--every', 'none', '--json');
    expect(JSON.parse(cleared.stdout)).not.toHaveProperty('schedule');
  });
});

describe('the event_log retention', () => {
  it('never deletes a message still to be handled, however old', async () => {
    await every('r.keep');
    await send('r.keep', 'a', [1, 2]);
    await db.pool.query(`UPDATE rowfleet.event_log SET received_at = now() - interval '400 days' WHERE kind = 'r.keep'`);
    await applyRetention(db.pool, 30 * 24 * 3600_000);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE kind = 'r.keep'`)).rows[0].n).toBe(2);
    const [c] = await claimOne('r.keep');
    expect(c).toMatchObject({ data: { n: 1 } });
  });
});
