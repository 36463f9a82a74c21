/**
 * What an enqueue sweep costs as the backlog of records that already have jobs grows: the sweep's
 * duration (p50 / p99) when 100 new records arrived since the last one, with 20,000 and with
 * 200,000 due records already sent (each with its pending pg-boss job), and the rate of a sweep
 * that sends a whole backlog at once.
 *
 * A sweep has two parts, timed apart: sending new work (read from a partial index of unmarked due
 * rows) and checking one slice of the marked backlog for lost jobs (at most 10,000 records per
 * sweep, resuming where the last stopped). Below 10,000 the slice is the whole backlog, so both
 * backlogs here are above it: the check is a constant, bounded part of every sweep.
 * Target (the issue's): the sweep's cost grows with new work, not with the backlog, read here as
 * p50 at 200,000 within 1.5x of p50 at 20,000, for the whole sweep and for its new-work part.
 *
 *   npm run bench -- sweep
 */
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { startBoss, stopBoss } from '../src/boss/boss.ts';
import { sweep } from '../src/boss/sweep.ts';
import { insertBacklog } from './lib/backlog.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { awaitQuiet } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';

const BACKLOGS = [20_000, 200_000] as const;
const NEW_PER_SWEEP = 100;
const SWEEPS = 20;
const FLAT_RATIO = 1.5;

interface Row {
  backlog: number;
  /** The sweep that sent the backlog itself: jobs per second. */
  bulkJobsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** The new-work part alone (no check for lost jobs). */
  newOnlyP50Ms: number;
  ratio?: number;
  newOnlyRatio?: number;
  pass?: boolean;
}

export const sweepBench: Bench = {
  name: 'sweep',
  summary: 'enqueue sweep duration for 100 new records beside 20,000 and 200,000 already sent (it must stay flat)',
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_sweep');
    const b = loadConfig({}).boss;
    try {
      const rows = await withPool(db.url, 4, async (pool) => {
        const boss = await startBoss({ config: b, pool, role: 'client', log: silentLogger });
        try {
          const measured: Row[] = [];
          let loaded = 0;
          let next = 1;
          for (const backlog of BACKLOGS) {
            ctx.progress(`writing ${(backlog - loaded).toLocaleString('en-US')} due records and sending their jobs`);
            await insertBacklog(pool, { count: backlog - loaded, prefix: 'due-', from: loaded + 1, status: 'COMPLETED' });
            loaded = backlog;
            const started = performance.now();
            const bulk = await sweep(pool, boss, { queue: b.queue, schema: b.schema, batch: b.sweepBatch });
            const bulkJobsPerSecond = Math.round(bulk.enqueued / ((performance.now() - started) / 1000));
            await pool.query('VACUUM ANALYZE rowfleet.records');
            await pool.query(`VACUUM ANALYZE ${b.schema}.job`);
            await awaitQuiet(ctx.postgres.pids, ctx.progress);
            const timeSweeps = async (repairLimit: number | undefined) => {
              const durations: number[] = [];
              for (let i = 0; i < SWEEPS; i++) {
                await insertBacklog(pool, { count: NEW_PER_SWEEP, prefix: 'new-', from: next, status: 'COMPLETED' });
                next += NEW_PER_SWEEP;
                const t = performance.now();
                const result = await sweep(pool, boss, { queue: b.queue, schema: b.schema, batch: b.sweepBatch, ...(repairLimit !== undefined && { repairLimit }) });
                durations.push(performance.now() - t);
                if (result.enqueued !== NEW_PER_SWEEP) throw new Error(`sweep sent ${result.enqueued} jobs, expected ${NEW_PER_SWEEP}`);
              }
              return durations;
            };
            const full = await timeSweeps(undefined);
            const newOnly = await timeSweeps(0);
            const row: Row = {
              backlog,
              bulkJobsPerSecond,
              p50Ms: round(percentile(full, 0.5)),
              p99Ms: round(percentile(full, 0.99)),
              newOnlyP50Ms: round(percentile(newOnly, 0.5)),
            };
            ctx.progress(`backlog ${backlog.toLocaleString('en-US')}: bulk ${bulkJobsPerSecond}/s; sweep of ${NEW_PER_SWEEP} new p50 ${row.p50Ms} ms (new work alone ${row.newOnlyP50Ms} ms)`);
            measured.push(row);
          }
          return measured;
        } finally {
          await stopBoss(boss);
        }
      });
      const base = rows[0]!;
      for (const row of rows.slice(1)) {
        row.ratio = row.p50Ms / base.p50Ms;
        row.newOnlyRatio = row.newOnlyP50Ms / base.newOnlyP50Ms;
        row.pass = row.ratio <= FLAT_RATIO && row.newOnlyRatio <= FLAT_RATIO;
      }
      return { text: report(ctx, rows), data: { newPerSweep: NEW_PER_SWEEP, sweeps: SWEEPS, flatRatio: FLAT_RATIO, scenarios: rows } };
    } finally {
      await db.drop();
    }
  },
};

const round = (ms: number) => Math.round(ms * 10) / 10;

function report(ctx: BenchContext, rows: readonly Row[]): string {
  const table = renderTable(
    'rrrrrrrl',
    ['backlog with jobs', 'bulk sweep jobs/s', `sweep of ${NEW_PER_SWEEP} new, p50 ms`, 'p99 ms', 'new work alone, p50 ms', `p50 vs ${BACKLOGS[0].toLocaleString('en-US')}`, 'new work alone vs', 'flat?'],
    rows.map((row) => [
      row.backlog.toLocaleString('en-US'),
      row.bulkJobsPerSecond.toLocaleString('en-US'),
      String(row.p50Ms),
      String(row.p99Ms),
      String(row.newOnlyP50Ms),
      row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`,
      row.newOnlyRatio === undefined ? 'baseline' : `${row.newOnlyRatio.toFixed(2)}x`,
      row.pass === undefined ? '' : row.pass ? 'met' : 'missed',
    ]),
  );
  return [
    `sweep bench: postgres ${ctx.postgres.settings.server_version} (${ctx.postgres.origin}); ${SWEEPS} sweeps of ${NEW_PER_SWEEP} new records at each backlog`,
    `target: p50 at ${BACKLOGS[1].toLocaleString('en-US')} within ${FLAT_RATIO}x of p50 at ${BACKLOGS[0].toLocaleString('en-US')} (cost follows new work, not the backlog)`,
    '',
    table,
  ].join('\n');
}

if (isMain(import.meta.url)) main([sweepBench]);
