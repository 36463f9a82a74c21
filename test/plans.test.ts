/**
 * The plans of the hot statements, in the table states that once made them fall off a cliff: a
 * backlog just written and never analyzed, statistics that describe an old history of PROCESSED
 * rows, statistics taken during a bulk load (they say the tables are empty), and a million due
 * rows. Each statement must read `records` only through the index it was written for, in that
 * index's order (O(batch), and the lock order of drizzle/0006_hot_path.sql), never by a sequential
 * scan, a bitmap scan, an index read whole, a sort of the backlog, or a hash join; and `event_log`
 * only one record's messages at a time. A Postgres
 * upgrade that changes one of these plans fails here, loudly.
 *
 * The plans are those Postgres really ran: auto_explain reports every statement inside the
 * functions as a NOTICE. Each state's statements run on a fresh connection (plans are cached per
 * connection) in a transaction that is rolled back, so every statement sees the same state.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { claimAlone, claimDue, claimIds, suspectsWaiting, type Claimed } from '../src/records/claim.ts';
import { extendLeases, release } from '../src/records/lease.ts';
import { complete, completeChaining, fail } from '../src/records/settle.ts';
import { rescueExpired } from '../src/records/rescue.ts';
import { clearMarks, markUnenqueued } from '../src/records/marks.ts';
import { countMatching, listPage, recordFilter } from '../src/records/filter.ts';
import { countRecords, workersWithHoldings } from '../src/records/counts.ts';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
}

/** What a statement did with `records`: each scan as "Index Scan records_due_idx", and the joins and sorts around them. */
interface Shape {
  scans: string[];
  others: string[];
}

const MILLION = 1_000_000;

let databases: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(databases.map((d) => d.drop()));
});

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  databases.push(db);
  // Nothing analyzes the table behind the test's back.
  await db.pool.query(`ALTER TABLE rowfleet.records SET (autovacuum_enabled = false); ALTER TABLE rowfleet.event_log SET (autovacuum_enabled = false)`);
  return db;
}

/** Writes `n` due records the way producers do: batches of 1000 through the upsert. */
async function writeThroughApi(db: TestDatabase | pg.PoolClient, prefix: string, n: number): Promise<void> {
  const target = 'pool' in db ? db.pool : db;
  for (let start = 0; start < n; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - start) }, (_, i) => parseMessage({ id: `${prefix}${start + i}`, data: { i: start + i } }, { maxDepth: 64 }));
    await upsertMessages(target, batch);
  }
}

type Take = <T>(name: string, run: () => Promise<T>) => Promise<T>;

/** Runs every hot statement once on a new connection, in a transaction rolled back; returns each one's shape. */
async function shapes(db: TestDatabase): Promise<Record<string, Shape>> {
  return planned(db, (client, take) => hotStatements(client, take));
}

/** Runs `statements` on a new connection with auto_explain on, in a transaction rolled back: the shape of each one taken. */
async function planned(db: TestDatabase, statements: (client: pg.Client, take: Take) => Promise<void>): Promise<Record<string, Shape>> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const plans: PlanNode[] = [];
  client.on('notice', (notice) => {
    const text = notice.message ?? '';
    // auto_explain's; not the notices of the statements themselves.
    if (!text.startsWith('duration:')) return;
    const json = text.slice(text.indexOf('{'));
    const parsed = JSON.parse(json) as { 'Query Text': string; Plan: PlanNode };
    // The statements inside the functions; not the call itself.
    // Nor an EXPLAIN's plan, which is planned and never run (status's estimate of the table's rows).
    if (!/rowfleet\.\w+\(\$1/.test(parsed['Query Text']) && !/^\s*EXPLAIN/i.test(parsed['Query Text'])) plans.push(parsed.Plan);
  });
  const result: Record<string, Shape> = {};
  const take: Take = async (name, run) => {
    plans.length = 0;
    const value = await run();
    // A statement's own plan (not a function's nested ones) can come after its result: flushed by the next.
    await client.query('SELECT 1');
    result[name] = shapeOf(plans);
    return value;
  };
  try {
    await client.query(`LOAD 'auto_explain'`);
    await client.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice; SET auto_explain.log_format = json`);
    await client.query('BEGIN');
    await statements(client, take);
  } finally {
    await client.query('ROLLBACK').catch(() => {});
    await client.end();
  }
  return result;
}

async function hotStatements(client: pg.Client, take: Take): Promise<void> {
  {
    const { rows } = await client.query<{ id: string }>(`SELECT id FROM rowfleet.records WHERE status = 'COMPLETED' ORDER BY id DESC LIMIT 500`);
    const ids = rows.map((r) => r.id);
    await take('mark_unenqueued', () => markUnenqueued(client, 1000, 0));
    await take('clear_marks', () => clearMarks(client, ids.map((id) => ({ kind: 'default', id }))));
    const due = await take('claim_due', () => claimDue(client, { owner: 'w', limit: 1000, leaseMs: 60_000 }));
    const named: Claimed[] = await take('claim_ids', () => claimIds(client, { kind: 'default', ids, owner: 'w', leaseMs: 60_000 }));
    const held = [...due, ...named];
    expect(held.length).toBeGreaterThan(500);
    await take('extend_leases', () => extendLeases(client, { leases: held, leaseMs: 60_000 }));
    await take('complete_records', () => complete(client, held.slice(0, 400).map((c) => ({ ...c, result: { ok: true } }))));
    await take('fail_record', () => fail(client, { ...held[400]!, error: 'boom', permanent: false, maxAttempts: 3, backoffMs: 1000 }));
    await take('release_records', () => release(client, held.slice(401, 600)));
    const rescued = await take('rescue_expired', () => rescueExpired(client, { maxExpirations: 3, now: new Date(Date.now() + 3_600_000) }));
    // What rescue left: suspects (expired once), looked for and one claimed alone.
    expect(rescued.length).toBeGreaterThan(0);
    const later = new Date(Date.now() + 3_700_000);
    expect(await take('suspects_waiting', () => suspectsWaiting(client, { maxExpirations: 1, now: later }))).toBe(true);
    expect(await take('claim_alone', () => claimAlone(client, { owner: 'w', leaseMs: 60_000, maxExpirations: 1, now: later }))).toBeDefined();
    // Mode every: 200 records with three messages each, written here by the upsert's statement
    // itself (the library's upsert would commit this transaction).
    await client.query(`INSERT INTO rowfleet.kinds (kind, mode) VALUES ('ev', 'every')`);
    const ev = Array.from({ length: 200 }, (_, i) => `ev-${i}`);
    for (let round = 0; round < 3; round++) {
      await client.query('SELECT count(*) FROM rowfleet.upsert_messages($1::text[], $2::text[], $3::jsonb, $4::bigint[], $5::text[], NULL::int[], NULL::timestamptz[])', [
        ev.map(() => 'ev'), ev, JSON.stringify(ev.map(() => ({ round }))), ev.map(() => null), ev.map(() => null),
      ]);
    }
    // The batched upsert, 250 existing records and 250 new ones (its statements are not pinned: see below).
    const upserted = [...ids.slice(0, 250), ...Array.from({ length: 250 }, (_, i) => `up-${i}`)];
    await take('upsert_messages', () =>
      client.query('SELECT count(*) FROM rowfleet.upsert_messages($1::text[], $2::text[], $3::jsonb, $4::bigint[], $5::text[], NULL::int[], NULL::timestamptz[])', [
        upserted.map(() => 'default'), upserted, JSON.stringify(upserted.map(() => ({ n: 1 }))), upserted.map(() => null), upserted.map((id) => `m-${id}`),
      ]),
    );
    const every = await take('claim_due every', () => claimDue(client, { owner: 'w', limit: 1000, leaseMs: 60_000, kinds: [{ kind: 'ev', cap: 1000, leaseMs: 60_000 }] }));
    expect(every).toHaveLength(200);
    const chained = await take('complete_records every', () => completeChaining(client, every.map((c) => ({ ...c, result: null, chainLeaseMs: 60_000 }))));
    expect([...chained.values()].filter((c) => c.outcome === 'chained')).toHaveLength(200);
  }
}

/**
 * The dashboard's reads, every few seconds while it is open: the latest failures, the requeue dry
 * run's count, and the counts and holdings `status` reads (PROCESSED aside: it is counted by a
 * scan up to a limit, then estimated). Each reads `records` only through the partial index of its
 * status, whatever the table holds besides.
 */
async function dashboardShapes(db: TestDatabase): Promise<Record<string, Shape>> {
  return planned(db, async (client, take) => {
    const failed = recordFilter({ status: 'FAILED' });
    const recent = await take('latest failures', () => listPage(client, failed, undefined, 50, 'recent'));
    expect(recent.length).toBeGreaterThan(0);
    await take('failed count', () => countMatching(client, failed));
    for (const status of ['COMPLETED', 'PROCESSING', 'FAILED', 'DELETED']) {
      await take(`${status} by kind`, () => client.query(`SELECT kind, count(*) FROM rowfleet.records WHERE status = $1 AND true GROUP BY kind`, [status]));
    }
    await take('holdings', () => workersWithHoldings(client, 60));
    // All of status's counts above the exact limit: the kinds by a loose scan of the primary key.
    const counts = await take('counts, estimated', () => countRecords(client, 0));
    expect(counts.processedEstimated).toBe(true);
  });
}

/** The partial index each dashboard read must go through (by an index, index-only or bitmap scan: the planner's choice). */
const DASHBOARD_INDEX: Record<string, string> = {
  'latest failures': 'records_failed_idx',
  'failed count': 'records_failed_idx',
  'COMPLETED by kind': 'records_due_idx',
  'PROCESSING by kind': 'records_lease_idx',
  'FAILED by kind': 'records_failed_idx',
  'DELETED by kind': 'records_deleted_idx',
  holdings: 'records_lease_idx',
};
const ESTIMATED_COUNTS = ['records_deleted_idx', 'records_due_idx', 'records_failed_idx', 'records_lease_idx', 'records_pkey'];

/** Each read's `records` scans, as the index it went through ("heap" for a bitmap's fetch): nothing else, no Seq Scan. */
function dashboardIndexes(result: Record<string, Shape>): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(result).map(([name, shape]) => [name, [...new Set(shape.scans.map((scan) => (scan === 'Bitmap Heap Scan' ? 'heap' : scan.replace(/^(Index|Index Only|Bitmap Index) Scan (\S+)( whole)?$/, '$2'))))].filter((s) => s !== 'heap').sort()]),
  );
}

const DASHBOARD = { ...Object.fromEntries(Object.entries(DASHBOARD_INDEX).map(([name, index]) => [name, [index]])), 'counts, estimated': ESTIMATED_COUNTS };

/** The columns an Index Cond constrains, as "(kind, record_id, seq)". */
function boundColumns(cond: string | undefined): string {
  const columns = ['kind', 'record_id', 'seq', 'message_id'].filter((c) => new RegExp(`\\b(e\\w*\\.)?${c}\\b`).test(cond?.replace(/\$\d+|d\.\w+|r\.\w+/g, '') ?? ''));
  return `(${columns.join(', ')})`;
}

function shapeOf(plans: readonly PlanNode[]): Shape {
  const shape: Shape = { scans: [], others: [] };
  const visit = (node: PlanNode, parent?: PlanNode) => {
    // An index read whole (no Index Cond, and no Limit to stop at its first entries: a filter over
    // every row) is named so: O(table), whatever the index.
    const whole = /Index/.test(node['Node Type']) && node['Index Cond'] === undefined && parent?.['Node Type'] !== 'Limit' ? ' whole' : '';
    if (node['Relation Name'] === 'records') shape.scans.push(`${node['Node Type']} ${node['Index Name'] ?? ''}${whole}`.trim());
    // A bitmap scan's index (its node names no relation).
    else if (node['Node Type'] === 'Bitmap Index Scan' && node['Index Name']?.startsWith('records_')) shape.scans.push(`Bitmap Index Scan ${node['Index Name']}${whole}`);
    // event_log: which columns the scan is bounded by, so that a range read of every later message shows.
    else if (node['Relation Name'] === 'event_log' && node['Node Type'] !== 'ModifyTable') shape.scans.push(`${node['Node Type']} ${node['Index Name'] ?? ''} on ${boundColumns(node['Index Cond'])}`);
    else if (/Join|Nested Loop|Sort|Hash/.test(node['Node Type'])) shape.others.push(node['Node Type']);
    node.Plans?.forEach((child) => visit(child, node));
  };
  plans.forEach((plan) => visit(plan));
  // The order in which EXPLAIN lists a statement's parts says nothing.
  shape.scans.sort();
  shape.others.sort();
  return shape;
}

/**
 * What each statement must do. "ModifyTable" is the update itself (its target is scanned by the
 * node below it); a "Tid Scan" finds rows the statement has just locked by their address. The
 * sorts allowed are of the statement's own input (keys to lock in order, and back to the order
 * given). An event_log scan names the columns it is bounded by: (kind, record_id, seq), one
 * record's messages, never a range of every record's.
 */
const LOCKED_BY_KEY = ['Index Scan records_pkey', 'ModifyTable', 'Tid Scan'];
const MESSAGE = 'Index Scan event_log_record_idx on (kind, record_id, seq)';
const EXPECTED: Record<string, Shape> = {
  mark_unenqueued: { scans: ['Index Scan records_unenqueued_idx', 'ModifyTable', 'Tid Scan'], others: [] },
  // rowfleet.lock_records (a Nested Loop of records_pkey probes, in key order), then the update by address.
  clear_marks: { scans: LOCKED_BY_KEY, others: ['Nested Loop', 'Sort', 'Sort'] },
  // Three Index Only Scans: the first kind waiting and the next one after it (none), then that
  // kind's highest priority; the Index Scan reads that range (it fills the claim, so no lower
  // priority is looked up). The two event_log probes hand out a waiting message (mode every; not
  // run in mode latest).
  claim_due: {
    scans: ['Index Only Scan records_due_idx', 'Index Only Scan records_due_idx', 'Index Only Scan records_due_idx', MESSAGE, MESSAGE, 'Index Scan records_due_idx', 'ModifyTable', 'Tid Scan'],
    others: [],
  },
  claim_ids: { scans: [MESSAGE, MESSAGE, 'Index Scan records_pkey', 'ModifyTable', 'Tid Scan'], others: [] },
  extend_leases: { scans: LOCKED_BY_KEY, others: ['Nested Loop', 'Nested Loop', 'Sort', 'Sort'] },
  // The third Nested Loop is the lookup of a record's next message in mode every (skipped for
  // records in mode latest).
  complete_records: { scans: [MESSAGE, ...LOCKED_BY_KEY], others: ['Nested Loop', 'Nested Loop', 'Nested Loop', 'Sort', 'Sort'] },
  fail_record: { scans: ['Index Scan records_pkey', 'ModifyTable'], others: [] },
  release_records: { scans: LOCKED_BY_KEY, others: ['Nested Loop', 'Nested Loop', 'Sort', 'Sort'] },
  rescue_expired: { scans: ['Index Scan records_lease_idx', 'ModifyTable', 'Tid Scan'], others: ['Nested Loop'] },
  // Suspects: read from their own small index, in its order, up to the first one (a mode every
  // record's message looked up as the claim's, or by its seq: see expectShapes).
  suspects_waiting: { scans: ['Index Scan records_suspect_idx'], others: [] },
  claim_alone: { scans: [MESSAGE, MESSAGE, 'Index Scan records_suspect_idx', 'ModifyTable', 'Tid Scan'], others: [] },
  // Mode every: a claim of one kind (its highest priority and, the claim not filled, the next lower one), and completions
  // that chain, with the kind's highest waiting priority looked up first (records_due_idx).
  'claim_due every': { scans: ['Index Only Scan records_due_idx', 'Index Only Scan records_due_idx', MESSAGE, MESSAGE, 'Index Scan records_due_idx', 'ModifyTable', 'Tid Scan'], others: [] },
  'complete_records every': { scans: ['Index Only Scan records_due_idx', MESSAGE, ...LOCKED_BY_KEY], others: ['Nested Loop', 'Nested Loop', 'Nested Loop', 'Sort', 'Sort'] },
};

/**
 * The pinned statements have their shapes; the batched upsert's plans are left to the planner
 * (hash joins and sorts of its own input serve it), but it must not read records whole or scan it
 * sequentially either: O(batch), whatever the statistics.
 */
function expectShapes(result: Record<string, Shape>): void {
  const { upsert_messages: upsert, ...pinned } = result;
  // claim_alone's message, one row by its seq (the primary key) on some statistics: one message too.
  const alone = pinned.claim_alone;
  if (alone !== undefined) alone.scans = alone.scans.map((scan) => (scan === 'Index Scan event_log_pkey on (seq)' ? MESSAGE : scan)).sort();
  expect(pinned).toEqual(EXPECTED);
  expect(upsert!.scans.filter((scan) => / whole$|^Seq Scan records/.test(scan))).toEqual([]);
  expect(upsert!.scans).toContain('ModifyTable');
}

describe('plans of the hot statements', () => {
  let small: TestDatabase;
  beforeAll(async () => {
    small = await freshDatabase();
  });

  it('on a backlog just written through the upsert, never analyzed (10,000 due)', async () => {
    await writeThroughApi(small, 'fresh-', 10_000);
    const { rows } = await small.pool.query(`SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relid = 'rowfleet.records'::regclass`);
    expect(rows).toEqual([{ last_analyze: null, last_autoanalyze: null }]);
    expectShapes(await shapes(small));
  });

  it('on statistics of a PROCESSED history, with 10,000 new due records they do not describe', async () => {
    await small.pool.query(`UPDATE rowfleet.records SET status = 'PROCESSED', processed_version = version, processed_at = now()`);
    await small.pool.query(`ANALYZE rowfleet.records`);
    await writeThroughApi(small, 'new-', 10_000);
    expectShapes(await shapes(small));
  });

  it('on the same table analyzed as it is', async () => {
    await small.pool.query(`ANALYZE rowfleet.records`);
    expectShapes(await shapes(small));
  });

  it('on statistics taken while the backlog\'s transaction was open: they say the table is empty', async () => {
    // An autoanalyze that runs during a bulk load sees none of its rows, and records 0 tuples
    // over the pages they fill (the every bench met it about one run in four: 5x slower drains).
    const db = await freshDatabase();
    const loader = await db.pool.connect();
    try {
      await loader.query('BEGIN');
      await writeThroughApi(loader, 'loading-', 10_000);
      await db.pool.query(`ANALYZE rowfleet.records, rowfleet.event_log`);
      await loader.query('COMMIT');
    } finally {
      loader.release();
    }
    const { rows } = await db.pool.query(`SELECT relname, reltuples, relpages > 0 AS pages FROM pg_class WHERE relname IN ('records', 'event_log') ORDER BY relname`);
    expect(rows).toEqual([
      { relname: 'event_log', reltuples: 0, pages: true },
      { relname: 'records', reltuples: 0, pages: true },
    ]);
    expectShapes(await shapes(db));
  });

  it('on 1,000,000 due records, never analyzed', { timeout: 120_000 }, async () => {
    const big = await freshDatabase();
    await big.pool.query(`INSERT INTO rowfleet.records (id, version, data) SELECT 'big-' || g, 1, jsonb_build_object('i', g) FROM generate_series(1, ${MILLION}) g`);
    expectShapes(await shapes(big));
    // The dashboard's reads, with a thousand of them FAILED and a million PROCESSED beside.
    await big.pool.query(`UPDATE rowfleet.records SET status = CASE WHEN id LIKE 'big-%000' THEN 'FAILED' ELSE 'PROCESSED' END, last_error = 'boom'`);
    expect(dashboardIndexes(await dashboardShapes(big))).toEqual(DASHBOARD);
    await big.pool.query(`ANALYZE rowfleet.records`);
    expect(dashboardIndexes(await dashboardShapes(big))).toEqual(DASHBOARD);
  });
});
