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
});
