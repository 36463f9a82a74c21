/**
 * The runtime role (issue 13, least privilege): `rowfleet migrate --runtime-role NAME` gives a
 * login role what the API, workers and scheduler need, and it works end to end as that role
 * (upserts, a worker, requeue, status, the retention, pg-boss's worker and the scheduler), while
 * event_log stays append-only for it and the schema out of its reach (42501).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, withAdmin, type TestDatabase } from './helpers/database.ts';
import { rowfleet } from './helpers/cli.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { waitFor } from './helpers/wait.ts';
import { Processes } from './helpers/processes.ts';
import { createClient } from '../src/index.ts';
import { requeue } from '../src/ops/requeue.ts';
import { readStatus } from '../src/ops/status.ts';
import { applyRetention } from '../src/records/retention.ts';
import { UsageError } from '../src/errors.ts';
import { inject } from 'vitest';

const role = `rt_${randomBytes(4).toString('hex')}`;
const password = randomBytes(12).toString('hex');
let db: TestDatabase;
let roleUrl: string;
let rolePool: pg.Pool;
const procs = new Processes();

beforeAll(async () => {
  db = await createTestDatabase();
  const migrated = await rowfleet({ DATABASE_URL: db.url }, 'migrate', '--runtime-role', role, '--json');
  expect(migrated.error).toBeUndefined();
  expect(JSON.parse(migrated.stdout)).toMatchObject({ runtimeRole: role });
  // Twice: idempotent.
  expect((await rowfleet({ DATABASE_URL: db.url }, 'migrate', '--runtime-role', role)).error).toBeUndefined();
  await db.pool.query(`ALTER ROLE ${role} PASSWORD '${password}'`);
  const url = new URL(db.url);
  url.username = role;
  url.password = password;
  roleUrl = url.toString();
  rolePool = new pg.Pool({ connectionString: roleUrl, max: 4 });
});
afterAll(async () => {
  await procs.killAll();
  await rolePool?.end();
  await db?.drop();
  await withAdmin(inject('databaseUrl'), (admin) => admin.query(`DROP ROLE IF EXISTS ${role}`));
});

const failedWith = async (statement: string): Promise<string | undefined> => rolePool.query(statement).then(() => undefined, (err: { code?: string }) => err.code);

describe('the runtime role', () => {
  it('is no superuser and owns nothing', async () => {
    const { rows } = await db.pool.query(`SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1`, [role]);
    expect(rows).toEqual([{ rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolcanlogin: true }]);
    const owned = await db.pool.query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1`, [role]);
    expect(owned.rows[0].n).toBe(0);
  });

  it('runs rowfleet: upserts, a worker, requeue, status and the retention', async () => {
    const client = createClient({ databaseUrl: roleUrl, poolSize: 2 });
    try {
      for (const id of ['a', 'b', 'bad']) expect(await client.upsert({ kind: 'rt', id, data: { id } })).toMatchObject({ applied: true });
    } finally {
      await client.close();
    }
    const handler = { rt: async (record: { id: string }) => { if (record.id === 'bad') throw new Error('refused'); return { ok: true }; } };
    const settled = async () => (await rolePool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status IN ('PROCESSED', 'FAILED')`)).rows[0].n === 3;
    await runWorkerUntil({ url: roleUrl, pool: rolePool, drop: async () => {} }, handler, () => waitFor(settled, 20_000, 'three records settled'), { maxAttempts: 1 });
    expect(await requeue(rolePool, { status: 'FAILED', dryRun: false, via: 'api' })).toMatchObject({ requeued: 1 });
    expect((await readStatus(rolePool)).counts).toMatchObject({ PROCESSED: 2, COMPLETED: 1 });
    // Retention through its function: everything is older than 0 ms, but the statement's own now().
    expect(await applyRetention(rolePool, 0)).toBeGreaterThanOrEqual(0);
  });

  it('cannot rewrite event_log or change the schema (42501)', async () => {
    expect(await failedWith(`UPDATE rowfleet.event_log SET data = '{}'`)).toBe('42501');
    expect(await failedWith(`DELETE FROM rowfleet.event_log`)).toBe('42501');
    expect(await failedWith(`TRUNCATE rowfleet.event_log`)).toBe('42501');
    expect(await failedWith(`TRUNCATE rowfleet.records`)).toBe('42501');
    expect(await failedWith(`DELETE FROM rowfleet.migrations`)).toBe('42501');
    expect(await failedWith(`CREATE TABLE rowfleet.evil (x int)`)).toBe('42501');
    expect(await failedWith(`ALTER TABLE rowfleet.records ADD COLUMN evil int`)).toBe('42501');
    expect(await failedWith(`DROP FUNCTION rowfleet.apply_retention(bigint)`)).toBe('42501');
    expect(await failedWith(`CREATE FUNCTION rowfleet.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'`)).toBe('42501');
    // What it may do to event_log: read and append.
    expect(await failedWith(`SELECT count(*) FROM rowfleet.event_log`)).toBeUndefined();
  });

  it('runs a pg-boss worker and the scheduler', async () => {
    const env = { DATABASE_URL: roleUrl };
    const worker = procs.start(['worker', '--engine', 'boss', '--handler', 'noop'], env);
    await worker.waitForLog((l) => l.msg === 'worker started', 30_000, 'the boss worker started as the runtime role');
    const scheduler = procs.start(['scheduler'], env);
    await scheduler.waitForLog((l) => l.msg === 'scheduler started', 30_000, 'the scheduler started as the runtime role');
    expect(await scheduler.stop()).toEqual({ code: 0, signal: null });
    expect(await worker.stop()).toEqual({ code: 0, signal: null });
    for (const p of [worker, scheduler]) expect(p.logs.filter((l) => l.level >= 50), p.tail()).toEqual([]);
  });

  it('rowfleet roles --print shows the same SQL for a DBA; a bad name is a usage error', async () => {
    const printed = await rowfleet({}, 'roles', '--print', 'rowfleet_app');
    expect(printed.error).toBeUndefined();
    expect(printed.stdout).toContain('REVOKE UPDATE, DELETE, TRUNCATE ON rowfleet.event_log FROM "rowfleet_app";');
    expect(printed.stdout).toContain('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA rowfleet TO "rowfleet_app";');
    for (const bad of ['Robert"; DROP TABLE x; --', 'pg_admin', '1abc']) {
      const run = await rowfleet({ DATABASE_URL: db.url }, 'migrate', '--runtime-role', bad);
      expect(run.error, bad).toBeInstanceOf(UsageError);
    }
  });
});
