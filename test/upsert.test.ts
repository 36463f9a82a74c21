import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { getRecord } from '../src/records/read.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const msg = (id: string, data: object, version?: number | string, messageId?: string) =>
  parseMessage({ id, data, version, messageId }, { maxDepth: 64 });

describe('upsertMessages', () => {
  it('applies a newer version and refuses an older one as stale, with the current version', async () => {
    expect(await upsertMessages(db.pool, [msg('s1', { n: 2 }, 2)])).toEqual([{ kind: 'default', id: 's1', applied: true, version: '2', reason: 'applied' }]);
    expect(await upsertMessages(db.pool, [msg('s1', { n: 1 }, 1)])).toEqual([
      { kind: 'default', id: 's1', applied: false, version: '1', currentVersion: '2', reason: 'stale' },
    ]);
    const record = await getRecord(db.pool, 's1');
    expect(record).toMatchObject({ version: 2, data: { n: 2 }, status: 'COMPLETED' });
  });

  it('treats the same version with the same data as stale and with other data as a conflict', async () => {
    await upsertMessages(db.pool, [msg('c1', { a: 1, b: [1, 2] }, 5)]);
    const [same] = await upsertMessages(db.pool, [msg('c1', { b: [1, 2], a: 1 }, 5)]);
    expect(same).toMatchObject({ applied: false, reason: 'stale', currentVersion: '5' });
    const [other] = await upsertMessages(db.pool, [msg('c1', { a: 2 }, 5)]);
    expect(other).toMatchObject({ applied: false, reason: 'conflict', currentVersion: '5' });
    expect((await getRecord(db.pool, 'c1'))?.data).toEqual({ a: 1, b: [1, 2] });
  });

  it('applies items for one id in array order within a batch', async () => {
    const results = await upsertMessages(db.pool, [
      msg('b1', { n: 3 }, 3),
      msg('b2', { n: 1 }, 1),
      msg('b1', { n: 2 }, 2),
      msg('b1', { n: 4 }, 4),
      msg('b1', { x: 1 }, 4),
    ]);
    expect(results.map((r) => r.reason)).toEqual(['applied', 'applied', 'stale', 'applied', 'conflict']);
    expect(results[2]).toMatchObject({ currentVersion: '3' });
    expect((await getRecord(db.pool, 'b1'))?.data).toEqual({ n: 4 });
  });

  it('assigns increasing versions from the database when the message has none', async () => {
    const [first] = await upsertMessages(db.pool, [msg('auto', { n: 1 })]);
    const [second] = await upsertMessages(db.pool, [msg('auto', { n: 2 })]);
    expect(first!.applied && second!.applied).toBe(true);
    expect(BigInt((second as { version: string }).version)).toBeGreaterThan(BigInt((first as { version: string }).version));
    expect((await getRecord(db.pool, 'auto'))?.data).toEqual({ n: 2 });
  });

  it('keeps versions above 2^53 exact', async () => {
    const big = '9223372036854775000';
    const [r] = await upsertMessages(db.pool, [msg('big', { n: 1 }, big)]);
    expect(r).toMatchObject({ applied: true, version: big });
    expect((await getRecord(db.pool, 'big'))?.version).toBe(big);
  });

  it('answers a repeated messageId with the first response and writes nothing new', async () => {
    const first = await upsertMessages(db.pool, [msg('m1', { n: 1 }, 1, 'evt-1')]);
    await upsertMessages(db.pool, [msg('m1', { n: 2 }, 2)]);
    const again = await upsertMessages(db.pool, [msg('m1', { n: 1 }, 1, 'evt-1')]);
    expect(again).toEqual([{ ...first[0], duplicate: true }]);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE message_id = 'evt-1'`);
    expect(rows[0].n).toBe(1);
    const reused = await upsertMessages(db.pool, [msg('m1', { n: 9 }, 1, 'evt-1')]);
    expect(reused[0]).toMatchObject({ reason: 'message_id_reused', messageId: 'evt-1' });
  });

  it('treats a repeat without a version of a messageId first sent with one as a reuse, in both paths', async () => {
    await upsertMessages(db.pool, [msg('m3', { n: 1 }, 5, 'evt-3')]);
    const [single] = await upsertMessages(db.pool, [msg('m3', { n: 1 }, undefined, 'evt-3')]);
    expect(single).toMatchObject({ reason: 'message_id_reused' });
    const [batched] = await upsertMessages(db.pool, [msg('m3', { n: 1 }, undefined, 'evt-3'), msg('m3-other', {}, 1)]);
    expect(batched).toMatchObject({ reason: 'message_id_reused' });
  });

  it('repeats a server-assigned version for a repeated messageId without a version', async () => {
    const [first] = await upsertMessages(db.pool, [msg('m2', { n: 1 }, undefined, 'evt-2')]);
    const [again] = await upsertMessages(db.pool, [msg('m2', { n: 1 }, undefined, 'evt-2')]);
    expect(again).toEqual({ ...first, duplicate: true });
    const [withVersion] = await upsertMessages(db.pool, [msg('m2', { n: 1 }, 77, 'evt-2')]);
    expect(withVersion).toMatchObject({ reason: 'message_id_reused' });
  });

  // Both database paths (one message; a batch) carry the status rules: test each.
  describe.each([
    ['one message', (m: ReturnType<typeof msg>) => [m]],
    ['a batch', (m: ReturnType<typeof msg>) => [m, msg(`${m.id}-other`, {}, 1)]],
  ])('through %s', (_path, wrap) => {
    it('leaves a PROCESSING record claimed, replacing data and version only', async () => {
      const id = `p-${_path.length}`;
      await upsertMessages(db.pool, wrap(msg(id, { n: 1 }, 1)));
      await db.pool.query(
        `UPDATE rowfleet.records SET status = 'PROCESSING', lease_owner = 'w1', lease_token = gen_random_uuid(),
                lease_expires_at = now() + interval '30 seconds', attempts = 1 WHERE id = $1`,
        [id],
      );
      await upsertMessages(db.pool, wrap(msg(id, { n: 2 }, 2)));
      const { rows } = await db.pool.query(`SELECT status, version, data, lease_owner, attempts FROM rowfleet.records WHERE id = $1`, [id]);
      expect(rows[0]).toMatchObject({ status: 'PROCESSING', version: '2', data: { n: 2 }, lease_owner: 'w1', attempts: 1 });
    });

    it('sends a PROCESSED or FAILED record back to COMPLETED, due now, with fresh attempts on a new version', async () => {
      const id = `f-${_path.length}`;
      await upsertMessages(db.pool, wrap(msg(id, { n: 1 }, 1)));
      await db.pool.query(
        `UPDATE rowfleet.records SET status = 'FAILED', attempts = 10, lease_expirations = 2, last_error = 'boom',
                run_after = now() + interval '1 hour' WHERE id = $1`,
        [id],
      );
      await upsertMessages(db.pool, wrap(msg(id, { n: 2 }, 2)));
      const { rows } = await db.pool.query(
        `SELECT status, attempts, lease_expirations, run_after <= now() AS due FROM rowfleet.records WHERE id = $1`,
        [id],
      );
      expect(rows[0]).toEqual({ status: 'COMPLETED', attempts: 0, lease_expirations: 0, due: true });
    });
  });

  it('never deadlocks or errors when overlapping batches race on the same new ids', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `race-${i}`);
    const batches = Array.from({ length: 8 }, (_, b) =>
      (b % 2 === 0 ? ids : [...ids].reverse()).map((id, i) => msg(id, { b }, b * 100 + i + 1, `race-${b}-${id}`)),
    );
    const results = await Promise.all(batches.map((batch) => upsertMessages(db.pool, batch)));
    expect(results.flat().every((r) => r.reason === 'applied' || r.reason === 'stale')).toBe(true);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE record_id LIKE 'race-%'`);
    expect(rows[0].n).toBe(8 * 20);
  });

  it('answers racing identical messageIds once applied, the rest as duplicates, without errors', async () => {
    for (const round of [1, 2, 3]) {
      // Same record (serialized by its row lock) and different records (serialized by the
      // messageId index, then retried) both race.
      const calls = Array.from({ length: 12 }, (_, i) =>
        upsertMessages(db.pool, [msg(round === 2 ? `dup-r2-${i}` : `dup-r${round}`, { n: 1 }, 1, `dup-evt-${round}`)]),
      );
      const results = (await Promise.all(calls)).flat();
      const first = results.filter((r) => !('duplicate' in r) && r.reason !== 'message_id_reused');
      expect(first).toHaveLength(1);
      if (round !== 2) expect(results.every((r) => r.reason === 'applied')).toBe(true);
      else expect(results.filter((r) => r.reason === 'message_id_reused')).toHaveLength(11);
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE message_id = $1`, [`dup-evt-${round}`]);
      expect(rows[0].n).toBe(1);
    }
  });
});
