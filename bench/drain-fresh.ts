/**
 * A backlog that arrives in a database nobody has analyzed yet: does the drain run as fast as it
 * does once the planner has statistics? The first minutes of a new deployment look like this, and
 * TRUNCATE keeps a table's column statistics, so each scenario gets a database of its own
 * (ctx.postgres.createDatabase), created and migrated just before it.
 *
 * Per scenario: `rowfleet worker --handler noop --batch B --concurrency 2B` processes (so that a
 * claim really takes B records, as in the measurement; every other flag at its default)
 * are started on the empty table and left to register and LISTEN;
 * then 100,000 records are written through the library's upsertMessages in batches of 1,000, as a
 * producer sends them through POST /upsert, and the drain is timed from the commit of the backlog to
 * its last completion (max(processed_at)), as in the drain bench (bench/lib/record-drain.ts).
 * - fresh: the table has never been analyzed (pg_class.reltuples -1 when the drain starts).
 * - analyzed: the same, with `ANALYZE rowfleet.records` run after the last batch, before the commit.
 * The batches are sent in one transaction, so that the drain starts at one commit (the workers see
 * nothing before it); what it leaves (rows, index entries, one event_log row per message) is what a
 * commit per batch would leave. Autovacuum is switched off on rowfleet.records in both states
 * (ALTER TABLE ... SET (autovacuum_enabled = false)): otherwise it may analyze the fresh table in
 * the middle of its drain, and whether it did would decide the result.
 * Target: the fresh drain >= 0.9x the analyzed one, at each batch (100, 500, 1000).
 *
 *   npm run bench -- drain-fresh [--scale 0.02]
 */
import type pg from 'pg';
import { upsertMessages } from '../src/records/upsert.ts';
import type { Message } from '../src/records/message.ts';
import { jobData } from './lib/backlog.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { withPool } from './lib/pool.ts';
import { drainRecords, microsPerRecord, plural, type DrainRow } from './lib/record-drain.ts';

const BACKLOG = 100_000;
const BATCHES = [100, 500, 1000] as const;
const PROCESSES = 2;
/** What a producer sends per POST /upsert. */
const UPSERT_BATCH = 1_000;
const TARGET_RATIO = 0.9;

type State = 'fresh' | 'analyzed';

interface Scenario {
  state: State;
  batch: number;
  row: DrainRow;
  /** pg_class.reltuples of rowfleet.records right after the backlog's commit (-1: never analyzed). */
  reltuples: number;
  upsertSeconds: number;
}

interface Comparison {
  batch: number;
  fresh: number;
  analyzed: number;
  ratio: number;
  pass: boolean;
}

export const drainFreshBench: Bench = {
  name: 'drain-fresh',
  summary: `records/s draining ${BACKLOG.toLocaleString('en-US')} upserted records in a never-analyzed database vs after ANALYZE, batch ${BATCHES.join(' / ')}`,
  budgetMinutes: 15,
  async run(ctx) {
    const backlog = ctx.scaled(BACKLOG, UPSERT_BATCH);
    const scenarios: Scenario[] = [];
    for (const batch of BATCHES) {
      for (const state of ['fresh', 'analyzed'] as const) scenarios.push(await drainOnce(ctx, state, batch, backlog));
    }
    const comparisons: Comparison[] = BATCHES.map((batch) => {
      const fresh = scenarios.find((s) => s.batch === batch && s.state === 'fresh')!.row.perSecond;
      const analyzed = scenarios.find((s) => s.batch === batch && s.state === 'analyzed')!.row.perSecond;
      const ratio = analyzed > 0 ? fresh / analyzed : 0;
      return { batch, fresh, analyzed, ratio, pass: ratio >= TARGET_RATIO };
    });
    return { text: report(ctx, backlog, scenarios, comparisons), data: { backlog, processes: PROCESSES, upsertBatch: UPSERT_BATCH, targetRatio: TARGET_RATIO, comparisons, scenarios } };
  },
};

async function drainOnce(ctx: BenchContext, state: State, batch: number, backlog: number): Promise<Scenario> {
  const db = await ctx.postgres.createDatabase(`rowfleet_bench_fresh_${state}`);
  try {
    return await withPool(db.url, 1, async (pool) => {
      await pool.query('ALTER TABLE rowfleet.records SET (autovacuum_enabled = false)');
      let upsertSeconds = 0;
      let reltuplesAtStart = Number.NaN;
      const row = await drainRecords(
        ctx,
        db.url,
        pool,
        { engine: 'direct', scenario: `${state}, ${plural(PROCESSES)}, --batch ${batch}`, backlog, processes: PROCESSES, batch, concurrency: 2 * batch },
        {
          release: async (db) => {
            const started = performance.now();
            await upsertBacklog(db, backlog, state === 'analyzed');
            upsertSeconds = (performance.now() - started) / 1000;
            reltuplesAtStart = await reltuples(db);
            // The backlog's transaction and the reltuples reading.
            return { commits: 2, note: `${backlog.toLocaleString('en-US')} records upserted in batches of ${UPSERT_BATCH} in ${upsertSeconds.toFixed(1)}s${state === 'analyzed' ? ', then analyzed' : ''}` };
          },
        },
      );
      const { rows } = await pool.query<{ analyzes: number }>(
        `SELECT (analyze_count + autoanalyze_count)::int AS analyzes FROM pg_stat_user_tables WHERE relid = 'rowfleet.records'::regclass`,
      );
      if (state === 'fresh' && rows[0]!.analyzes > 0) row.notes.push(`rowfleet.records was analyzed ${rows[0]!.analyzes} time(s): not fresh`);
      if (state === 'fresh' && reltuplesAtStart !== -1) row.notes.push(`reltuples was ${reltuplesAtStart} at the start, not -1 (never analyzed)`);
      return { state, batch, row, reltuples: reltuplesAtStart, upsertSeconds };
    });
  } finally {
    await db.drop();
  }
}

/** The backlog through upsertMessages, UPSERT_BATCH messages a call, in one transaction on one connection. */
async function upsertBacklog(pool: pg.Pool, count: number, analyze: boolean): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    try {
      for (let from = 1; from <= count; from += UPSERT_BATCH) {
        const messages: Message[] = Array.from({ length: Math.min(UPSERT_BATCH, count - from + 1) }, (_, k) => ({ id: `fresh-${from + k}`, data: jobData(from + k) }));
        await upsertMessages(client, messages);
      }
      if (analyze) await client.query('ANALYZE rowfleet.records');
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    }
  } finally {
    client.release();
  }
}

async function reltuples(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = 'rowfleet.records'::regclass`);
  return rows[0]!.reltuples;
}

const met = (ok: boolean) => (ok ? 'met' : 'missed');
const rate = (n: number) => n.toLocaleString('en-US');

function report(ctx: BenchContext, backlog: number, scenarios: readonly Scenario[], comparisons: readonly Comparison[]): string {
  const { settings } = ctx.postgres;
  const summary = renderTable(
    'rrrrll',
    ['--batch', 'fresh records/s', 'analyzed records/s', 'fresh / analyzed', 'target', 'result'],
    comparisons.map((c) => [String(c.batch), rate(c.fresh), rate(c.analyzed), `${c.ratio.toFixed(2)}x`, `>= ${TARGET_RATIO}x`, met(c.pass)]),
  );
  const detail = renderTable(
    'lrrrrrrl',
    ['scenario', 'reltuples at start', 'upsert s', 'records/s', 'seconds', 'txns/1k records', 'CPU µs/record workers / pg', 'CPU % bench / workers / pg / irq / other / idle'],
    scenarios.map(({ row, reltuples: tuples, upsertSeconds }) => [
      row.scenario,
      rate(Math.round(tuples)),
      upsertSeconds.toFixed(1),
      rate(row.perSecond),
      row.seconds.toFixed(2),
      row.commitsPer1k === undefined ? '-' : String(row.commitsPer1k),
      ['workers', 'postgres'].map((group) => microsPerRecord(row, group)).join(' / '),
      ['bench', 'workers', 'postgres', 'irq', 'other', 'idle'].map((group) => row.cpu[group] ?? '-').join(' / '),
    ]),
  );
  const notes = scenarios.flatMap(({ row }) => row.notes.map((note) => `note: ${row.scenario}: ${note}`));
  const header = [
    `drain-fresh bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}; ${rate(backlog)} records upserted (upsertMessages, ${UPSERT_BATCH} a call) into a new database, then drained by ${PROCESSES} \`rowfleet worker --handler noop --batch B --concurrency 2B\` (other flags default)`,
    'fresh: never analyzed; analyzed: ANALYZE rowfleet.records before the drain; autovacuum off on rowfleet.records in both; timed from the backlog commit to the last completion',
  ].join('\n');
  return [header, '', summary, '', detail, ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

if (isMain(import.meta.url)) main([drainFreshBench]);
