import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { waitFor } from './helpers/wait.ts';
import { settleAll } from './helpers/records.ts';
import { createClient, createFleet, createWorker, MessageError, PermanentError, UsageError, UserError, type RowfleetClient } from '../src/index.ts';

let db: TestDatabase;
let client: RowfleetClient;
beforeAll(async () => {
  db = await createTestDatabase();
  client = createClient({ databaseUrl: db.url, poolSize: 2 });
});
afterAll(async () => {
  await client?.close();
  await db?.drop();
});

describe('library', () => {
  it('upserts one message or a batch, with the HTTP API results', async () => {
    expect(await client.upsert({ id: 'lib-1', data: { n: 1 }, version: 2 })).toEqual({ kind: 'default', id: 'lib-1', applied: true, version: 2, reason: 'applied' });
    const results = await client.upsert([
      { id: 'lib-1', data: { n: 0 }, version: 1n },
      { id: 'lib-2', data: {}, version: '9007199254740993' },
    ]);
    expect(results).toEqual([
      { kind: 'default', id: 'lib-1', applied: false, version: 1, currentVersion: 2, reason: 'stale' },
      { kind: 'default', id: 'lib-2', applied: true, version: '9007199254740993', reason: 'applied' },
    ]);
    expect(await client.getRecord('lib-1', { history: true })).toMatchObject({ version: 2, history: [{ reason: 'applied' }, { reason: 'stale' }] });
  });

  it('sends concurrent single upserts in shared statements, each answered as if sent alone in arrival order', async () => {
    // The test's pool, counting the upsert statements that reach it.
    let statements = 0;
    const pool = new Proxy(db.pool, {
      get(target, prop, receiver) {
        if (prop !== 'query') return Reflect.get(target, prop, receiver);
        return (config: unknown, ...rest: unknown[]) => {
          if (typeof config === 'object' && config !== null && String((config as { name?: string }).name).startsWith('rowfleet_upsert_message')) statements += 1;
          return (target.query as (...a: unknown[]) => unknown)(config, ...rest);
        };
      },
    });
    const shared = createClient({ pool });
    try {
      // 40 callers at once on 8 ids: versions out of order, so some are stale behind an earlier caller.
      const versions = Array.from({ length: 40 }, (_, i) => ((i * 17) % 40) + 1);
      const results = await Promise.all(versions.map((v, i) => shared.upsert({ id: `lib-co-${i % 8}`, data: { v }, version: v })));
      expect(statements).toBeLessThan(10);
      // Arrival order is call order: a message is applied when it is newer than every earlier one for its id.
      const newest = new Map<string, number>();
      const expected = versions.map((v, i) => {
        const id = `lib-co-${i % 8}`;
        const before = newest.get(id);
        if (before !== undefined && before >= v) return { kind: 'default', id, applied: false, version: v, currentVersion: before, reason: 'stale' };
        newest.set(id, v);
        return { kind: 'default', id, applied: true, version: v, reason: 'applied' };
      });
      expect(results).toEqual(expected);
      for (const [id, v] of newest) expect(await shared.getRecord(id)).toMatchObject({ version: v, data: { v } });
    } finally {
      await shared.close();
    }
  });

  it('throws MessageError naming the field and writes nothing for a bad batch', async () => {
    await expect(client.upsert([{ id: 'lib-3', data: {} }, { id: 'lib-4', data: { s: 'a\u0000' } }])).rejects.toThrow(MessageError);
    await expect(client.upsert([{ id: 'lib-3', data: {} }, { id: 'lib-4', data: new Date() as object }])).rejects.toThrow(/items\[1\]\.data/);
    expect(await client.getRecord('lib-3')).toBeUndefined();
  });

  it('runs a worker in-process with createWorker: results stored, PermanentError fails the record, stats live while it runs', async () => {
    // Only this test's records are due.
    await settleAll(db.pool);
    const worker = createWorker({
      databaseUrl: db.url,
      concurrency: 3,
      pollMs: 50,
      handler: async (record) => {
        if ((record.data as { bad?: boolean }).bad) throw new PermanentError('bad record');
        return { doubled: (record.data as { n: number }).n * 2 };
      },
    });
    // Taken before the start: the same view, updated as the worker goes.
    const stats = worker.stats;
    expect(stats).toEqual({ processed: 0, superseded: 0, retried: 0, failed: 0, lost: 0, released: 0, rescued: 0, chained: 0 });
    const running = worker.start();
    await client.upsert([
      { id: 'w-1', data: { n: 1 } },
      { id: 'w-2', data: { n: 2 } },
      { id: 'w-3', data: { bad: true } },
    ]);
    try {
      // While it runs: the counts arrive with the completions, not when stop() resolves.
      await waitFor(() => stats.processed + stats.failed === 3, 10_000, 'the worker to count three finished records');
      expect(stats).toMatchObject({ processed: 2, failed: 1, retried: 0 });
      expect(await client.getRecord('w-2')).toMatchObject({ status: 'PROCESSED', result: { doubled: 4 } });
      expect(await client.getRecord('w-3')).toMatchObject({ status: 'FAILED', lastError: 'PermanentError: bad record' });
    } finally {
      await worker.stop();
      await running;
    }
    expect(worker.stats).toMatchObject({ processed: 2, failed: 1 });
    expect(() => Object.assign(worker.stats, { processed: 0 })).toThrow(TypeError);
  });

  it('checks options given in code as the CLI checks its flags, naming the option', () => {
    const handler = async () => null;
    for (const [options, message] of [
      [{ leaseMs: 50 }, 'leaseMs must be at least 100 ms, got "50ms"'],
      [{ concurrency: 0 }, 'concurrency must be between 1 and 10000, got 0'],
      [{ batch: 2.5 }, 'batch must be a whole number, got "2.5"'],
      [{ failRate: 3 }, 'failRate must be a number from 0 to 1, got "3"'],
      [{ pollMs: Number.NaN }, 'pollMs must be a duration with a unit (ms, s, m, h or d) like 500ms, 30s, 5m or 1h, got "NaNms"'],
    ] as const) {
      expect(() => createWorker({ handler, ...options }), JSON.stringify(options)).toThrow(new UsageError(message));
    }
    expect(() => createFleet({ handler: 'noop', concurrency: -1 })).toThrow(new UsageError('concurrency must be between 1 and 10000, got -1'));
    expect(() => createClient({ poolSize: 0 })).toThrow(new UsageError('poolSize must be between 1 and 1000, got 0'));
  });

  it('supervises worker processes with createFleet', async () => {
    await settleAll(db.pool);
    const fleet = createFleet({ databaseUrl: db.url, workers: 1, handler: 'checksum', pollMs: 100 });
    const running = fleet.start();
    await client.upsert({ id: 'fleet-1', data: { n: 1 } });
    await waitFor(async () => (await client.getRecord('fleet-1'))?.status === 'PROCESSED', 30_000, 'the record to be PROCESSED', 50);
    await fleet.stop();
    await running;
    expect((await client.getRecord('fleet-1'))?.result).toMatchObject({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.workers`);
    expect(rows[0].n).toBe(0);
  });
});

describe('library: the schema is checked once, when a client opens', () => {
  let empty: TestDatabase;
  let migrated: TestDatabase;
  beforeAll(async () => {
    [empty, migrated] = await Promise.all([createEmptyDatabase(), createTestDatabase()]);
  });
  afterAll(async () => {
    await Promise.all([empty?.drop(), migrated?.drop()]);
  });

  /** What `promise` rejected with (the test fails if it resolved). */
  async function rejection(promise: Promise<unknown>): Promise<Error> {
    return promise.then(
      () => {
        throw new Error('expected a rejection');
      },
      (err: unknown) => err as Error,
    );
  }

  function expectRunMigrate(err: Error): void {
    expect(err).toBeInstanceOf(UserError);
    // One line for a person, whatever the wording of what is missing.
    expect(err.message).toMatch(/^[^\n]+; run `rowfleet migrate` first$/);
    expect(err.message).not.toMatch(/does not exist/);
  }

  it('a DATABASE_URL without the schema: one line saying to run rowfleet migrate, from every entry point, and nothing created', async () => {
    const emptyClient = createClient({ databaseUrl: empty.url, poolSize: 1 });
    try {
      expectRunMigrate(await rejection(emptyClient.upsert({ id: 'x', data: {} })));
      expectRunMigrate(await rejection(emptyClient.getRecord('x')));
    } finally {
      await emptyClient.close();
    }
    const withPool = createClient({ pool: empty.pool });
    expectRunMigrate(await rejection(withPool.upsert([{ id: 'x', data: {} }])));
    await withPool.close();

    const worker = createWorker({ databaseUrl: empty.url, handler: async () => null });
    expectRunMigrate(await rejection(worker.start()));
    const fleet = createFleet({ databaseUrl: empty.url, workers: 1, handler: 'noop' });
    expectRunMigrate(await rejection(fleet.start()));

    // A DATABASE_URL is never migrated implicitly.
    const { rows } = await empty.pool.query(`SELECT to_regnamespace('rowfleet') AS schema`);
    expect(rows[0].schema).toBeNull();
  });

  it('checks when it opens, not on every call; a failed open is tried again', async () => {
    await migrated.pool.query(`ALTER TABLE rowfleet.migrations RENAME TO migrations_aside`);
    const checked = createClient({ databaseUrl: migrated.url, poolSize: 1 });
    try {
      // Without its migrations table the schema reads as behind.
      expectRunMigrate(await rejection(checked.upsert({ id: 'once-1', data: {} })));
      await migrated.pool.query(`ALTER TABLE rowfleet.migrations_aside RENAME TO migrations`);
      expect(await checked.upsert({ id: 'once-1', data: {} })).toMatchObject({ applied: true });
      // Opened: later calls do not look at the schema again.
      await migrated.pool.query(`ALTER TABLE rowfleet.migrations RENAME TO migrations_aside`);
      expect(await checked.upsert({ id: 'once-2', data: {} })).toMatchObject({ applied: true });
      expect(await checked.getRecord('once-1')).toMatchObject({ status: 'COMPLETED' });
    } finally {
      await checked.close();
      await migrated.pool.query(`ALTER TABLE IF EXISTS rowfleet.migrations_aside RENAME TO migrations`);
    }
  });
});
