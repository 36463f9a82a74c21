/**
 * What the versioned upsert costs against the bare statement it replaces, on the same Postgres in
 * the same run:
 *   1. bare `INSERT ... ON CONFLICT DO UPDATE ... WHERE version <` (no audit), batches of 100 / 1000;
 *   2. rowfleet's upsertMessages (versions, locks, full event_log audit), the same batches;
 *   3. single messages: POST /upsert against `rowfleet api` in its own process, and for reference
 *      the bare single-row statement over a pg pool, at the same concurrency.
 * Targets (the issues'): batched upserts with full audit reach >= 50% of the bare statement's rate
 * at the same batch size (100 and 1000); single library upserts (the public client's `upsert` with
 * one message a call, 64 concurrent callers on a pool of 10) reach >= 60% of the bare single-row
 * statement's rate with the same callers and pool; single HTTP upserts reach >= 5,000 messages/s.
 *
 *   npm run bench:upsert [-- --seconds 12 --warmup 2]
 */
import { cpus } from 'node:os';
import autocannon from 'autocannon';
import pg from 'pg';
import { createClient, type UpsertResponse } from '../src/index.ts';
import { upsertMessages, type UpsertResult } from '../src/records/upsert.ts';
import type { Message } from '../src/records/message.ts';
import { startApi, type ApiProcess } from './lib/api-process.ts';
import { cpuMeter, type CpuMeter } from './lib/cpu.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { closedLoop, type Measurement } from './lib/load.ts';
import { messageStream, DEFAULT_MIX, type MessageStream } from './lib/messages.ts';

const BATCH_SIZES = [100, 1000] as const;
/** Writers of batches: a few producers, each with its own connection. */
const BATCH_CONCURRENCY = 4;
/** In-flight single messages: many HTTP clients, each waiting on its own request. */
const SINGLE_CONCURRENCY = 64;
/** rowfleet's default ROWFLEET_POOL_SIZE; the bare single-row reference gets the same pool. */
const SINGLE_POOL_SIZE = 10;
const BATCH_TARGET_RATIO = 0.5;
const SINGLE_TARGET_RATIO = 0.6;
const HTTP_TARGET_PER_SECOND = 5_000;

/** The shape of rowfleet.records' core columns, nothing else: no status, no audit, no trigger. */
const CREATE_BARE = `CREATE TABLE bare (id text PRIMARY KEY, version bigint NOT NULL, data jsonb NOT NULL)`;
const ON_CONFLICT = `ON CONFLICT (id) DO UPDATE SET version = excluded.version, data = excluded.data WHERE bare.version < excluded.version`;
/**
 * Arrays bound as parameters and `data` as one JSON array, exactly as upsertMessages sends them,
 * so that the comparison is of the work done in Postgres, not of the encoding. Rows are written in
 * id order, as rowfleet locks them, so that concurrent batches queue instead of deadlocking.
 */
const BARE_BATCH = `INSERT INTO bare (id, version, data)
SELECT u.id, u.version, d.value
  FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS u(id, version, o)
  JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS d(value, o) ON d.o = u.o
 ORDER BY u.id
${ON_CONFLICT}`;
const BARE_SINGLE = `INSERT INTO bare (id, version, data) VALUES ($1, $2, $3) ${ON_CONFLICT}`;

interface Row {
  scenario: string;
  kind: 'baseline' | 'rowfleet' | 'http';
  batchSize: number;
  concurrency: number;
  measurement: Measurement;
  /** Share of messages that changed the record (the rest were stale); the same mix gives about the same share. */
  appliedShare?: number;
  ratio?: number;
  target?: string;
  pass?: boolean;
  notes: string[];
}

export const upsertBench: Bench = {
  name: 'upsert',
  summary: 'versioned upsert vs the bare INSERT ... ON CONFLICT, batched and single over HTTP',
  async run(ctx) {
    const db = await ctx.postgres.createDatabase('rowfleet_bench_upsert');
    try {
      await withPool(db.url, 1, (pool) => pool.query(CREATE_BARE));
      const rows: Row[] = [];
      for (const size of BATCH_SIZES) {
        const baseline = await measureBatches(ctx, db.url, 'bare', size);
        const rowfleet = await measureBatches(ctx, db.url, 'rowfleet', size);
        rowfleet.ratio = rowfleet.measurement.messagesPerSecond / baseline.measurement.messagesPerSecond;
        rowfleet.target = `>= ${BATCH_TARGET_RATIO.toFixed(2)}x bare`;
        rowfleet.pass = rowfleet.ratio >= BATCH_TARGET_RATIO;
        rows.push(baseline, rowfleet);
      }
      // Single messages, and where their cost goes: the statement, then rowfleet's function, then HTTP.
      const bareSingle = await measureSingles(ctx, db.url, 'bare');
      const rowfleetSingle = await measureSingles(ctx, db.url, 'rowfleet');
      const http = await measureHttpSingles(ctx, db.url);
      for (const row of [rowfleetSingle, http]) row.ratio = row.measurement.messagesPerSecond / bareSingle.measurement.messagesPerSecond;
      rowfleetSingle.target = `>= ${SINGLE_TARGET_RATIO.toFixed(2)}x bare`;
      rowfleetSingle.pass = (rowfleetSingle.ratio ?? 0) >= SINGLE_TARGET_RATIO;
      http.target = `>= ${HTTP_TARGET_PER_SECOND.toLocaleString('en-US')}/s`;
      http.pass = http.measurement.messagesPerSecond >= HTTP_TARGET_PER_SECOND;
      rows.push(bareSingle, rowfleetSingle, http);
      return {
        text: report(rows, ctx),
        data: { mix: DEFAULT_MIX, singlePoolSize: SINGLE_POOL_SIZE, scenarios: rows },
      };
    } finally {
      await db.drop();
    }
  },
};

async function measureBatches(ctx: BenchContext, url: string, kind: 'bare' | 'rowfleet', size: number): Promise<Row> {
  const scenario = kind === 'bare' ? `bare statement, batch ${size}` : `rowfleet upsertMessages, batch ${size}`;
  ctx.progress(`${scenario}, ${BATCH_CONCURRENCY} connections: ${ctx.warmupSeconds}s warm-up + ${ctx.seconds}s`);
  return withPool(url, BATCH_CONCURRENCY, async (pool) => {
    await resetTables(pool);
    const stream = messageStream(`batch-${kind}-${size}`);
    const counts = { sent: 0, applied: 0 };
    const call = async () => {
      const messages = stream.batch(size);
      const applied = kind === 'bare' ? await bareBatch(pool, messages) : countApplied(await upsertMessages(pool, messages));
      // Added after the await: `counts.applied += await ...` would read the total before it and lose concurrent additions.
      counts.applied += applied;
      counts.sent += size;
      return size;
    };
    const measurement = await closedLoop({ concurrency: BATCH_CONCURRENCY, warmupSeconds: ctx.warmupSeconds, seconds: ctx.seconds, call, cpu: meter(ctx) });
    const notes = kind === 'rowfleet' ? await checkAudit(pool, counts.sent) : [];
    ctx.progress(`${scenario}: ${formatRate(measurement.messagesPerSecond)} msgs/s${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
    return { scenario, kind: kind === 'bare' ? 'baseline' : 'rowfleet', batchSize: size, concurrency: BATCH_CONCURRENCY, measurement, appliedShare: counts.applied / counts.sent, notes };
  });
}

async function measureSingles(ctx: BenchContext, url: string, kind: 'bare' | 'rowfleet'): Promise<Row> {
  const scenario = kind === 'bare' ? 'bare statement, single row' : 'rowfleet client upsert, single';
  ctx.progress(`${scenario}, ${SINGLE_CONCURRENCY} callers on a pool of ${SINGLE_POOL_SIZE}: ${ctx.warmupSeconds}s warm-up + ${ctx.seconds}s`);
  return withPool(url, SINGLE_POOL_SIZE, async (pool) => {
    await resetTables(pool);
    // What an application calls: the public client, on the same pool as the bare reference.
    const client = createClient({ pool });
    const stream = messageStream(`single-${kind}`);
    const counts = { sent: 0, applied: 0 };
    const call = async () => {
      const message = stream.next();
      const applied = kind === 'bare' ? await bareSingle(pool, message) : countApplied([await client.upsert(message)]);
      counts.applied += applied;
      counts.sent += 1;
      return 1;
    };
    const measurement = await closedLoop({ concurrency: SINGLE_CONCURRENCY, warmupSeconds: ctx.warmupSeconds, seconds: ctx.seconds, call, cpu: meter(ctx) }).finally(() =>
      client.close(),
    );
    ctx.progress(`${scenario}: ${formatRate(measurement.messagesPerSecond)} msgs/s`);
    return { scenario, kind: kind === 'bare' ? 'baseline' : 'rowfleet', batchSize: 1, concurrency: SINGLE_CONCURRENCY, measurement, appliedShare: counts.applied / counts.sent, notes: [] };
  });
}

async function measureHttpSingles(ctx: BenchContext, url: string): Promise<Row> {
  const scenario = 'POST /upsert, single message';
  await withPool(url, 1, resetTables);
  ctx.progress(`${scenario}: starting rowfleet api (pool ${SINGLE_POOL_SIZE})`);
  const api = await startApi({ databaseUrl: url, poolSize: SINGLE_POOL_SIZE });
  try {
    ctx.progress(`${scenario}, ${SINGLE_CONCURRENCY} connections: ${ctx.warmupSeconds}s warm-up + ${ctx.seconds}s`);
    const stream = messageStream('single-http');
    await fire(api, ctx.warmupSeconds, stream);
    const cpu = meter(ctx, api);
    cpu.start();
    const result = await fire(api, ctx.seconds, stream);
    const usage = cpu.stop();
    const notes: string[] = [];
    if (result.non2xx > 0) notes.push(`${result.non2xx} non-2xx responses`);
    if (result.errors > 0) notes.push(`${result.errors} connection errors (${result.timeouts} timeouts)`);
    const measurement: Measurement = {
      messages: result['2xx'],
      calls: result.requests.total,
      seconds: result.duration,
      messagesPerSecond: Math.round(result['2xx'] / result.duration),
      p50Ms: result.latency.p50,
      p99Ms: result.latency.p99,
      cpu: usage,
    };
    ctx.progress(`${scenario}: ${formatRate(measurement.messagesPerSecond)} msgs/s${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
    return { scenario, kind: 'http', batchSize: 1, concurrency: SINGLE_CONCURRENCY, measurement, notes };
  } finally {
    await api.stop();
  }
}

/** autocannon in this process: raw HTTP/1.1 over keep-alive sockets, cheaper per request than fetch. */
function fire(api: ApiProcess, seconds: number, stream: MessageStream): Promise<autocannon.Result> {
  return autocannon({
    url: `${api.url}/upsert`,
    connections: SINGLE_CONCURRENCY,
    duration: seconds,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    requests: [{ setupRequest: (request) => ({ ...request, body: JSON.stringify(stream.next()) }) }],
  });
}

/** Returns the number of rows written (inserted or updated); the rest were stale. */
async function bareBatch(pool: pg.Pool, messages: readonly Message[]): Promise<number> {
  const result = await pool.query({
    name: 'bare_batch',
    text: BARE_BATCH,
    values: [messages.map((m) => m.id), messages.map((m) => m.version), JSON.stringify(messages.map((m) => m.data))],
  });
  return result.rowCount ?? 0;
}

async function bareSingle(pool: pg.Pool, m: Message): Promise<number> {
  // Named, so each connection plans it once, as upsertMessages's statement is.
  const result = await pool.query({ name: 'bare_single', text: BARE_SINGLE, values: [m.id, m.version, m.data] });
  return result.rowCount ?? 0;
}

function countApplied(results: readonly (UpsertResult | UpsertResponse)[]): number {
  return results.filter((result) => result.applied).length;
}

/** Every scenario starts from empty tables and a fresh checkpoint, so none inherits another's WAL debt or bloat. */
async function resetTables(pool: pg.Pool): Promise<void> {
  await pool.query('TRUNCATE bare, rowfleet.records, rowfleet.event_log');
  // CHECKPOINT needs superuser (or pg_checkpoint); on a server where we lack it, skip it.
  await pool.query('CHECKPOINT').catch(() => undefined);
}

/** Invariant I2 as a sanity check of what was measured: one event_log row per message sent. */
async function checkAudit(pool: pg.Pool, sent: number): Promise<string[]> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM rowfleet.event_log');
  const logged = Number(rows[0]!.n);
  return logged === sent ? [] : [`event_log holds ${logged} rows for ${sent} messages sent`];
}

function meter(ctx: BenchContext, api?: ApiProcess): CpuMeter {
  return cpuMeter(() => ({
    bench: [process.pid],
    ...(api !== undefined && { api: [api.pid] }),
    postgres: ctx.postgres.pids(),
  }));
}

async function withPool<T>(url: string, max: number, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  // A statement stuck for 60 s means the bench is broken, not slow: fail rather than hang.
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'rowfleet bench', statement_timeout: 60_000 });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

function report(rows: readonly Row[], ctx: BenchContext): string {
  const { settings } = ctx.postgres;
  const table = renderTable(
    'lrrrlrrrrr',
    ['scenario', 'conc.', 'msgs/s', 'vs bare', 'target', 'result', 'p50 / p99 ms', 'applied', 'CPU µs/msg pg / api', 'CPU % bench / api / pg / irq / other / idle'],
    rows.map((row) => {
      const { measurement: m } = row;
      return [
        row.scenario,
        String(row.concurrency),
        formatRate(m.messagesPerSecond),
        row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`,
        row.target ?? '',
        row.pass === undefined ? '' : row.pass ? 'met' : 'missed',
        `${m.p50Ms} / ${m.p99Ms}`,
        row.appliedShare === undefined ? '' : `${Math.round(row.appliedShare * 100)}%`,
        ['postgres', 'api'].map((group) => microsPerMessage(m, group)).join(' / '),
        ['bench', 'api', 'postgres', 'irq', 'other', 'idle'].map((group) => m.cpu[group] ?? '-').join(' / '),
      ];
    }),
  );
  const notes = rows.flatMap((row) => row.notes.map((note) => `note: ${row.scenario}: ${note}`));
  const cores = cpus().length;
  const header = [
    `upsert bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}; ${ctx.seconds}s per scenario after ${ctx.warmupSeconds}s warm-up`,
    `messages: ${DEFAULT_MIX.keyspace} ids, 1 in ${DEFAULT_MIX.staleEvery} stale, 1 in ${DEFAULT_MIX.messageIdEvery} with a messageId; p50 / p99 per call (one batch or one request)`,
    `CPU: % of one core (${cores} cores = ${cores * 100}); µs/msg is CPU time per message, steadier than msgs/s when neighbours take CPU`,
  ].join('\n');
  return [header, '', table, ...notes].join('\n');
}

/**
 * CPU time one message costs a process group: unlike msgs/s it barely moves when a neighbour takes
 * CPU from the run, so it is the number to compare across runs on a shared machine.
 */
function microsPerMessage(m: Measurement, group: string): string {
  const percent = m.cpu[group];
  if (percent === undefined || m.messagesPerSecond === 0) return '-';
  return String(Math.round(((percent / 100) * 1e6) / m.messagesPerSecond));
}

function formatRate(perSecond: number): string {
  return perSecond.toLocaleString('en-US');
}

if (isMain(import.meta.url)) main([upsertBench]);
