/**
 * Deleting records: DELETE /records/:id, the library's deleteRecord and `rowfleet delete` leave a
 * tombstone at the record's version. A late message at that version or older is refused and
 * cannot bring it back; a newer one creates it again; a record being processed loses its lease.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { TestDatabase } from './helpers/database.ts';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { rowfleet } from './helpers/cli.ts';
import { silentLogger } from '../src/log.ts';
import { createWorker, UsageError, type RowfleetClient } from '../src/index.ts';
import { waitFor } from './helpers/wait.ts';
import { settleAll } from './helpers/records.ts';
import { claimDue } from '../src/records/claim.ts';
import { complete } from '../src/records/settle.ts';
import { Awaiter } from '../src/records/await.ts';
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

const upsert = (body: unknown) => app.inject({ method: 'POST', url: '/upsert', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });
const del = (id: string) => app.inject({ method: 'DELETE', url: `/records/${encodeURIComponent(id)}` });
const get = (id: string) => app.inject({ method: 'GET', url: `/records/${encodeURIComponent(id)}` });

async function row(id: string): Promise<{ status: string; version: string; lease_token: string | null } | undefined> {
  return (await db.pool.query(`SELECT status, version, lease_token FROM rowfleet.records WHERE id = $1`, [id])).rows[0];
}
async function deletedEvents(id: string): Promise<unknown[]> {
  return (await db.pool.query(`SELECT detail FROM rowfleet.event_log WHERE record_id = $1 AND reason = 'deleted' ORDER BY seq`, [id])).rows.map((r) => r.detail);
}

describe('DELETE /records/:id', () => {
  it('leaves a tombstone: 404 on reads, refuses older and equal versions, and a newer version creates it again', async () => {
    expect((await upsert({ id: 'd-1', data: { n: 5 }, version: 5 })).statusCode).toBe(200);
    const res = await del('d-1');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ kind: 'default', id: 'd-1', deleted: true, version: 5 });
    expect(await deletedEvents('d-1')).toEqual([{ from: 'COMPLETED' }]);

    const gone = 'record "d-1" was deleted at version 5; a message with a newer version creates it again';
    const read = await get('d-1');
    expect([read.statusCode, read.json()]).toEqual([404, { error: 'not_found', message: gone }]);
    expect((await del('d-1')).json()).toEqual({ error: 'not_found', message: gone });
    expect(await deletedEvents('d-1')).toHaveLength(1);

    // Late messages: refused as for any record; the tombstone stays.
    expect((await upsert({ id: 'd-1', data: { n: 4 }, version: 4 })).json()).toEqual({ kind: 'default', id: 'd-1', applied: false, version: 4, currentVersion: 5, reason: 'stale' });
    expect((await upsert({ id: 'd-1', data: { n: 5 }, version: 5 })).json()).toMatchObject({ applied: false, reason: 'stale' });
    expect(await row('d-1')).toMatchObject({ status: 'DELETED', version: '5' });

    // A newer one: the record again, to be processed.
    expect((await upsert({ id: 'd-1', data: { n: 6 }, version: 6 })).json()).toMatchObject({ applied: true, version: 6 });
    expect((await get('d-1')).json()).toMatchObject({ id: 'd-1', status: 'COMPLETED', version: 6, data: { n: 6 } });
  });

  it('404 for an id that never existed', async () => {
    const res = await del('d-never');
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'not_found', message: 'no record "d-never" of kind default (add ?kind= for another kind)' });
  });

  it('a record being processed loses its lease: the holder’s completion is refused', async () => {
    await upsertMessages(db.pool, [{ id: 'd-held', data: {} }]);
    const claimed = (await claimDue(db.pool, { owner: 'w', limit: 1000, leaseMs: 60_000 })).find((c) => c.id === 'd-held')!;
    expect((await del('d-held')).json()).toMatchObject({ deleted: true });
    expect(await row('d-held')).toMatchObject({ status: 'DELETED', lease_token: null });
    expect(await deletedEvents('d-held')).toEqual([{ from: 'PROCESSING' }]);
    const outcomes = await complete(db.pool, [{ ...claimed, result: { late: true } }]);
    expect(outcomes.get('default/d-held')).toBe('lost');
    expect(await row('d-held')).toMatchObject({ status: 'DELETED' });
  });

  it('a running worker aborts the handler of a record deleted under it, and stores nothing', async () => {
    await settleAll(db.pool);
    let reason: unknown;
    const worker = createWorker({
      databaseUrl: db.url,
      leaseMs: 600, // heartbeats every 200 ms
      pollMs: 50,
      handler: (_record, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', () => ((reason = ctx.signal.reason), resolve('too late')))),
    });
    const running = worker.start();
    try {
      await upsertMessages(db.pool, [{ id: 'd-running', data: {} }]);
      await waitFor(async () => (await row('d-running'))?.status === 'PROCESSING', 10_000, 'd-running to be PROCESSING');
      expect((await del('d-running')).json()).toMatchObject({ deleted: true });
      await waitFor(() => reason !== undefined, 10_000, 'the handler to be aborted');
      expect((reason as Error).name).toBe('LeaseLostError');
    } finally {
      await worker.stop();
      await running;
    }
    expect(worker.stats).toMatchObject({ processed: 0, lost: 1 });
    expect(await row('d-running')).toMatchObject({ status: 'DELETED' });
  });

  it('answers a request waiting for the record’s result at once, as DELETED', async () => {
    const awaiter = new Awaiter(db.pool, { listenUrl: db.url, log: silentLogger });
    try {
      await awaiter.prepare(30_000);
      const [applied] = await upsertMessages(db.pool, [{ id: 'd-awaited', data: {} }]);
      const waiting = awaiter.wait([{ kind: 'default', id: 'd-awaited', version: (applied as { version: string }).version }], 30_000);
      const asked = Date.now();
      await del('d-awaited');
      expect(await waiting).toEqual([{ settled: true, status: 'DELETED', processedVersion: null }]);
      // Told by the delete's notification, not when the 30 s wait ran out.
      expect(Date.now() - asked).toBeLessThan(15_000);
    } finally {
      await awaiter.close();
    }
  });
});

describe('deleteRecord in the library', () => {
  it('deletes, then reads as undefined; undefined for a record that is not there', async () => {
    await client.upsert({ id: 'd-lib', data: { n: 1 }, version: 3 });
    expect(await client.deleteRecord('d-lib')).toEqual({ kind: 'default', id: 'd-lib', version: 3 });
    expect(await client.getRecord('d-lib')).toBeUndefined();
    expect(await client.deleteRecord('d-lib')).toBeUndefined();
    expect(await client.upsert({ id: 'd-lib', data: { n: 0 }, version: 2 })).toMatchObject({ applied: false, reason: 'stale', currentVersion: 3 });
  });
});

describe('rowfleet delete', () => {
  it('filters like requeue, with a dry run; twice is a no-op; no filter is a usage error', async () => {
    for (const id of ['d-cli-1', 'd-cli-2', 'd-cli-3']) await upsertMessages(db.pool, [{ id, data: {} }]);
    await db.pool.query(`UPDATE rowfleet.records SET status = 'FAILED', last_error = 'boom' WHERE id IN ('d-cli-1', 'd-cli-2')`);

    const dry = await rowfleet(env, 'delete', '--status', 'FAILED', '--error', 'boom', '--dry-run');
    expect(dry.error).toBeUndefined();
    expect(dry.stdout).toMatch(/^default\td-cli-1\tFAILED\tv\d+\t.*\tboom\ndefault\td-cli-2\tFAILED\tv\d+\t.*\tboom\ndry run: 2 FAILED record\(s\) would be deleted; nothing changed\n$/);
    expect(await row('d-cli-1')).toMatchObject({ status: 'FAILED' });

    const json = (run: { stdout: string }) => JSON.parse(run.stdout);
    expect(json(await rowfleet(env, 'delete', '--status', 'FAILED', '--error', 'boom', '--json'))).toEqual({ matched: 2, deleted: 2, dryRun: false, interrupted: false });
    expect(json(await rowfleet(env, 'delete', '--status', 'FAILED', '--error', 'boom', '--json'))).toEqual({ matched: 0, deleted: 0, dryRun: false, interrupted: false });
    expect(await deletedEvents('d-cli-2')).toEqual([{ from: 'FAILED' }]);

    // Without --status: any status but DELETED.
    const any = await rowfleet(env, 'delete', '--id', 'd-cli-3', '--id', 'd-cli-1');
    expect(any.stdout).toBe('deleted 1 of 1 matching record(s)\n');
    expect(await row('d-cli-3')).toMatchObject({ status: 'DELETED' });

    const bare = await rowfleet(env, 'delete');
    expect(bare.error).toBeInstanceOf(UsageError);
    expect((bare.error as Error).message).toBe('no filter given: pass --kind, --id, --error, --since, --before or --limit, or --all to delete every record');
  });
});
