/**
 * `rowfleet up`: the API with its dashboard, a scheduler and a fleet in one foreground process,
 * on the embedded Postgres by default (a home of its own here), drained by one SIGTERM.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stopEmbedded } from '../src/db/embedded.ts';
import { silentLogger } from '../src/log.ts';
import { isAlive, Processes } from './helpers/processes.ts';
import { waitFor } from './helpers/wait.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

const procs = new Processes();
let home: string | undefined;
let db: TestDatabase | undefined;
afterAll(async () => {
  await procs.killAll();
  await db?.drop();
  if (home !== undefined) {
    await stopEmbedded(home, silentLogger).catch(() => {});
    await fs.rm(home, { recursive: true, force: true });
  }
});

describe('rowfleet up', () => {
  it('runs the API, the dashboard, a scheduler and two workers on the embedded Postgres; one SIGTERM drains all and exits 0', { timeout: 180_000 }, async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-up-'));
    // No DATABASE_URL: the embedded Postgres, in this home.
    const up = procs.start(['up', '--port', '0', '--workers', '2', '--handler', 'sleep', '--sleep', '200ms'], { ROWFLEET_HOME: home, DATABASE_URL: '' });
    const ready = await up.waitForLog((l) => l.msg.startsWith('rowfleet up:'), 150_000, 'rowfleet up to start');
    const address = String(ready.address);
    await up.waitForLog((l) => l.msg === 'scheduler started', 60_000, 'its scheduler');
    await waitFor(() => up.logs.filter((l) => l.msg === 'worker started').length === 2, 60_000, 'its two workers');

    const ids = Array.from({ length: 20 }, (_, i) => `up-${i}`);
    for (const id of ids) {
      const r = await fetch(`${address}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id, data: { n: 1 } }) });
      expect(r.status).toBe(200);
    }
    await waitFor(async () => {
      const states = await Promise.all(ids.map(async (id) => ((await (await fetch(`${address}/records/${id}`)).json()) as { status: string }).status));
      return states.every((s) => s === 'PROCESSED');
    }, 60_000, 'every record PROCESSED');
    const page = await fetch(`${address}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);

    // Records in flight when the signal comes: drained, not lost.
    for (const id of ids) await fetch(`${address}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id, data: { n: 2 } }) });
    const workers = procs.fleetWorkers;
    expect(workers).toHaveLength(2);
    expect(await up.stop('SIGTERM', 90_000)).toEqual({ code: 0, signal: null });
    expect(up.logs.filter((l) => l.msg === 'worker stopped')).toHaveLength(2);
    expect(up.logs.some((l) => l.msg.startsWith('stopped: the workers drained'))).toBe(true);
    for (const pid of workers) expect(isAlive(pid)).toBe(false);
    expect(up.logs.filter((l) => l.level >= 50)).toEqual([]);
  });

  it('demo --keep leaves the API, dashboard, scheduler and workers running after its report, until SIGTERM', { timeout: 120_000 }, async () => {
    db ??= await createTestDatabase();
    const demo = procs.start(['demo', '--keep'], { DATABASE_URL: db.url });
    const kept = await waitFor(() => demo.lines.find((l) => l.startsWith('Everything keeps running')), 90_000, 'the demo to finish its report and keep running');
    expect(demo.lines.some((l) => /^ {2}ok {4}I5 effectively once/.test(l))).toBe(true);
    const dashboard = /the dashboard is at (http:\/\/\S+\/)/.exec(kept)![1]!;
    expect((await fetch(dashboard)).status).toBe(200);
    // Still processing: a new record through its API is PROCESSED by its workers.
    const api = dashboard.replace(/\/$/, '');
    expect((await fetch(`${api}/upsert?wait=20s`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'order', id: 'kept-1', data: { sleepMs: 10 } }) })).status).toBe(200);
    expect(((await (await fetch(`${api}/records/kept-1?kind=order`)).json()) as { status: string }).status).toBe('PROCESSED');
    expect(await demo.stop('SIGTERM', 60_000)).toEqual({ code: 0, signal: null });
  });

  it('refuses to start without a handler: one line, exit 2, nothing started', async () => {
    db ??= await createTestDatabase();
    const up = procs.start(['up', '--port', '0'], { DATABASE_URL: db.url, ROWFLEET_HANDLER: '' });
    const exit = await up.exited;
    expect(exit.code).toBe(2);
    expect(up.lines.join('\n')).toMatch(/handler/i);
    expect(up.lines.join('\n')).not.toMatch(/^\s+at /m);
  });
});
