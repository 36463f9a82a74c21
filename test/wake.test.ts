/**
 * Wake-ups without a NOTIFY per upsert (src/records/wake.ts): producers notify only when a worker
 * has raised its flag, once per raise, after their own commit.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { waitFor } from './helpers/wait.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { awaitWork, DUE_CHANNEL, settleWakes, wakeWorkers } from '../src/records/wake.ts';
import { registerWorker } from '../src/worker/registry.ts';

let db: TestDatabase;
let listener: pg.Client;
let notifications = 0;
beforeAll(async () => {
  db = await createTestDatabase();
  listener = new pg.Client({ connectionString: db.url });
  await listener.connect();
  listener.on('notification', () => (notifications += 1));
  await listener.query(`LISTEN ${DUE_CHANNEL}`);
});
afterAll(async () => {
  await listener?.end();
  await db?.drop();
});
beforeEach(async () => {
  await db.pool.query('DELETE FROM rowfleet.workers');
  notifications = 0;
});

const write = (ids: string[]) => upsertMessages(db.pool, ids.map((id) => parseMessage({ id, data: { id } }, { maxDepth: 64 })));
const flags = async () => (await db.pool.query(`SELECT id FROM rowfleet.workers WHERE waiting_since IS NOT NULL ORDER BY id`)).rows.map((r) => r.id);
/** A round trip through the listener's connection: notifications sent before it have arrived. */
const delivered = () => listener.query('SELECT 1');

describe('waking workers', () => {
  it('sends no notification while no worker waits, however many upserts commit', async () => {
    await registerWorker(db.pool, { id: 'busy', engine: 'direct', concurrency: 1 });
    for (let i = 0; i < 20; i++) await write([`quiet-${i}`]);
    await settleWakes(db.pool);
    await delivered();
    expect(notifications).toBe(0);
  });

  it('notifies once per raised flag, clears every flag, and then is quiet again', async () => {
    await registerWorker(db.pool, { id: 'w1', engine: 'direct', concurrency: 1 });
    await registerWorker(db.pool, { id: 'w2', engine: 'direct', concurrency: 1 });
    await awaitWork(db.pool, 'w1');
    await awaitWork(db.pool, 'w2');
    expect(await flags()).toEqual(['w1', 'w2']);
    await Promise.all(Array.from({ length: 10 }, (_, i) => write([`burst-${i}`])));
    await settleWakes(db.pool);
    await waitFor(() => notifications === 1 || undefined, 5_000, 'the one notification');
    expect(await flags()).toEqual([]);
    await write(['after']);
    await settleWakes(db.pool);
    await delivered();
    expect(notifications).toBe(1);
  });

  it('reports how many workers it woke; raising a raised flag changes nothing', async () => {
    await registerWorker(db.pool, { id: 'w1', engine: 'direct', concurrency: 1 });
    expect(await wakeWorkers(db.pool)).toBe(0);
    await awaitWork(db.pool, 'w1');
    // Raising an already raised flag changes nothing.
    await awaitWork(db.pool, 'w1');
    expect(await wakeWorkers(db.pool)).toBe(1);
    expect(await wakeWorkers(db.pool)).toBe(0);
  });
});
