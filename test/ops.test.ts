/**
 * Operating rowfleet from a terminal: requeue, status, inspect and replay, run in-process through
 * the program factory (injected output, exit codes from the thrown error), plus one end-to-end run
 * through the real binary.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { rowfleet, rowfleetWith } from './helpers/cli.ts';
import { UsageError, UserError } from '../src/errors.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { parseMessage } from '../src/records/message.ts';
import { claimDue } from '../src/records/claim.ts';
import { complete, fail } from '../src/records/settle.ts';
import { rescueExpired } from '../src/records/rescue.ts';
import { requeue } from '../src/ops/requeue.ts';
import { EXACT_COUNT_UP_TO_BYTES, readStatus } from '../src/ops/status.ts';

let db: TestDatabase;
let env: Record<string, string>;
beforeAll(async () => {
  db = await createTestDatabase();
  env = { DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'warn' };
});
afterAll(async () => {
  await db?.drop();
});
beforeEach(async () => {
  await db.pool.query(`TRUNCATE rowfleet.records, rowfleet.event_log, rowfleet.workers, rowfleet.stats`);
});

const upsert = (id: string, data: object, version?: number) => upsertMessages(db.pool, [parseMessage({ id, data, version }, { maxDepth: 64 })]);
const row = async (id: string) => (await db.pool.query(`SELECT status, version, data, attempts, last_error FROM rowfleet.records WHERE id = $1`, [id])).rows[0];
const events = async (id: string, reason: string) =>
  (await db.pool.query(`SELECT detail FROM rowfleet.event_log WHERE record_id = $1 AND reason = $2 ORDER BY seq`, [id, reason])).rows.map((r) => r.detail);

/** Records ending FAILED with `error`, through the worker's own statements. */
async function failRecords(ids: string[], error: string): Promise<void> {
  for (const id of ids) await upsert(id, { id });
  const claimed = await claimDue(db.pool, { owner: 'w', limit: ids.length, leaseMs: 30_000 });
  for (const c of claimed) await fail(db.pool, { ...c, error, permanent: true, maxAttempts: 3, backoffMs: 0 });
}

async function processRecords(ids: string[]): Promise<void> {
  for (const id of ids) await upsert(id, { id });
  const claimed = await claimDue(db.pool, { owner: 'w', limit: ids.length, leaseMs: 30_000 });
  await complete(db.pool, claimed.map((c) => ({ ...c, result: { ok: true } })));
}

const json = (run: { stdout: string }) => JSON.parse(run.stdout);

describe('rowfleet requeue', () => {
  it('moves FAILED records back to COMPLETED with fresh attempts, keeping their history; twice is a no-op', async () => {
    await failRecords(['f-1', 'f-2'], 'boom');
    await processRecords(['done-1']);
    const run = await rowfleet(env, 'requeue', '--all', '--json');
    expect(run.error).toBeUndefined();
    expect(json(run)).toEqual({ matched: 2, requeued: 2, dryRun: false, interrupted: false });
    expect(await row('f-1')).toMatchObject({ status: 'COMPLETED', attempts: 0, last_error: null });
    expect(await row('done-1')).toMatchObject({ status: 'PROCESSED' });
    expect(await events('f-1', 'failed')).toHaveLength(1);
    expect(await events('f-1', 'requeued')).toEqual([{ from: 'FAILED', lastError: 'boom' }]);
    expect(json(await rowfleet(env, 'requeue', '--all', '--json'))).toEqual({ matched: 0, requeued: 0, dryRun: false, interrupted: false });
    expect(await events('f-1', 'requeued')).toHaveLength(1);
  });

  it('filters by --id, --error, --since / --before and --limit', async () => {
    await failRecords(['a-1', 'a-2', 'a-3'], 'connection timeout');
    await failRecords(['b-1', 'b-2'], 'bad data');
    await db.pool.query(`UPDATE rowfleet.records SET updated_at = now() - interval '3 hours' WHERE id IN ('a-1', 'b-1')`);
    expect(json(await rowfleet(env, 'requeue', '--id', 'a-2', '--id', 'b-2', '--dry-run', '--json'))).toEqual({ matched: 2, requeued: 0, dryRun: true, interrupted: false });
    expect(json(await rowfleet(env, 'requeue', '--error', '^conn.*timeout$', '--dry-run', '--json')).matched).toBe(3);
    expect(json(await rowfleet(env, 'requeue', '--before', '2h', '--dry-run', '--json')).matched).toBe(2);
    expect(json(await rowfleet(env, 'requeue', '--since', '2h', '--error', 'timeout', '--dry-run', '--json')).matched).toBe(2);
    const stamp = new Date(Date.now() - 2 * 3600_000).toISOString();
    expect(json(await rowfleet(env, 'requeue', '--before', stamp, '--dry-run', '--json')).matched).toBe(2);
    expect(json(await rowfleet(env, 'requeue', '--limit', '4', '--json'))).toEqual({ matched: 4, requeued: 4, dryRun: false, interrupted: false });
    // In id order: the last FAILED one is left.
    const { rows } = await db.pool.query(`SELECT id FROM rowfleet.records WHERE status = 'FAILED'`);
    expect(rows).toEqual([{ id: 'b-2' }]);
  });

  it('lists what a dry run would change, and changes nothing', async () => {
    await failRecords(['d-1', 'd-2'], 'nope');
    const run = await rowfleet(env, 'requeue', '--all', '--dry-run');
    expect(run.stdout).toMatch(/^default\td-1\tFAILED\tv\d+\t\S+\tnope\ndefault\td-2\tFAILED/);
    expect(run.stdout).toContain('dry run: 2 FAILED record(s) would be requeued; nothing changed');
    expect(await row('d-1')).toMatchObject({ status: 'FAILED' });
    expect(await events('d-1', 'requeued')).toEqual([]);
  });

  it('reprocesses PROCESSED records with --status PROCESSED', async () => {
    await processRecords(['p-1', 'p-2']);
    await failRecords(['x-1'], 'other');
    expect(json(await rowfleet(env, 'requeue', '--status', 'PROCESSED', '--all', '--json'))).toEqual({ matched: 2, requeued: 2, dryRun: false, interrupted: false });
    expect(await row('p-1')).toMatchObject({ status: 'COMPLETED' });
    expect(await row('x-1')).toMatchObject({ status: 'FAILED' });
    expect(await events('p-1', 'requeued')).toEqual([{ from: 'PROCESSED', lastError: null }]);
  });

  it('spreads a requeue out at --rate records per second', async () => {
    await failRecords(Array.from({ length: 10 }, (_, i) => `r-${i}`), 'slow down');
    let clock = 0;
    const waits: number[] = [];
    const result = await requeue(db.pool, {
      status: 'FAILED',
      dryRun: false,
      rate: 4,
      now: () => clock,
      sleep: async (ms) => {
        waits.push(ms);
        clock += ms;
      },
    });
    expect(result).toEqual({ matched: 10, requeued: 10, dryRun: false, interrupted: false });
    // Pages of 4: after 4 records 1 s has to have passed, after 8, 2 s.
    expect(waits).toEqual([1000, 1000]);
  });

  it('stops between pages when interrupted: what is done stays done, and running it again does the rest', async () => {
    await failRecords(Array.from({ length: 10 }, (_, i) => `i-${i}`), 'later');
    const stop = new AbortController();
    // Interrupted (Ctrl-C) while it waits for its first page's time slot.
    const first = await requeue(db.pool, { status: 'FAILED', dryRun: false, rate: 4, signal: stop.signal, now: () => 0, sleep: async () => stop.abort() });
    expect(first).toEqual({ matched: 10, requeued: 4, dryRun: false, interrupted: true });
    const rest = await requeue(db.pool, { status: 'FAILED', dryRun: false });
    expect(rest).toEqual({ matched: 6, requeued: 6, dryRun: false, interrupted: false });

    await failRecords(['i-x'], 'again');
    const aborted = new AbortController();
    aborted.abort();
    const run = await rowfleetWith({ env, shutdownSignal: aborted.signal }, 'requeue', '--all');
    expect(run.error).toBeInstanceOf(UserError);
    expect((run.error as Error).message).toBe('interrupted after requeuing 0 of 1; run the same command again for the rest (what was requeued is no longer FAILED, so it is not taken twice)');
  });

  it('shows a progress bar on a terminal', async () => {
    await failRecords(['t-1'], 'x');
    const run = await rowfleetWith({ env, isTTY: true }, 'requeue', '--all');
    expect(run.stderr).toContain('requeued [##############################] 1/1');
    expect(run.stdout).toContain('requeued 1 of 1 matching FAILED record(s)');
  });

  it('refuses unclear requests with a usage error naming the problem, changing nothing', async () => {
    await failRecords(['u-1'], 'x');
    for (const [args, message] of [
      [['requeue'], /^no filter given: pass --kind, --id, --error, --since, --before or --limit, or --all/],
      [['requeue', '--error', '(unclosed'], /^--error "\(unclosed" is not a valid regular expression/],
      [['requeue', '--since', 'yesterday-ish'], /^--since must be a duration like 2h or 30m, or a timestamp/],
      [['requeue', '--since', '2'], /^--since needs a unit: "2" could be 2ms or 2s; .*, or a timestamp like/],
    ] as const) {
      const run = await rowfleet(env, ...args);
      expect(run.error).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toMatch(message);
    }
    const bad = await rowfleet(env, 'requeue', '--status', 'PROCESSING', '--all');
    expect((bad.error as Error).message).toBe("error: option '--status <status>' argument 'PROCESSING' is invalid. Allowed choices are FAILED, PROCESSED.");
    expect(await row('u-1')).toMatchObject({ status: 'FAILED' });
  });
});

describe('rowfleet status', () => {
  it('reports counts, the due backlog and its oldest wait, throughput, failures and workers', async () => {
    await processRecords(['s-1', 's-2']);
    await failRecords(['s-3'], 'x');
    await upsert('s-6', {});
    await claimDue(db.pool, { owner: 'h:1:a', limit: 1, leaseMs: 30_000 });
    await upsert('s-4', {});
    await upsert('s-5', {});
    await upsert('s-7', {});
    expect((await rowfleet(env, 'delete', '--id', 's-7')).error).toBeUndefined();
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() - interval '90 seconds' WHERE id = 's-4'`);
    await db.pool.query(`UPDATE rowfleet.records SET run_after = now() + interval '1 hour' WHERE id = 's-5'`);
    await db.pool.query(
      `INSERT INTO rowfleet.workers (id, host, pid, engine, concurrency, last_seen_at) VALUES ('h:1:a', 'h', 1, 'direct', 10, now()), ('h:2:b', 'h', 2, 'boss', 5, now() - interval '10 minutes')`,
    );
    await db.pool.query(`INSERT INTO rowfleet.stats (minute, processed, failed, retried) VALUES (date_trunc('minute', now()), 120, 1, 4), (date_trunc('minute', now()) - interval '10 minutes', 600, 0, 0)`);

    const status = json(await rowfleet(env, 'status', '--json'));
    expect(status.counts).toEqual({ COMPLETED: 2, PROCESSING: 1, PROCESSED: 2, FAILED: 1, DELETED: 1 });
    expect(status.due).toBe(1);
    expect(status.oldestDueAgeSeconds).toBeGreaterThanOrEqual(89);
    expect(status.throughput).toEqual({ '1m': 2.03, '5m': 0.41, '15m': 0.8 });
    // 720 and 1 written by hand above, plus the two completions and the failure of this test's records.
    expect(status.lastHour).toMatchObject({ processed: 722, failed: 2, retried: 4 });
    expect(status.workers).toEqual([
      expect.objectContaining({ id: 'h:1:a', engine: 'direct', inFlight: 1, concurrency: 10, alive: true }),
      expect.objectContaining({ id: 'h:2:b', engine: 'boss', inFlight: 0, alive: false }),
    ]);

    const text = (await rowfleet(env, 'status')).stdout;
    expect(text).toContain('COMPLETED 2   PROCESSING 1   PROCESSED 2   FAILED 1   DELETED 1');
    expect(text).toMatch(/due {8}1 {3}oldest waiting 1m3\ds/);
    expect(text).toContain('workers    1 alive, 1 silent');
    expect(text).toMatch(/h:1:a\s+direct\s+1\/10\s+alive/);
  });

  it('estimates PROCESSED once the table is too large to count on every poll, analyzed or not', { timeout: 60_000 }, async () => {
    const big = await createTestDatabase();
    try {
      await big.pool.query(`ALTER TABLE rowfleet.records SET (autovacuum_enabled = false)`);
      await big.pool.query(
        `INSERT INTO rowfleet.records (kind, id, version, data, status, processed_version, processed_at)
         SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'p-' || g, 1, jsonb_build_object('pad', repeat('x', 200)), 'PROCESSED', 1, now()
           FROM generate_series(1, 100000) g`,
      );
      await big.pool.query(`INSERT INTO rowfleet.records (id, version, data, status, last_error) SELECT 'f-' || g, 1, '{}', 'FAILED', 'boom' FROM generate_series(1, 30) g`);
      const { rows } = await big.pool.query<{ bytes: number; reltuples: number }>(`SELECT pg_relation_size('rowfleet.records')::float8 AS bytes, reltuples FROM pg_class WHERE oid = 'rowfleet.records'::regclass`);
      expect(rows[0]!.bytes).toBeGreaterThan(EXACT_COUNT_UP_TO_BYTES);
      expect(rows[0]!.reltuples).toBe(-1);
      for (const state of ['never analyzed', 'analyzed']) {
        if (state === 'analyzed') await big.pool.query(`ANALYZE rowfleet.records`);
        const status = await readStatus(big.pool);
        expect(status.estimated, state).toEqual(['PROCESSED']);
        expect(status.counts.FAILED, state).toBe(30);
        // The planner's estimate: near, not exact.
        expect(status.counts.PROCESSED, state).toBeGreaterThan(70_000);
        expect(status.counts.PROCESSED, state).toBeLessThan(130_000);
        expect(status.kinds.map((k) => [k.kind, k.counts.PROCESSED]), state).toEqual([['a', null], ['b', null], ['default', null]]);
      }
    } finally {
      await big.drop();
    }
  });

  it('is current the moment records change state, with no worker heartbeat in between', async () => {
    await processRecords(['c-1', 'c-2', 'c-3', 'c-4', 'c-5']);
    await upsert('c-retry', {});
    const [retrying] = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 30_000 });
    await fail(db.pool, { ...retrying!, error: 'try again', permanent: false, maxAttempts: 3, backoffMs: 60_000 });
    await failRecords(['c-failed'], 'no');
    await upsert('c-crashed', {});
    await claimDue(db.pool, { owner: 'gone', limit: 1, leaseMs: 30_000 });
    await rescueExpired(db.pool, { maxExpirations: 3, now: new Date(Date.now() + 60_000) });

    const status = json(await rowfleet(env, 'status', '--json'));
    expect(status.counts).toMatchObject({ PROCESSED: 5, FAILED: 1 });
    expect(status.lastHour).toEqual({ processed: 5, failed: 1, retried: 1, rescued: 1, requeued: 0, replayed: 0 });
  });

  it('--watch redraws until interrupted', async () => {
    const stop = new AbortController();
    let frames = 0;
    const run = await rowfleetWith(
      {
        env,
        isTTY: true,
        shutdownSignal: stop.signal,
        onStdout: () => {
          frames += 1;
          if (frames === 2) stop.abort();
        },
      },
      'status',
      '--watch',
    );
    expect(run.error).toBeUndefined();
    expect(run.stdout.split('\x1b[H\x1b[2J')).toHaveLength(3);
  });
});

describe('rowfleet inspect', () => {
  it('shows the record and its timeline: messages, failed attempts, requeue, completion', async () => {
    await upsert('i-1', { n: 2 }, 2);
    await upsert('i-1', { n: 1 }, 1);
    const [claimed] = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 30_000 });
    await fail(db.pool, { ...claimed!, error: 'first try', permanent: false, maxAttempts: 3, backoffMs: 0 });
    const [again] = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 30_000 });
    await fail(db.pool, { ...again!, error: 'for good', permanent: true, maxAttempts: 3, backoffMs: 0 });
    await rowfleet(env, 'requeue', '--id', 'i-1');
    const [third] = await claimDue(db.pool, { owner: 'w', limit: 1, leaseMs: 30_000 });
    await complete(db.pool, [{ ...third!, result: { ok: 1 } }]);

    const inspection = json(await rowfleet(env, 'inspect', 'i-1', '--json'));
    expect(inspection.record).toMatchObject({ id: 'i-1', status: 'PROCESSED', version: 2, result: { ok: 1 } });
    expect(inspection.timeline.map((t: { what: string }) => t.what)).toEqual(['applied', 'stale', 'retried', 'failed', 'requeued', 'completed']);
    const text = (await rowfleet(env, 'inspect', 'i-1')).stdout;
    expect(text).toContain('status     PROCESSED   version 2');
    expect(text).toMatch(/stale\s+v1\s+message refused as stale: the record was at version 2/);
    expect(text).toMatch(/retried\s+v2\s+attempt 1 failed: first try/);
    expect(text).toMatch(/completed\s+v2\s+PROCESSED, result \{"ok":1\}/);
  });

  it('fails with exit code 1 for an unknown id', async () => {
    const run = await rowfleet(env, 'inspect', 'no-such-record');
    expect(run.error).toBeInstanceOf(UserError);
    expect((run.error as Error).message).toBe('no record "no-such-record" of kind default; check the id and --kind (rowfleet status shows the kinds that exist)');
  });
});

describe('rowfleet replay', () => {
  /** Three records written through the upsert; then the state an older backup of records leaves. */
  async function restoredFromOldBackup(): Promise<void> {
    for (const id of ['old', 'gone', 'bent', 'fine']) {
      await upsert(id, { v: 1 }, 1);
      await upsert(id, { v: 2 }, 2);
    }
    await db.pool.query(`UPDATE rowfleet.records SET version = 1, data = '{"v": 1}', status = 'PROCESSED' WHERE id = 'old'`);
    await db.pool.query(`DELETE FROM rowfleet.records WHERE id = 'gone'`);
    await db.pool.query(`UPDATE rowfleet.records SET data = '{"v": "corrupt"}' WHERE id = 'bent'`);
  }

  it('--verify reports every record that differs and changes nothing (exit 1)', async () => {
    await restoredFromOldBackup();
    const run = await rowfleet(env, 'replay', '--verify', '--json');
    expect(run.error).toBeInstanceOf(UserError);
    const report = json(run);
    expect(report).toMatchObject({ checked: 4, differ: 3, byProblem: { missing: 1, behind: 1, data: 1, ahead: 0 }, rebuilt: 0 });
    expect(report.differences.map((d: { id: string; problem: string }) => [d.id, d.problem])).toEqual([
      ['bent', 'data'],
      ['gone', 'missing'],
      ['old', 'behind'],
    ]);
    expect(await row('old')).toMatchObject({ version: '1' });
    expect(json(await rowfleet(env, 'replay', '--dry-run', '--json'))).toMatchObject({ differ: 3, rebuilt: 0 });
    expect(await row('gone')).toBeUndefined();
  });

  it('rebuilds data and version from the applied messages, back to COMPLETED, never lowering a version', async () => {
    await restoredFromOldBackup();
    await db.pool.query(`UPDATE rowfleet.records SET version = 9 WHERE id = 'fine'`);
    const run = await rowfleet(env, 'replay', '--json');
    expect(run.error).toBeUndefined();
    expect(json(run)).toMatchObject({ checked: 4, rebuilt: 3, byProblem: { missing: 1, behind: 1, data: 1, ahead: 1 } });
    for (const id of ['old', 'gone', 'bent']) expect(await row(id)).toMatchObject({ status: 'COMPLETED', version: '2', data: { v: 2 } });
    expect(await row('fine')).toMatchObject({ version: '9' });
    expect(await events('gone', 'replayed')).toEqual([{ from: null }]);
    expect(await events('old', 'replayed')).toEqual([{ from: 1 }]);
    // Counted for status and the API's rowfleet_outcomes_last_hour, which no worker sees.
    const replayed = await db.pool.query<{ n: number }>(`SELECT sum(replayed)::int AS n FROM rowfleet.stats`);
    expect(replayed.rows[0]!.n).toBe(3);
    // Now only the record ahead of its messages differs.
    expect(json(await rowfleet(env, 'replay', '--verify', '--json'))).toMatchObject({ differ: 1, byProblem: { ahead: 1 } });
  });

  it('replays as of --to-seq, for the records chosen by --id and --from-seq', async () => {
    await upsert('s1', { v: 1 }, 1);
    const { rows } = await db.pool.query(`SELECT max(seq)::text AS seq FROM rowfleet.event_log`);
    const cut = rows[0].seq as string;
    await upsert('s1', { v: 2 }, 2);
    await upsert('s2', { v: 1 }, 1);
    await db.pool.query(`DELETE FROM rowfleet.records`);
    expect(json(await rowfleet(env, 'replay', '--to-seq', cut, '--json'))).toMatchObject({ checked: 1, rebuilt: 1 });
    expect(await row('s1')).toMatchObject({ version: '1' });
    expect(json(await rowfleet(env, 'replay', '--id', 's2', '--json'))).toMatchObject({ checked: 1, rebuilt: 1 });
    expect(await row('s1')).toMatchObject({ version: '1' });
    expect(json(await rowfleet(env, 'replay', '--from-seq', String(BigInt(cut) + 1n), '--json'))).toMatchObject({ checked: 2, rebuilt: 1 });
    expect(await row('s1')).toMatchObject({ version: '2', data: { v: 2 } });
  });

  it('refuses contradictory options', async () => {
    for (const args of [
      ['replay', '--verify', '--dry-run'],
      ['replay', '--from-seq', '10', '--to-seq', '5'],
    ]) {
      const run = await rowfleet(env, ...args);
      expect(run.error).toBeInstanceOf(UsageError);
    }
    const ten = await rowfleet(env, 'replay', '--from-seq', 'ten');
    expect(ten.error).toBeInstanceOf(UsageError);
    expect((ten.error as Error).message).toBe('--from-seq must be an event_log seq (a positive whole number), got "ten"');
  });
});

describe('the rowfleet binary, end to end', () => {
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });

  it('requeues, reports status and inspects, with meaningful exit codes and --help examples', async () => {
    await failRecords(['e2e-1'], 'remote said no');
    const requeued = run('requeue', '--error', 'said no', '--json');
    expect(requeued.status).toBe(0);
    expect(JSON.parse(requeued.stdout)).toEqual({ matched: 1, requeued: 1, dryRun: false, interrupted: false });
    const status = run('status', '--json');
    expect(status.status).toBe(0);
    expect(JSON.parse(status.stdout).counts.COMPLETED).toBe(1);
    expect(run('inspect', 'e2e-1').stdout).toContain('requeued from FAILED (last error: remote said no)');
    expect(run('inspect', 'missing').status).toBe(1);
    expect(run('requeue').status).toBe(2);
    for (const command of ['requeue', 'status', 'inspect', 'replay']) {
      const help = run(command, '--help');
      expect(help.status).toBe(0);
      expect(help.stdout).toContain('Examples:');
    }
  });
});
