/**
 * What one claim costs as the backlog grows: claimDue latency (p50 / p99 per call) with 10,000
 * and with 1,000,000 due records, beside 200,000 PROCESSED records (history every claim must
 * ignore), and the statement's plan (EXPLAIN ANALYZE, BUFFERS) at each size.
 * Target (the issue's): the cost stays flat, read here as p50 at 1,000,000 within 1.5x of p50 at
 * 10,000 for batch 100, the claim the worker makes by default.
 *
 * Each call claims inside a transaction that is rolled back, so the backlog stays the size it is
 * meant to be; the claim is timed alone, without BEGIN and ROLLBACK.
 *
 *   npm run bench -- claim
 */
import type pg from 'pg';
import { claimDue } from '../src/records/lifecycle.ts';
import { insertBacklog } from './lib/backlog.ts';
import { explainAnalyze, planOutline } from './lib/explain.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { awaitQuiet } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';

const HISTORY = 200_000;
const BACKLOGS = [10_000, 1_000_000] as const;
/** batch 100 is the worker's default; 1000 is the largest batch the drain bench runs. */
const CLAIMS = [
  { batch: 100, calls: 300, warmup: 30 },
  { batch: 1000, calls: 30, warmup: 3 },
] as const;
const FLAT_RATIO = 1.5;
const DUE_INDEX = 'records_due_idx';

interface Row {
  backlog: number;
  batch: number;
  calls: number;
  p50Ms: number;
  p99Ms: number;
  /** From the plan: whether it reads records_due_idx, and whether it also scans the whole table. */
  usesDueIndex: boolean;
  seqScan: boolean;
  executionMs: number;
  sharedHit: number;
  plan: string[];
  ratio?: number;
  pass?: boolean;
}

export const claimBench: Bench = {
  name: 'claim',
  summary: 'claimDue latency and plan with 10,000 and 1,000,000 due records (it must stay flat)',
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_claim');
    try {
      const rows = await withPool(db.url, 1, async (pool) => {
        const measured: Row[] = [];
        ctx.progress(`writing ${HISTORY.toLocaleString('en-US')} PROCESSED records`);
        await insertBacklog(pool, { count: HISTORY, prefix: 'done-', status: 'PROCESSED' });
        let loaded = 0;
        for (const backlog of BACKLOGS) {
          ctx.progress(`writing ${(backlog - loaded).toLocaleString('en-US')} due records (backlog ${backlog.toLocaleString('en-US')})`);
          const started = performance.now();
          await insertBacklog(pool, { count: backlog - loaded, prefix: 'due-', from: loaded + 1, status: 'COMPLETED' });
          loaded = backlog;
          // What autovacuum would have done by the time a backlog this size had built up.
          await pool.query('VACUUM ANALYZE rowfleet.records');
          // The load's dirty pages are written now, not by a checkpoint in the middle of the timing.
          await pool.query('CHECKPOINT').catch(() => undefined);
          ctx.progress(`backlog ${backlog.toLocaleString('en-US')} ready in ${((performance.now() - started) / 1000).toFixed(1)}s`);
          for (const claim of CLAIMS) measured.push(await measureClaims(ctx, pool, backlog, claim));
        }
        return measured;
      });
      for (const row of rows) {
        const base = rows.find((r) => r.batch === row.batch && r.backlog === BACKLOGS[0]);
        if (base === undefined || row === base) continue;
        row.ratio = row.p50Ms / base.p50Ms;
        row.pass = row.ratio <= FLAT_RATIO;
      }
      return { text: report(ctx, rows), data: { history: HISTORY, flatRatio: FLAT_RATIO, scenarios: rows } };
    } finally {
      await db.drop();
    }
  },
};

async function measureClaims(ctx: BenchContext, pool: pg.Pool, backlog: number, { batch, calls, warmup }: (typeof CLAIMS)[number]): Promise<Row> {
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const client = await pool.connect();
  try {
    const claim = (db: pg.PoolClient) => claimDue(db, { owner: 'bench', limit: batch, leaseMs: 30_000 });
    const plan = await explainAnalyze(client, claim);
    const latencies: number[] = [];
    for (let i = 0; i < warmup + calls; i++) {
      await client.query('BEGIN');
      const started = performance.now();
      const claimed = await claim(client);
      const elapsed = performance.now() - started;
      await client.query('ROLLBACK');
      if (claimed.length !== batch) throw new Error(`claimed ${claimed.length} records, expected ${batch}`);
      if (i >= warmup) latencies.push(elapsed);
    }
    const row: Row = {
      backlog,
      batch,
      calls,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      usesDueIndex: plan.some((line) => line.includes(DUE_INDEX)),
      seqScan: plan.some((line) => /Seq Scan on records/.test(line)),
      executionMs: Number(/Execution Time: ([\d.]+) ms/.exec(plan.join('\n'))?.[1] ?? NaN),
      sharedHit: Number(/Buffers: shared hit=(\d+)/.exec(plan[1] ?? '')?.[1] ?? NaN),
      plan,
    };
    ctx.progress(`backlog ${backlog.toLocaleString('en-US')}, batch ${batch}: p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms${row.seqScan ? ' (the plan scans the whole table)' : ''}`);
    return row;
  } finally {
    client.release();
  }
}

function report(ctx: BenchContext, rows: readonly Row[]): string {
  const { settings } = ctx.postgres;
  const table = renderTable(
    'rrrrrrrllrl',
    ['due backlog', 'batch', 'calls', 'p50 ms', 'p99 ms', 'µs/row p50', 'buffers hit', `uses ${DUE_INDEX}`, 'seq scan', `p50 vs ${BACKLOGS[0].toLocaleString('en-US')}`, 'flat?'],
    rows.map((row) => [
      row.backlog.toLocaleString('en-US'),
      String(row.batch),
      String(row.calls),
      String(row.p50Ms),
      String(row.p99Ms),
      String(Math.round((row.p50Ms * 1000) / row.batch)),
      String(row.sharedHit),
      row.usesDueIndex ? 'yes' : 'NO',
      row.seqScan ? 'YES' : 'no',
      row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`,
      row.pass === undefined ? '' : row.pass ? 'PASS' : 'MISS',
    ]),
  );
  const plans = rows.flatMap((row) => [
    '',
    `plan, backlog ${row.backlog.toLocaleString('en-US')}, batch ${row.batch} (EXPLAIN ANALYZE, outline; full plan in the JSON):`,
    ...planOutline(row.plan).map((line) => `  ${line}`),
  ]);
  const header = [
    `claim bench: postgres ${settings.server_version} (${ctx.postgres.origin}); claimDue inside a rolled-back transaction, ${HISTORY.toLocaleString('en-US')} PROCESSED records beside the backlog`,
    `target: p50 at ${BACKLOGS[1].toLocaleString('en-US')} due within ${FLAT_RATIO}x of p50 at ${BACKLOGS[0].toLocaleString('en-US')} (the claim costs O(batch), not O(table))`,
  ].join('\n');
  return [header, '', table, ...plans].join('\n');
}

if (isMain(import.meta.url)) main([claimBench]);
