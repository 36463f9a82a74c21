/**
 * What one claim costs as the backlog grows: claimDue latency (p50 / p99 per call) with 10,000,
 * 1,000,000 and 5,000,000 due records beside 200,000 PROCESSED records (history every claim must
 * ignore), on a table never analyzed and on an analyzed one, with the statement's plan at each
 * (EXPLAIN ANALYZE, BUFFERS; through auto_explain for the statements inside rowfleet's claim
 * function, whose own EXPLAIN shows only a Function Scan).
 * Target (the issue's): the cost stays flat, read here as p50 at 5,000,000 (and at 1,000,000)
 * within 1.2x of p50 at 10,000, in each state, for batch 100 (the worker's default) and 1000.
 *
 * The states:
 * - fresh: a database just created, its backlog written in bulk (INSERT ... SELECT FROM
 *   generate_series, in chunks), never analyzed. Autovacuum would analyze a table this size while it
 *   loads, so it is switched off on rowfleet.records (`ALTER TABLE ... SET (autovacuum_enabled =
 *   false)`) for the fresh measurements and switched back on after them. The backlog grows
 *   10,000 -> 1,000,000 -> 5,000,000 in that database, measured at each size, never analyzed.
 * - analyzed: VACUUM ANALYZE after each load, what autovacuum would have done by the time a backlog
 *   this size had built up. 5,000,000 is measured in the fresh database once it has been analyzed;
 *   the smaller sizes in a second database, so that the fresh one is not analyzed before its end.
 *
 * Each call claims inside a transaction that is rolled back, so the backlog stays the size it is
 * meant to be; the claim is timed alone, without BEGIN and ROLLBACK.
 *
 *   npm run bench -- claim [--quick: 10,000 and 1,000,000 only] [--scale 0.01]
 */
import type pg from 'pg';
import { claimDue } from '../src/records/claim.ts';
import { insertBacklog, insertBacklogChunked } from './lib/backlog.ts';
import { explainAnalyze, explainNested } from './lib/explain.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { awaitQuiet } from './lib/quiet.ts';
import { withPool } from './lib/pool.ts';
import { checkpoint } from './lib/record-drain.ts';

const HISTORY = 200_000;
const BACKLOGS = [10_000, 1_000_000, 5_000_000] as const;
const QUICK_BACKLOGS = [10_000, 1_000_000] as const;
/** batch 100 is the worker's default; 1000 is the largest batch the drain bench runs. */
const CLAIMS = [
  { batch: 100, calls: 300, warmup: 30 },
  { batch: 1000, calls: 60, warmup: 5 },
] as const;
const FLAT_RATIO = 1.2;
const DUE_INDEX = 'records_due_idx';

type State = 'fresh' | 'analyzed';

interface Row {
  state: State;
  backlog: number;
  batch: number;
  calls: number;
  p50Ms: number;
  p99Ms: number;
  /** pg_class.reltuples when measured: -1 means never analyzed (nor vacuumed). */
  reltuples: number;
  /** From the plan: whether it reads records_due_idx, and whether it also scans the whole table. */
  usesDueIndex: boolean;
  seqScan: boolean;
  /** Whether the plan is the statements inside the claim function (auto_explain) or only its call. */
  nested: boolean;
  executionMs: number;
  sharedHit: number;
  plan: string[];
  ratio?: number;
  pass?: boolean;
}

export const claimBench: Bench = {
  name: 'claim',
  summary: 'claimDue latency and plan with 10,000 / 1,000,000 / 5,000,000 due records, never analyzed and analyzed (it must stay flat)',
  budgetMinutes: 20,
  async run(ctx) {
    const sizes = (ctx.quick ? QUICK_BACKLOGS : BACKLOGS).map((n) => ctx.scaled(n, 2_000));
    const history = ctx.scaled(HISTORY, 1_000);
    const largest = sizes.at(-1)!;
    const rows: Row[] = [];

    // The fresh database: grown through every size, never analyzed; analyzed at the end for the largest.
    const fresh = await ctx.postgres.createDatabase('rowfleet_bench_claim_fresh');
    try {
      await withPool(fresh.url, 1, async (pool) => {
        await pool.query('ALTER TABLE rowfleet.records SET (autovacuum_enabled = false)');
        ctx.progress(`fresh database, autovacuum off on rowfleet.records`);
        const grow = grower(ctx, pool, history);
        for (const size of sizes) {
          await grow(size);
          await checkpoint(pool);
          for (const claim of CLAIMS) rows.push(await measureClaims(ctx, pool, 'fresh', size, claim));
        }
        await pool.query('ALTER TABLE rowfleet.records RESET (autovacuum_enabled)');
        ctx.progress(`autovacuum back on; VACUUM ANALYZE at ${largest.toLocaleString('en-US')}`);
        await pool.query('VACUUM ANALYZE rowfleet.records');
        await checkpoint(pool);
        for (const claim of CLAIMS) rows.push(await measureClaims(ctx, pool, 'analyzed', largest, claim));
      });
    } finally {
      await fresh.drop();
    }

    // The analyzed database, for the smaller sizes.
    const analyzed = await ctx.postgres.createDatabase('rowfleet_bench_claim_analyzed');
    try {
      await withPool(analyzed.url, 1, async (pool) => {
        const grow = grower(ctx, pool, history);
        for (const size of sizes.slice(0, -1)) {
          await grow(size);
          await pool.query('VACUUM ANALYZE rowfleet.records');
          await checkpoint(pool);
          for (const claim of CLAIMS) rows.push(await measureClaims(ctx, pool, 'analyzed', size, claim));
        }
      });
    } finally {
      await analyzed.drop();
    }

    rows.sort((a, b) => a.state.localeCompare(b.state) * -1 || a.batch - b.batch || a.backlog - b.backlog);
    for (const row of rows) {
      const base = rows.find((r) => r.state === row.state && r.batch === row.batch && r.backlog === sizes[0]);
      if (base === undefined || row === base) continue;
      row.ratio = row.p50Ms / base.p50Ms;
      row.pass = row.ratio <= FLAT_RATIO;
    }
    return { text: report(ctx, rows, sizes, history), data: { history, flatRatio: FLAT_RATIO, sizes, scenarios: rows } };
  },
};

/** Writes the history once, then grows the due backlog to each size asked for, in insertion order. */
function grower(ctx: BenchContext, pool: pg.Pool, history: number): (size: number) => Promise<void> {
  let loaded = 0;
  let base: Date | undefined;
  return async (size) => {
    const started = performance.now();
    if (base === undefined) {
      ctx.progress(`writing ${history.toLocaleString('en-US')} PROCESSED records`);
      await insertBacklog(pool, { count: history, prefix: 'done-', status: 'PROCESSED' });
      base = (await pool.query<{ now: Date }>('SELECT now()')).rows[0]!.now;
    }
    ctx.progress(`writing ${(size - loaded).toLocaleString('en-US')} due records (backlog ${size.toLocaleString('en-US')})`);
    // One end for every step: row n is due at base - (10,000,000 - n) ms, oldest first, whatever the step.
    await insertBacklogChunked(pool, { count: size - loaded, prefix: 'due-', from: loaded + 1, status: 'COMPLETED', base, end: 10_000_000 }, { progress: ctx.progress });
    loaded = size;
    ctx.progress(`backlog ${size.toLocaleString('en-US')} ready in ${((performance.now() - started) / 1000).toFixed(1)}s`);
  };
}

async function measureClaims(ctx: BenchContext, pool: pg.Pool, state: State, backlog: number, { batch, calls, warmup }: (typeof CLAIMS)[number]): Promise<Row> {
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  const client = await pool.connect();
  try {
    const claim = (db: pg.PoolClient) => claimDue(db, { owner: 'bench', limit: batch, leaseMs: 30_000 });
    const { rows: stats } = await client.query<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = 'rowfleet.records'::regclass`);
    const nestedPlan = await explainNested(client, claim);
    const plan = nestedPlan ?? (await explainAnalyze(client, claim));
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
    const text = plan.join('\n');
    const row: Row = {
      state,
      backlog,
      batch,
      calls,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      reltuples: stats[0]!.reltuples,
      usesDueIndex: plan.some((line) => line.includes(DUE_INDEX)),
      seqScan: plan.some((line) => /Seq Scan on records/.test(line)),
      nested: nestedPlan !== undefined,
      executionMs: Number((/Execution Time: ([\d.]+) ms/.exec(text) ?? /duration: ([\d.]+) ms/.exec(text))?.[1] ?? NaN),
      sharedHit: Number(/Buffers: shared hit=(\d+)/.exec(text)?.[1] ?? NaN),
      plan,
    };
    ctx.progress(`${state}, backlog ${backlog.toLocaleString('en-US')}, batch ${batch}: p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms${row.seqScan ? ' (the plan scans the whole table)' : ''}`);
    return row;
  } finally {
    client.release();
  }
}

function report(ctx: BenchContext, rows: readonly Row[], sizes: readonly number[], history: number): string {
  const { settings } = ctx.postgres;
  const n = (value: number) => value.toLocaleString('en-US');
  const table = renderTable(
    'lrrrrrrrrllrll',
    ['state', 'due backlog', 'reltuples', 'batch', 'calls', 'p50 ms', 'p99 ms', 'µs/row p50', 'buffers hit', `uses ${DUE_INDEX}`, 'seq scan', `p50 vs ${n(sizes[0]!)}`, `target <= ${FLAT_RATIO}x`, 'plan seen'],
    rows.map((row) => [
      row.state,
      n(row.backlog),
      n(Math.round(row.reltuples)),
      String(row.batch),
      String(row.calls),
      String(row.p50Ms),
      String(row.p99Ms),
      String(Math.round((row.p50Ms * 1000) / row.batch)),
      Number.isNaN(row.sharedHit) ? '-' : String(row.sharedHit),
      row.usesDueIndex ? 'yes' : 'NO',
      row.seqScan ? 'YES' : 'no',
      row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`,
      row.pass === undefined ? '' : row.pass ? 'met' : 'missed',
      row.nested ? 'inside the function' : 'the call only',
    ]),
  );
  const plans = rows.flatMap((row) => [
    '',
    `plan, ${row.state}, backlog ${n(row.backlog)}, batch ${row.batch} (outline; full plan in the JSON):`,
    ...outline(row.plan).map((line) => `  ${line}`),
  ]);
  const header = [
    `claim bench: postgres ${settings.server_version} (${ctx.postgres.origin}); claimDue inside a rolled-back transaction, ${n(history)} PROCESSED records beside the backlog`,
    'fresh: a new database, bulk-loaded, never analyzed (autovacuum off on rowfleet.records while measured; reltuples -1); analyzed: VACUUM ANALYZE after the load',
    `target: p50 at every size within ${FLAT_RATIO}x of p50 at ${n(sizes[0]!)} in the same state (the claim costs O(batch), not O(table))`,
  ].join('\n');
  return [header, '', table, ...plans].join('\n');
}

/**
 * The plan's nodes and timings: lines with actual times (the nodes), CTE and InitPlan headers, and
 * the timings; auto_explain's query text (the function's SQL, many lines) and per-node details go.
 */
function outline(plan: readonly string[]): string[] {
  return plan.filter((line) => /\(actual |^\s*(CTE|InitPlan|SubPlan) |^duration:|^(Planning|Execution) Time/.test(line));
}

if (isMain(import.meta.url)) main([claimBench]);
