/**
 * What the live dashboard costs the API as the table grows. The dashboard polls, every 3 s,
 * GET /stats, GET /stats/throughput?minutes=15, GET /records?status=FAILED&recent=1&limit=50 (the
 * latest failures), GET /records/:id/timeline?kind=K (the record opened) and POST /requeue
 * {"all": true, "dryRun": true} (the count behind "requeue all"); a Prometheus scrape adds GET
 * /metrics, which reads the same status. Each is driven in-process through the API's own
 * buildServer(...).inject(...), so that what is timed is the API's work (routing, validation,
 * its statements, serialization) and not an HTTP client's: p50 / p99 per endpoint over up to
 * 200 calls after 20 warm-up calls (a window of --seconds caps the slow ones, at least 20 calls).
 *
 * The table: 10,000 records (the baseline) and 1,000,000, as a user meets them, with the same mix
 * at each size: 1% FAILED (last_error text, updated_at spread over a week), 1% COMPLETED and due,
 * 32 PROCESSING (leased by 4 registered workers, 8 each), the rest PROCESSED, over 3 kinds; one
 * event_log row per record (its applied message) and 3 more per FAILED record (2 retried, 1
 * failed); a day of rowfleet.stats rows (4 backends a minute). The rows are written by INSERT ...
 * SELECT FROM generate_series in chunks of 250,000, as bench/lib/backlog.ts does (its helper writes
 * one status and one kind only, hence a loader of its own here).
 * - fresh: a new database, loaded in bulk, never analyzed: autovacuum off on rowfleet.records and
 *   rowfleet.event_log while it loads and is measured (reltuples -1), as in the claim bench. 10,000
 *   is measured, then the same database grows to 1,000,000 and is measured again.
 * - analyzed: VACUUM ANALYZE after the load (autovacuum back on), what autovacuum would have done by
 *   the time a table this size had built up. 1,000,000 is the fresh database once analyzed; 10,000
 *   a database of its own, so that the fresh one is not analyzed before its end.
 * - 1,000,000 with the backlog of 10,000 (100 FAILED, 100 COMPLETED, 32 PROCESSING: the absolute
 *   numbers 10,000 has at 1%), fresh and analyzed, in a third database: what the table's size alone costs.
 * 5,000,000 is not measured: its load (~2 min on a 2-core machine) would take the run past ~8 minutes
 * (the report gives the estimate from its own numbers); --quick measures the same sizes.
 *
 * Targets (the issue's "stays cheap with a million records"):
 * - GET /stats/throughput and the timeline: p50 at 1,000,000 within 2x of p50 at 10,000, in each
 *   state (flat: their cost must not follow the table).
 * - GET /stats and /metrics read the backlog (COMPLETED, FAILED, PROCESSING, through their partial
 *   indexes; PROCESSED is estimated on a large table), the latest failures and the requeue dry run
 *   every FAILED record (records_failed_idx, then a top-50 sort by updated_at or a count): with the
 *   mix, 1,000,000 holds 100x the backlog of 10,000, so their ratio is reported beside that 100x,
 *   not held to 2x; with the backlog of 10,000 at 1,000,000 they must be within 2x (they do not
 *   depend on the table's size).
 * Plans: every endpoint's statements (EXPLAIN ANALYZE, BUFFERS, through auto_explain, so that the
 * statements inside rowfleet.due_summary are seen too) at each size and state, with whether any
 * scans rowfleet.records whole (Seq Scan); the plans of the status counts, the latest failures and
 * the requeue count at 1,000,000 fresh are printed. Benchmarks report: a missed target exits 0.
 *
 *   npm run bench -- dashboard [--seconds 12] [--scale 0.01: a check of the bench, not a result]
 */
import type { FastifyInstance, InjectOptions } from 'fastify';
import type pg from 'pg';
import { loadConfig } from '../src/config.ts';
import { buildServer } from '../src/http/server.ts';
import { silentLogger } from '../src/log.ts';
import { inspectRecord } from '../src/ops/inspect.ts';
import { listRecords } from '../src/ops/list.ts';
import { requeue } from '../src/ops/requeue.ts';
import { readStatus, readThroughput } from '../src/ops/status.ts';
import { explainNested } from './lib/explain.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { percentile } from './lib/load.ts';
import { withPool } from './lib/pool.ts';
import { awaitQuiet } from './lib/quiet.ts';
import { checkpoint } from './lib/record-drain.ts';

const BASELINE = 10_000;
const LARGE = 1_000_000;
/** Every 100th record is FAILED (1%), every 100th + 1 COMPLETED and due (1%). */
const EVERY = 100;
/** PROCESSING: record n with n % 100 = 50 and n <= 3,200, 32 in all at every size. */
const PROCESSING_UP_TO = 3_200;
const WORKERS = 4;
const KINDS = ['order', 'invoice', 'email'] as const;
const CHUNK = 250_000;
/** `backlogUpTo` for the mix: every 100th record FAILED and every 100th + 1 COMPLETED, however many (an int4 for the SQL). */
const ALL_FAILED = 2_147_483_647;
const CALLS = 200;
const WARMUP = 20;
const MIN_CALLS = 20;
const FLAT_RATIO = 2;
/** Record 100: FAILED at every size and in every variant, with 4 events (applied, retried x2, failed). */
const TIMELINE = { kind: 'invoice', id: 'r-100' }; // KINDS[100 % 3]

type State = 'fresh' | 'analyzed';
type Variant = 'mix' | 'same-backlog';
type EndpointName = 'stats' | 'throughput' | 'recent' | 'timeline' | 'requeue' | 'metrics';

interface Endpoint {
  name: EndpointName;
  label: string;
  /** What its cost may follow: nothing (flat), the FAILED records, or the backlog (every status but PROCESSED). */
  reads: 'flat' | 'failed' | 'backlog';
  request: InjectOptions;
  /** The endpoint's work, called on one connection for its plans (the route handler's function). */
  work?: (db: pg.Pool) => Promise<unknown>;
  /** A wrong answer means a broken bench, not a slow one: checked on the first call. */
  check(body: string, expected: Expected): string | undefined;
}

interface Expected {
  failed: number;
  processing: number;
}

const json = (body: string) => JSON.parse(body) as Record<string, unknown>;

const ENDPOINTS: readonly Endpoint[] = [
  {
    name: 'stats',
    label: 'GET /stats',
    reads: 'backlog',
    request: { method: 'GET', url: '/stats' },
    work: (db) => readStatus(db),
    check(body, { failed, processing }) {
      const counts = json(body).counts as Record<string, number>;
      return counts.FAILED === failed && counts.PROCESSING === processing ? undefined : `counts ${JSON.stringify(counts)}, expected FAILED ${failed} and PROCESSING ${processing}`;
    },
  },
  {
    name: 'throughput',
    label: 'GET /stats/throughput?minutes=15',
    reads: 'flat',
    request: { method: 'GET', url: '/stats/throughput?minutes=15' },
    work: (db) => readThroughput(db, 15),
    check(body) {
      const minutes = json(body).minutes as unknown[];
      return minutes.length === 15 ? undefined : `${minutes.length} minutes, expected 15`;
    },
  },
  {
    name: 'recent',
    label: 'GET /records?status=FAILED&recent=1&limit=50',
    reads: 'failed',
    request: { method: 'GET', url: '/records?status=FAILED&recent=1&limit=50' },
    work: (db) => listRecords(db, { status: 'FAILED', recent: true, limit: 50 }),
    check(body, { failed }) {
      const records = json(body).records as { status: string }[];
      return records.length === Math.min(50, failed) && records.every((r) => r.status === 'FAILED') ? undefined : `${records.length} records, expected ${Math.min(50, failed)} FAILED`;
    },
  },
  {
    name: 'timeline',
    label: 'GET /records/:id/timeline?kind=K',
    reads: 'flat',
    request: { method: 'GET', url: `/records/${TIMELINE.id}/timeline?kind=${TIMELINE.kind}` },
    work: (db) => inspectRecord(db, TIMELINE),
    check(body) {
      const timeline = json(body).timeline as unknown[] | undefined;
      return timeline?.length === 4 ? undefined : `timeline ${body.slice(0, 200)}, expected 4 entries`;
    },
  },
  {
    name: 'requeue',
    label: 'POST /requeue {all, dryRun}',
    reads: 'failed',
    request: { method: 'POST', url: '/requeue', payload: { all: true, dryRun: true } },
    work: (db) => requeue(db, { status: 'FAILED', dryRun: true, via: 'api' }),
    check(body, { failed }) {
      const answer = json(body);
      return answer.matched === failed && answer.dryRun === true && answer.requeued === 0 ? undefined : `answered ${body}, expected matched ${failed}`;
    },
  },
  {
    name: 'metrics',
    label: 'GET /metrics',
    reads: 'backlog',
    request: { method: 'GET', url: '/metrics' },
    // The same readStatus as GET /stats: its plans are those of /stats.
    check(body) {
      return body.includes('rowfleet_') ? undefined : 'no rowfleet_ metrics in the answer';
    },
  },
];

interface Scenario {
  state: State;
  size: number;
  variant: Variant;
  failed: number;
  /** pg_class.reltuples of rowfleet.records when measured: -1 means never analyzed. */
  reltuples: number;
  /** GET /stats said PROCESSED was estimated (the table over EXACT_COUNT_UP_TO_BYTES) rather than counted. */
  processedEstimated?: boolean;
  results: Result[];
}

interface Result {
  endpoint: EndpointName;
  calls: number;
  p50Ms: number;
  p99Ms: number;
  /** From the plans of its statements: one of them reads rowfleet.records whole. */
  seqScan?: boolean;
  /** Its statements: query text (first line), duration, plan lines. */
  statements?: Statement[];
}

interface Statement {
  query: string;
  durationMs: number;
  plan: string[];
}

interface Comparison {
  state: State;
  endpoint: EndpointName;
  variant: Variant;
  base: Result;
  large: Result;
  baseFailed: number;
  largeFailed: number;
  ratio: number;
  /** Undefined for the FAILED-reading endpoints with the mix: reported beside the FAILED ratio. */
  pass?: boolean;
}

export const dashboardBench: Bench = {
  name: 'dashboard',
  summary: 'the dashboard\'s endpoints (stats, throughput, latest failures, timeline, requeue dry run, metrics) at 10,000 and 1,000,000 records, never analyzed and analyzed (they must stay flat)',
  budgetMinutes: 8,
  async run(ctx) {
    const base = ctx.scaled(BASELINE, 2_000);
    const large = ctx.scaled(LARGE, 10_000);
    const failedOf = (size: number) => Math.floor(size / EVERY);
    const scenarios: Scenario[] = [];
    const loads: { rows: number; seconds: number }[] = [];
    const load = (pool: pg.Pool, from: number, to: number, backlogUpTo: number) => loadRecords(ctx, pool, from, to, backlogUpTo).then((l) => void loads.push(l));

    // The fresh database: 10,000, then grown to 1,000,000, never analyzed; then analyzed at 1,000,000.
    await inDatabase(ctx, 'rowfleet_bench_dashboard_fresh', async (setup, api) => {
      await autovacuum(setup, false);
      ctx.progress('fresh database, autovacuum off on rowfleet.records and rowfleet.event_log');
      await load(setup, 1, base, ALL_FAILED);
      scenarios.push(await measure(ctx, setup, api, { state: 'fresh', size: base, variant: 'mix', failed: failedOf(base) }, ENDPOINTS));
      await load(setup, base + 1, large, ALL_FAILED);
      scenarios.push(await measure(ctx, setup, api, { state: 'fresh', size: large, variant: 'mix', failed: failedOf(large) }, ENDPOINTS));
      await analyze(ctx, setup, large);
      scenarios.push(await measure(ctx, setup, api, { state: 'analyzed', size: large, variant: 'mix', failed: failedOf(large) }, ENDPOINTS));
    });

    // 10,000 analyzed, in a database of its own.
    await inDatabase(ctx, 'rowfleet_bench_dashboard_small', async (setup, api) => {
      await load(setup, 1, base, ALL_FAILED);
      await analyze(ctx, setup, base);
      scenarios.push(await measure(ctx, setup, api, { state: 'analyzed', size: base, variant: 'mix', failed: failedOf(base) }, ENDPOINTS));
    });

    // 1,000,000 records with the backlog of 10,000 (as many FAILED, COMPLETED and PROCESSING): fresh, then analyzed.
    await inDatabase(ctx, 'rowfleet_bench_dashboard_fixed', async (setup, api) => {
      await autovacuum(setup, false);
      await load(setup, 1, large, base);
      const fixed = { size: large, variant: 'same-backlog', failed: failedOf(base) } as const;
      scenarios.push(await measure(ctx, setup, api, { state: 'fresh', ...fixed }, ENDPOINTS));
      await analyze(ctx, setup, large);
      scenarios.push(await measure(ctx, setup, api, { state: 'analyzed', ...fixed }, ENDPOINTS));
    });

    const comparisons = compare(scenarios, base, large);
    const rowsLoaded = loads.reduce((n, l) => n + l.rows, 0);
    const loadRate = Math.round(rowsLoaded / loads.reduce((s, l) => s + l.seconds, 0));
    return {
      text: report(ctx, scenarios, comparisons, { base, large, loadRate }),
      data: {
        sizes: [base, large],
        flatRatio: FLAT_RATIO,
        calls: CALLS,
        warmup: WARMUP,
        loadRowsPerSecond: loadRate,
        scenarios,
        comparisons: comparisons.map(({ base: b, large: l, ...c }) => ({ ...c, baseP50Ms: b.p50Ms, largeP50Ms: l.p50Ms, baseP99Ms: b.p99Ms, largeP99Ms: l.p99Ms })),
      },
    };
  },
};

/** A migrated database of its own, a pool for the bench's statements and the API on a pool of its own; dropped after. */
async function inDatabase(ctx: BenchContext, prefix: string, fn: (setup: pg.Pool, api: FastifyInstance) => Promise<void>): Promise<void> {
  const db = await ctx.postgres.createDatabase(prefix);
  try {
    await withPool(db.url, 1, (setup) =>
      withPool(db.url, 4, async (pool) => {
        const app = buildServer({ config: loadConfig({}, { databaseUrl: db.url }), pool, log: silentLogger });
        try {
          await app.ready();
          await fn(setup, app);
        } finally {
          await app.close();
        }
      }),
    );
  } finally {
    await db.drop();
  }
}

async function autovacuum(pool: pg.Pool, on: boolean): Promise<void> {
  for (const table of ['rowfleet.records', 'rowfleet.event_log']) {
    await pool.query(on ? `ALTER TABLE ${table} RESET (autovacuum_enabled)` : `ALTER TABLE ${table} SET (autovacuum_enabled = false)`);
  }
}

async function analyze(ctx: BenchContext, pool: pg.Pool, size: number): Promise<void> {
  await autovacuum(pool, true);
  ctx.progress(`autovacuum back on; VACUUM ANALYZE at ${size.toLocaleString('en-US')}`);
  const started = performance.now();
  await pool.query('VACUUM ANALYZE rowfleet.records, rowfleet.event_log, rowfleet.stats, rowfleet.workers');
  await checkpoint(pool);
  ctx.progress(`  VACUUM ANALYZE took ${((performance.now() - started) / 1000).toFixed(1)}s`);
}

/**
 * Records `from` .. `to` with the mix (see the header), their event_log rows, in chunks of one
 * transaction each. Record n: kind KINDS[n % 3], id `r-<n>`; FAILED when n % 100 = 0 and n <=
 * `backlogUpTo`; COMPLETED and due when n % 100 = 1 and n <= `backlogUpTo`; PROCESSING when n % 100
 * = 50 and n <= 3,200; every other one PROCESSED. updated_at is spread over the last week.
 */
async function loadRecords(ctx: BenchContext, pool: pg.Pool, from: number, to: number, backlogUpTo: number): Promise<{ rows: number; seconds: number }> {
  const count = to - from + 1;
  ctx.progress(`writing ${count.toLocaleString('en-US')} records (to ${to.toLocaleString('en-US')}) with their event_log rows`);
  const base = (await pool.query<{ now: Date }>('SELECT now()')).rows[0]!.now;
  const started = performance.now();
  let rows = 0;
  for (let at = from; at <= to; at += CHUNK) {
    const last = Math.min(to, at + CHUNK - 1);
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const written = await client.query(
        `INSERT INTO rowfleet.records (kind, id, version, data, status, attempts, run_after, lease_owner, lease_token, lease_expires_at,
                                       last_error, result, processed_version, processed_at, created_at, updated_at)
         SELECT ($6::text[])[g % 3 + 1], 'r-' || g, 1, jsonb_build_object('n', g, 'name', 'Customer ' || g, 'plan', 'team'), s.status,
                CASE s.status WHEN 'FAILED' THEN 3 WHEN 'COMPLETED' THEN 0 ELSE 1 END,
                s.updated_at,
                CASE WHEN s.status = 'PROCESSING' THEN 'bench-worker-' || (g % $7::int) END,
                CASE WHEN s.status = 'PROCESSING' THEN gen_random_uuid() END,
                CASE WHEN s.status = 'PROCESSING' THEN $5::timestamptz + interval '10 minutes' END,
                CASE WHEN s.status = 'FAILED' THEN 'Error: upstream answered 503 Service Unavailable (request ' || md5(g::text) || ')' END,
                CASE WHEN s.status = 'PROCESSED' THEN jsonb_build_object('ok', true, 'n', g) END,
                CASE WHEN s.status = 'PROCESSED' THEN 1 END,
                CASE WHEN s.status = 'PROCESSED' THEN s.updated_at END,
                s.updated_at - interval '1 minute', s.updated_at
           FROM generate_series($1::int, $2::int) AS g
          CROSS JOIN LATERAL (
                SELECT CASE WHEN g % 100 = 0 AND g <= $3 THEN 'FAILED' WHEN g % 100 = 1 AND g <= $3 THEN 'COMPLETED'
                            WHEN g % 100 = 50 AND g <= $4 THEN 'PROCESSING' ELSE 'PROCESSED' END AS status,
                       CASE WHEN g % 100 = 50 AND g <= $4 THEN $5::timestamptz
                            ELSE $5::timestamptz - ((g::bigint * 7919) % 604800) * interval '1 second' END AS updated_at) s`,
        [at, last, backlogUpTo, PROCESSING_UP_TO, base, KINDS, WORKERS],
      );
      // Every record's applied message; each FAILED one's two retried attempts and its failure.
      await client.query(
        `INSERT INTO rowfleet.event_log (kind, record_id, version, data, applied, reason, received_at)
         SELECT ($4::text[])[g % 3 + 1], 'r-' || g, 1, jsonb_build_object('n', g, 'name', 'Customer ' || g, 'plan', 'team'), true, 'applied',
                $3::timestamptz - ((g::bigint * 7919) % 604800) * interval '1 second' - interval '1 minute'
           FROM generate_series($1::int, $2::int) AS g`,
        [at, last, base, KINDS],
      );
      await client.query(
        `INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail, received_at)
         SELECT ($4::text[])[g % 3 + 1], 'r-' || g, 1, false, CASE WHEN k = 3 THEN 'failed' ELSE 'retried' END,
                CASE WHEN k = 3 THEN jsonb_build_object('attempts', k, 'error', 'Error: upstream answered 503 Service Unavailable')
                     ELSE jsonb_build_object('attempts', k, 'error', 'Error: upstream answered 503 Service Unavailable', 'retryAt', $3::timestamptz) END,
                $3::timestamptz - ((g::bigint * 7919) % 604800) * interval '1 second' - (4 - k) * interval '10 seconds'
           FROM generate_series($1::int, $2::int) AS g, generate_series(1, 3) AS k
          WHERE g % 100 = 0 AND g <= $5`,
        [at, last, base, KINDS, backlogUpTo],
      );
      await client.query('COMMIT');
      rows += written.rowCount ?? 0;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
    if (count > CHUNK) {
      const seconds = (performance.now() - started) / 1000;
      ctx.progress(`  ${(last - from + 1).toLocaleString('en-US')} / ${count.toLocaleString('en-US')} records (${Math.round((last - from + 1) / seconds).toLocaleString('en-US')} records/s)`);
    }
  }
  await checkpoint(pool);
  const seconds = (performance.now() - started) / 1000;
  ctx.progress(`  ${count.toLocaleString('en-US')} records written in ${seconds.toFixed(1)}s`);
  return { rows, seconds };
}

/**
 * What a running fleet has beside its records, refreshed before each measurement: 4 workers just
 * heard from, and a day of rowfleet.stats up to this minute (4 backends a minute).
 */
async function freshenFleet(pool: pg.Pool): Promise<void> {
  await pool.query(
    `INSERT INTO rowfleet.workers (id, host, pid, engine, concurrency, in_flight, started_at, last_seen_at)
     SELECT 'bench-worker-' || w, 'bench-host-' || (w % 2), 1000 + w, 'direct', 8, 8, now() - interval '1 hour', now()
       FROM generate_series(0, $1::int - 1) AS w
     ON CONFLICT (id) DO UPDATE SET last_seen_at = now()`,
    [WORKERS],
  );
  await pool.query(
    `INSERT INTO rowfleet.stats (minute, backend, processed, failed, retried, rescued)
     SELECT m, b, 500 + (extract(epoch FROM m)::bigint / 60 * b) % 300, (extract(epoch FROM m)::bigint / 60 + b) % 5, (extract(epoch FROM m)::bigint / 60 + b) % 11, 0
       FROM generate_series(date_trunc('minute', now()) - interval '1439 minutes', date_trunc('minute', now()), interval '1 minute') AS m,
            generate_series(1, 4) AS b
     ON CONFLICT (minute, backend) DO NOTHING`,
  );
}

async function measure(
  ctx: BenchContext,
  setup: pg.Pool,
  app: FastifyInstance,
  scenario: Omit<Scenario, 'reltuples' | 'results'>,
  endpoints: readonly Endpoint[],
): Promise<Scenario> {
  const name = `${scenario.state}, ${scenario.size.toLocaleString('en-US')} records, ${scenario.failed.toLocaleString('en-US')} FAILED`;
  await freshenFleet(setup);
  const { rows: stats } = await setup.query<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = 'rowfleet.records'::regclass`);
  const result: Scenario = { ...scenario, reltuples: stats[0]!.reltuples, results: [] };
  await awaitQuiet(ctx.postgres.pids, ctx.progress);
  for (const endpoint of endpoints) {
    const latencies: number[] = [];
    let window: number | undefined;
    for (let i = 0; i < WARMUP + CALLS; i++) {
      if (i === WARMUP) window = performance.now() + ctx.seconds * 1000;
      if (window !== undefined && latencies.length >= MIN_CALLS && performance.now() >= window) break;
      const started = performance.now();
      const response = await app.inject(endpoint.request);
      const elapsed = performance.now() - started;
      if (i === 0) {
        if (response.statusCode !== 200) throw new Error(`${endpoint.label}: ${response.statusCode} ${response.body.slice(0, 300)}`);
        const processing = scenario.size < 50 ? 0 : Math.floor((Math.min(scenario.size, PROCESSING_UP_TO) - 50) / EVERY) + 1;
        const problem = endpoint.check(response.body, { failed: scenario.failed, processing });
        if (problem !== undefined) throw new Error(`${endpoint.label} (${name}): ${problem}`);
        if (endpoint.name === 'stats') result.processedEstimated = (json(response.body).estimated as string[]).includes('PROCESSED');
      }
      if (i >= WARMUP) latencies.push(elapsed);
    }
    const row: Result = { endpoint: endpoint.name, calls: latencies.length, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99) };
    result.results.push(row);
    ctx.progress(`${name}: ${endpoint.label} p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms (${row.calls} calls)`);
  }
  // The plans, after the timed calls so that EXPLAIN ANALYZE's own work does not touch them.
  const client = await setup.connect();
  try {
    for (const row of result.results) {
      const endpoint = ENDPOINTS.find((e) => e.name === row.endpoint)!;
      const work = endpoint.work ?? ENDPOINTS.find((e) => e.name === 'stats')!.work!;
      const lines = await explainNested(client, (db) => work(db as unknown as pg.Pool));
      if (lines === undefined) {
        ctx.progress('auto_explain cannot be loaded here (it needs superuser): no plans');
        break;
      }
      row.statements = statements(lines);
      row.seqScan = lines.some(isSeqScanOnRecords);
      if (row.seqScan) ctx.progress(`${name}: ${endpoint.label} scans rowfleet.records whole (Seq Scan)`);
    }
  } finally {
    client.release();
  }
  return result;
}

const isSeqScanOnRecords = (line: string) => /Seq Scan on records\b/.test(line);

/** auto_explain's notices, one statement each: `duration: X ms  plan:`, `Query Text: ...` (maybe many lines), the plan. */
function statements(lines: readonly string[]): Statement[] {
  const out: Statement[] = [];
  let current: (Statement & { inQuery: boolean }) | undefined;
  for (const line of lines) {
    const duration = /^duration: ([\d.]+) ms/.exec(line);
    if (duration !== null) {
      if (current !== undefined) out.push(withoutFlag(current));
      current = { query: '', durationMs: Number(duration[1]), plan: [], inQuery: false };
      continue;
    }
    if (current === undefined) continue;
    if (line.startsWith('Query Parameters:')) {
      current.inQuery = false;
    } else if (line.startsWith('Query Text:')) {
      current.query = line.slice('Query Text:'.length).trim();
      current.inQuery = true;
    } else if (current.inQuery && !/\((cost|actual)[= ]/.test(line)) {
      current.query += ` ${line.trim()}`;
    } else {
      current.inQuery = false;
      current.plan.push(line);
    }
  }
  if (current !== undefined) out.push(withoutFlag(current));
  return out.map((s) => ({ ...s, query: s.query.replace(/\s+/g, ' ').trim() }));
}

const withoutFlag = ({ inQuery: _inQuery, ...statement }: Statement & { inQuery: boolean }): Statement => statement;

function compare(scenarios: readonly Scenario[], base: number, large: number): Comparison[] {
  const out: Comparison[] = [];
  for (const state of ['fresh', 'analyzed'] as const) {
    const small = scenarios.find((s) => s.state === state && s.size === base && s.variant === 'mix')!;
    for (const variant of ['mix', 'same-backlog'] as const) {
      const big = scenarios.find((s) => s.state === state && s.size === large && s.variant === variant);
      if (big === undefined) continue;
      for (const largeResult of big.results) {
        const baseResult = small.results.find((r) => r.endpoint === largeResult.endpoint)!;
        const endpoint = ENDPOINTS.find((e) => e.name === largeResult.endpoint)!;
        const ratio = largeResult.p50Ms / baseResult.p50Ms;
        const held = endpoint.reads === 'flat' || variant === 'same-backlog';
        out.push({
          state,
          endpoint: largeResult.endpoint,
          variant,
          base: baseResult,
          large: largeResult,
          baseFailed: small.failed,
          largeFailed: big.failed,
          ratio,
          ...(held && { pass: ratio <= FLAT_RATIO }),
        });
      }
    }
  }
  return out;
}

/** Why 5,000,000 is left out, from this run's load rate. */
function fiveMillion(large: number, loadRate: number): string {
  const n = (value: number) => value.toLocaleString('en-US');
  const load = (5_000_000 - large) / loadRate;
  return `5,000,000 not measured: growing to it would add ~${Math.round(load)}s of load at the ${n(loadRate)} records/s this run wrote, past the budget of ~8 min; --quick runs the same sizes`;
}

function report(ctx: BenchContext, scenarios: readonly Scenario[], comparisons: readonly Comparison[], { base, large, loadRate }: { base: number; large: number; loadRate: number }): string {
  const { settings } = ctx.postgres;
  const n = (value: number) => value.toLocaleString('en-US');
  const scan = (r: Result) => (r.seqScan === undefined ? '?' : r.seqScan ? 'YES' : 'no');
  const lines: string[] = [
    `dashboard bench: postgres ${settings.server_version} (${ctx.postgres.origin}); each endpoint through buildServer(...).inject, ${CALLS} calls after ${WARMUP} warm-up (at most --seconds ${ctx.seconds} of calls, at least ${MIN_CALLS})`,
    `records: 1% FAILED, 1% COMPLETED due, 32 PROCESSING, the rest PROCESSED, 3 kinds; one event_log row per record (+3 per FAILED); a day of rowfleet.stats; ${WORKERS} workers`,
    'fresh: a new database, bulk-loaded, never analyzed (autovacuum off on rowfleet.records and rowfleet.event_log; reltuples -1); analyzed: VACUUM ANALYZE after the load',
    `targets: /stats/throughput and the timeline p50 at ${n(large)} within ${FLAT_RATIO}x of ${n(base)}; /stats and /metrics read the backlog, the latest failures and the requeue dry run`,
    `  every FAILED record, so with the mix their ratio is reported beside it (${n(large / base)}x), and with the backlog of ${n(base)} at ${n(large)} they must be within ${FLAT_RATIO}x`,
    fiveMillion(large, loadRate),
  ];
  for (const state of ['fresh', 'analyzed'] as const) {
    const small = scenarios.find((s) => s.state === state && s.size === base && s.variant === 'mix')!;
    const big = scenarios.find((s) => s.state === state && s.size === large && s.variant === 'mix')!;
    const fixed = scenarios.find((s) => s.state === state && s.size === large && s.variant === 'same-backlog');
    const rows = comparisons
      .filter((c) => c.state === state)
      .map((c) => {
        const endpoint = ENDPOINTS.find((e) => e.name === c.endpoint)!;
        const label = c.variant === 'same-backlog' ? `${endpoint.label} (${n(large)} with the backlog of ${n(base)})` : endpoint.label;
        const failedRatio = c.largeFailed / c.baseFailed;
        const target = c.pass === undefined ? `reads the ${endpoint.reads}: ${n(failedRatio)}x of it` : `<= ${FLAT_RATIO}x: ${c.pass ? 'met' : 'MISSED'}`;
        return [
          label,
          endpoint.reads === 'flat' ? 'flat' : `${endpoint.reads}, FAILED ${n(c.baseFailed)} -> ${n(c.largeFailed)}`,
          String(c.base.p50Ms),
          String(c.base.p99Ms),
          String(c.large.p50Ms),
          String(c.large.p99Ms),
          `${c.base.calls} / ${c.large.calls}`,
          `${c.ratio.toFixed(2)}x`,
          endpoint.reads === 'flat' ? '-' : `${n(failedRatio)}x`,
          target,
          `${scan(c.base)} / ${scan(c.large)}`,
        ];
      });
    lines.push(
      '',
      `${state}: reltuples ${n(Math.round(small.reltuples))} at ${n(base)}, ${n(Math.round(big.reltuples))} at ${n(large)}${fixed === undefined ? '' : ` (${n(Math.round(fixed.reltuples))} with ${n(fixed.failed)} FAILED)`}; ` +
        `GET /stats counted PROCESSED ${big.processedEstimated ? 'from the statistics (estimated)' : 'exactly'} at ${n(large)} (${small.processedEstimated ? 'estimated' : 'exactly'} at ${n(base)})`,
      renderTable(
        'llrrrrrrrll',
        ['endpoint', 'reads', `p50 ms ${n(base)}`, `p99 ms ${n(base)}`, `p50 ms ${n(large)}`, `p99 ms ${n(large)}`, `calls ${n(base)} / ${n(large)}`, `p50 ${n(large)} / ${n(base)}`, 'FAILED ratio', 'target', `seq scan on records ${n(base)} / ${n(large)}`],
        rows,
      ),
    );
  }

  // The plans asked for: the status counts (every statement readStatus runs), the latest failures and the requeue count at 1M fresh.
  const freshLarge = scenarios.find((s) => s.state === 'fresh' && s.size === large && s.variant === 'mix')!;
  for (const name of ['stats', 'recent', 'requeue'] as const) {
    const result = freshLarge.results.find((r) => r.endpoint === name)!;
    const label = ENDPOINTS.find((e) => e.name === name)!.label;
    lines.push('', `plans, fresh, ${n(large)} records: ${label} (auto_explain, every statement it runs; full plans in the JSON)`);
    if (result.statements === undefined) {
      lines.push('  (no plan: auto_explain could not be loaded)');
      continue;
    }
    for (const statement of result.statements) {
      lines.push(`  [${statement.durationMs.toFixed(3)} ms] ${statement.query.length > 150 ? `${statement.query.slice(0, 147)}...` : statement.query}`);
      for (const line of statement.plan) {
        if (/\(actual /.test(line) || /Heap Fetches|Sort Method|Rows Removed/.test(line)) lines.push(`      ${line.replace(/  \(cost=[^)]*\)/, '')}`);
      }
    }
  }

  // What scans rowfleet.records whole, anywhere.
  const scans = scenarios.flatMap((s) =>
    s.results.filter((r) => r.seqScan === true).map((r) => `${s.state} ${n(s.size)} (${n(s.failed)} FAILED): ${ENDPOINTS.find((e) => e.name === r.endpoint)!.label}: ${r.statements!.filter((st) => st.plan.some(isSeqScanOnRecords)).map((st) => st.query.slice(0, 110)).join(' | ')}`),
  );
  lines.push('', scans.length === 0 ? 'no statement of any endpoint scans rowfleet.records whole (no Seq Scan on records in any plan)' : `Seq Scan on rowfleet.records:\n${scans.map((s) => `  ${s}`).join('\n')}`);

  // The verdict.
  const missed = comparisons.filter((c) => c.pass === false);
  const label = (c: Comparison) => `${c.state} ${ENDPOINTS.find((e) => e.name === c.endpoint)!.label}${c.variant === 'same-backlog' ? ` with the backlog of ${n(base)}` : ''}`;
  lines.push(
    '',
    missed.length === 0
      ? `every target met: the flat endpoints within ${FLAT_RATIO}x at ${n(large)}, and the others within ${FLAT_RATIO}x with the same backlog`
      : `targets MISSED (${missed.length} of ${comparisons.filter((c) => c.pass !== undefined).length}): ${missed.map((c) => `${label(c)} ${c.ratio.toFixed(2)}x${c.large.seqScan ? ' (its plan scans rowfleet.records whole)' : ''}`).join('; ')}`,
  );
  const countedExactly = scenarios.filter((s) => s.size === large && s.processedEstimated === false);
  if (countedExactly.length > 0) {
    lines.push(`  GET /stats counted PROCESSED exactly at ${n(large)} records (${countedExactly.map((s) => `${s.state}, ${s.variant}`).join('; ')}): a scan of the table on every call (src/ops/status.ts EXACT_COUNT_UP_TO_BYTES)`);
  }
  for (const c of comparisons.filter((x) => x.pass === undefined)) {
    lines.push(`  ${label(c)}: ${c.ratio.toFixed(2)}x for ${n(c.largeFailed / c.baseFailed)}x the ${ENDPOINTS.find((e) => e.name === c.endpoint)!.reads} (informational: its cost follows it, by design)`);
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) main([dashboardBench]);
