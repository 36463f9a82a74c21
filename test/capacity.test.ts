/**
 * The start-up warning when the connections a process (or a fleet) may open do not fit in what
 * Postgres allows (issue 13): the arithmetic, the budget read from the server, and the line the
 * worker and the fleet log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { Processes } from './helpers/processes.ts';
import { connectionShortfall, readConnectionBudget } from '../src/db/capacity.ts';

let db: TestDatabase;
const procs = new Processes();
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await procs.killAll();
  await db?.drop();
});

describe('connections needed against those allowed', () => {
  it('says what does not fit, with the arithmetic; nothing when it fits', () => {
    const budget = { max: 20, reserved: 3, others: 4 };
    expect(connectionShortfall('this fleet', [['3 workers × (pool 10 + 1 LISTEN)', 33], ['its own pool', 2]], budget)).toBe(
      'this fleet may open 35 connections (3 workers × (pool 10 + 1 LISTEN) 33 + its own pool 2), but Postgres allows 13 more ' +
        '(max_connections 20 − 3 reserved − 4 open by others): under load requests will wait and fail; ' +
        'lower ROWFLEET_POOL_SIZE (or the number of workers), put PgBouncer in front, or raise max_connections',
    );
    expect(connectionShortfall('this API', [['pool 15 + 1 LISTEN', 16]], budget)).toMatch(/^this API may open 16 connections \(pool 15 \+ 1 LISTEN\), but Postgres allows 13 more/);
    expect(connectionShortfall('this API', [['pool 12 + 1 LISTEN', 13]], budget)).toBeUndefined();
  });

  it('reads the budget from the server, counting the connections of others', async () => {
    const before = await readConnectionBudget(db.pool);
    expect(before.max).toBeGreaterThan(before.reserved);
    const extra = new pg.Pool({ connectionString: db.url, max: 3 });
    try {
      const clients = await Promise.all([extra.connect(), extra.connect(), extra.connect()]);
      const after = await readConnectionBudget(db.pool);
      expect(after.others - before.others).toBeGreaterThanOrEqual(3);
      for (const c of clients) c.release();
    } finally {
      await extra.end();
    }
  });

  it('is logged once at start by a worker and by a fleet whose pools exceed it, and they run on', async () => {
    const env = { DATABASE_URL: db.url, ROWFLEET_POOL_SIZE: '1000' };
    const worker = procs.start(['worker', '--handler', 'noop'], env);
    const line = await worker.waitForLog((l) => String(l.msg).startsWith('this worker may open 1001 connections (pool 1000 + 1 LISTEN), but Postgres allows'), 30_000, 'the worker\'s warning');
    expect(line.level).toBe(40);
    await worker.waitForLog((l) => l.msg === 'worker started', 30_000, 'the worker running');
    expect(await worker.stop()).toEqual({ code: 0, signal: null });

    const fleet = procs.start(['fleet', '--workers', '2', '--handler', 'noop'], env);
    await fleet.waitForLog((l) => String(l.msg).startsWith('this fleet may open 2004 connections (2 workers × (pool 1000 + 1 LISTEN) 2002 + its own pool 2)'), 30_000, 'the fleet\'s warning');
    expect(await fleet.stop()).toEqual({ code: 0, signal: null });
  });
});
