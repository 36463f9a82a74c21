/**
 * The clock process with real processes and real time: two `rowfleet scheduler` processes over
 * three cron ticks. pg-boss's cron resolution is one minute, so this file takes about three
 * minutes; it runs beside the others.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { Processes, type LogLine } from './helpers/processes.ts';
import { waitFor } from './helpers/wait.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { setKind } from '../src/records/kinds.ts';

const procs = new Processes();
let db: TestDatabase | undefined;
afterAll(async () => {
  await procs.killAll();
  await db?.drop();
});

const TICKS = 3;
const upsert = (ids: string[]) => upsertMessages(db!.pool, ids.map((id) => parseMessage({ id, data: { id } }, { maxDepth: 64 })));

describe('rowfleet scheduler', () => {
  it(`two schedulers over ${TICKS} ticks: each tick's sweep and rescue ran once, and every due record got one job`, { timeout: 300_000 }, async () => {
    db = await createTestDatabase();
    await upsert(['before-1', 'before-2']);
    const env = { DATABASE_URL: db.url };
    const schedulers = [procs.start(['scheduler', '--cron-check', '1s'], env), procs.start(['scheduler', '--cron-check', '1s'], env)];
    const ran = (task: string) => schedulers.flatMap((s) => s.logs.filter((l) => l.msg === `${task} ran`));

    // New records arrive between ticks.
    let arrivals = 0;
    await waitFor(
      async () => {
        const sweeps = ran('sweep').length;
        if (sweeps > arrivals && arrivals < TICKS - 1) {
          arrivals += 1;
          await upsert([`after-tick-${arrivals}`]);
        }
        return sweeps >= TICKS;
      },
      (TICKS + 1) * 60_000,
      `${TICKS} sweeps`,
      250,
    );

    const sweeps = ran('sweep');
    // Every tick's job ran in one scheduler only.
    const jobIds = sweeps.map((l) => l.jobId);
    expect(new Set(jobIds).size).toBe(jobIds.length);
    // One sweep job per minute, across both schedulers.
    const { rows } = await db.pool.query<{ minute: string; n: number }>(
      `SELECT date_trunc('minute', created_on)::text AS minute, count(*)::int AS n FROM pgboss.job WHERE name = 'rowfleet.sweep' GROUP BY 1 ORDER BY 1`,
    );
    expect(rows.every((r) => r.n === 1)).toBe(true);
    expect(rows.length).toBeGreaterThanOrEqual(sweeps.length);
    const rescues = ran('rescue').map((l) => l.jobId);
    expect(new Set(rescues).size).toBe(rescues.length);

    // Every record got exactly one job, whichever sweep sent it; later sweeps sent nothing twice.
    const enqueued = sweeps.reduce((sum, l: LogLine) => sum + ((l.result as { enqueued: number }).enqueued ?? 0), 0);
    expect(enqueued).toBe(2 + TICKS - 1);
    const { rows: jobs } = await db.pool.query<{ key: string; n: number }>(
      `SELECT singleton_key AS key, count(*)::int AS n FROM pgboss.job WHERE name = 'rowfleet.process' GROUP BY 1 ORDER BY 1`,
    );
    expect(jobs).toEqual(
      ['after-tick-1', 'after-tick-2', 'before-1', 'before-2'].map((key) => ({ key, n: 1 })),
    );

    for (const s of schedulers) expect(await s.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it('recurring kinds: two schedulers write each tick once, one record per tick', { timeout: 60_000 }, async () => {
    const own = await createTestDatabase();
    try {
      await setKind(own.pool, 'report', { schedule: '*/2 * * * * *' });
      const env = { DATABASE_URL: own.url };
      const schedulers = [procs.start(['scheduler'], env), procs.start(['scheduler'], env)];
      const reports = async () => (await own.pool.query<{ id: string }>(`SELECT id FROM rowfleet.records WHERE kind = 'report' ORDER BY id`)).rows.map((r) => r.id);
      await waitFor(async () => (await reports()).length >= 3, 45_000, 'three ticks of the report kind');
      for (const sc of schedulers) expect(await sc.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      const ids = await reports();
      // Ids are the ticks' times: whole even seconds, in UTC.
      for (const id of ids) expect(new Date(id).toISOString() === id && new Date(id).getUTCSeconds() % 2 === 0, id).toBe(true);
      // One applied message per tick, whichever scheduler wrote it; the other's was a duplicate, which writes nothing.
      const { rows } = await own.pool.query<{ id: string; n: number; mid: string }>(
        `SELECT record_id AS id, count(*)::int AS n, min(message_id) AS mid FROM rowfleet.event_log WHERE kind = 'report' GROUP BY 1 ORDER BY 1`,
      );
      expect(rows).toEqual(ids.map((id) => ({ id, n: 1, mid: `recurring:report:${id}` })));
      const written = schedulers.flatMap((sc) => sc.logs.filter((l) => l.msg === 'recurring ran').flatMap((l) => (l.written as { id: string; applied: boolean }[]).filter((w) => w.applied).map((w) => w.id)));
      expect(new Set(written).size).toBe(written.length);
    } finally {
      await own.drop();
    }
  });
});
