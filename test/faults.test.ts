/**
 * Faults with real processes: workers killed with kill -9, a worker paused (SIGSTOP) past its
 * lease, and Postgres dropping every connection and then restarting. After each: every record is
 * PROCESSED at its latest version (I4), the executions whose result was kept never overlapped for
 * one record (I3), and a version ran again only when a lease had really been lost (I5).
 *
 * Evidence comes from test/fixtures/recording-handler.js: a transactional handler that appends
 * every start to a file and inserts every finished execution into test_executions in the
 * completion's transaction, so that table holds exactly the executions whose completion committed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { ensureEmbedded, stopEmbedded } from '../src/db/embedded.ts';
import { runMigrations } from '../src/db/migrate.ts';
import { silentLogger } from '../src/log.ts';
import { loadConfig } from '../src/config.ts';
import { startBoss, stopBoss } from '../src/boss/boss.ts';
import { sweep } from '../src/boss/sweep.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { EXECUTIONS_TABLE, isAlive, POISON_HANDLER, Processes, RECORDING_HANDLER, type LogLine } from './helpers/processes.ts';
import { waitFor } from './helpers/wait.ts';
import { createClient, type RowfleetClient } from '../src/index.ts';
import { setKind } from '../src/records/kinds.ts';

const procs = new Processes();
const databases: TestDatabase[] = [];
let scratch: string;

beforeAll(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-faults-'));
});
afterAll(async () => {
  await procs.killAll();
  for (const db of databases) await db.drop();
  if (scratch !== undefined) await fs.rm(scratch, { recursive: true, force: true });
});

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  databases.push(db);
  await db.pool.query(EXECUTIONS_TABLE);
  return db;
}

/** Upserts through the production function (server-assigned versions unless given). */
async function upsertMany(db: pg.Pool, items: ReadonlyArray<{ id: string; data: object; version?: number }>): Promise<void> {
  await db.query('SELECT * FROM rowfleet.upsert_messages($1::text[], $2::jsonb, $3::bigint[], $4::text[])', [
    items.map((i) => i.id),
    JSON.stringify(items.map((i) => i.data)),
    items.map((i) => i.version ?? null),
    items.map(() => null),
  ]);
}

interface Start {
  id: string;
  version: string;
  pid: number;
  attempt: number;
  fence: number;
}

async function readStarts(file: string): Promise<Start[]> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Start);
}

async function countWhere(db: pg.Pool, where: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE ${where}`);
  return rows[0]!.n;
}

/** The pid inside a worker id (`host:pid:random`). */
const pidOf = (workerId: string): number => Number(/:(\d+):[0-9a-f]+$/.exec(workerId)?.[1]);

/** The invariants every fault test ends with. */
async function expectConsistent(db: pg.Pool, total: number): Promise<void> {
  // I4: every record PROCESSED at its latest version.
  const { rows: states } = await db.query<{ status: string; current: boolean; n: number }>(
    `SELECT status, processed_version = version AS current, count(*)::int AS n FROM rowfleet.records GROUP BY 1, 2`,
  );
  expect(states).toEqual([{ status: 'PROCESSED', current: true, n: total }]);
  // I5: a version's result is kept once: one committed execution per record at its version, and
  // never two for one version.
  const { rows: missing } = await db.query(
    `SELECT r.id, count(e.*)::int AS n FROM rowfleet.records r
       LEFT JOIN test_executions e ON e.record_id = r.id AND e.version = r.version
      GROUP BY r.id HAVING count(e.*) <> 1 LIMIT 5`,
  );
  expect(missing).toEqual([]);
  const { rows: twice } = await db.query(`SELECT record_id, version FROM test_executions GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5`);
  expect(twice).toEqual([]);
  // I3: finished executions of one record never overlapped in time.
  const { rows: overlaps } = await db.query(
    `SELECT a.record_id, a.pid, b.pid AS other_pid FROM test_executions a
       JOIN test_executions b ON a.record_id = b.record_id AND a.ctid < b.ctid
                             AND tstzrange(a.started_at, a.ended_at, '[]') && tstzrange(b.started_at, b.ended_at, '[]')
      LIMIT 5`,
  );
  expect(overlaps).toEqual([]);
  // The result stored is the committed execution's.
  const { rows: foreign } = await db.query(
    `SELECT r.id FROM rowfleet.records r JOIN test_executions e ON e.record_id = r.id AND e.version = r.version
      WHERE (r.result->>'pid')::int <> e.pid LIMIT 5`,
  );
  expect(foreign).toEqual([]);
}

const isWorkerWarning = (l: LogLine) => l.name === 'worker' && l.level >= 40;

describe('faults', () => {
  it('kill -9 of random workers mid-run: nothing lost, no overlap, re-executions only of killed claims', async () => {
    const db = await freshDatabase();
    const startsFile = path.join(scratch, 'kill9.jsonl');
    const total = 3000;
    await upsertMany(db.pool, Array.from({ length: total }, (_, i) => ({ id: `k-${i}`, data: { n: i } })));

    const fleet = procs.start(
      ['fleet', '--workers', '3', '--handler', RECORDING_HANDLER, '--concurrency', '8', '--lease', '2s', '--poll', '200ms'],
      { DATABASE_URL: db.url, RECORDING_STARTS: startsFile, RECORDING_SLEEP_MS: '20' },
    );

    // Three kills, spread over the run, each of a worker that holds records right then.
    const killed = new Set<number>();
    for (const [n, threshold] of [300, 1200, 2000].entries()) {
      const victim = await waitFor(async () => {
        if ((await countWhere(db.pool, `status = 'PROCESSED'`)) < threshold) return undefined;
        const { rows } = await db.pool.query<{ owner: string }>(`SELECT DISTINCT lease_owner AS owner FROM rowfleet.records WHERE status = 'PROCESSING'`);
        const holders = rows.map((r) => pidOf(r.owner)).filter((pid) => procs.fleetWorkers.includes(pid));
        return holders[Math.floor(Math.random() * holders.length)];
      }, 90_000, `${threshold} records processed and a worker holding records (kill ${n + 1})`, 50);
      process.kill(victim, 'SIGKILL');
      procs.forget(victim);
      killed.add(victim);
      // Newer versions of records in every state: waiting, held (superseded at completion), done.
      if (n === 0) await upsertMany(db.pool, Array.from({ length: 300 }, (_, i) => ({ id: `k-${i * 10}`, data: { n: i * 10, second: true } })));
    }

    await waitFor(async () => (await countWhere(db.pool, `status <> 'PROCESSED'`)) === 0, 120_000, 'every record PROCESSED');
    await waitFor(() => fleet.logs.filter((l) => l.msg === 'worker process exited unexpectedly; restarting').length === 3, 30_000, 'the fleet to report three deaths');
    expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    await expectConsistent(db.pool, total);
    const deaths = fleet.logs.filter((l) => l.msg === 'worker process exited unexpectedly; restarting');
    expect(new Set(deaths.map((l) => l.workerPid))).toEqual(killed);
    expect(deaths.every((l) => l.signal === 'SIGKILL')).toBe(true);
    expect(fleet.logs.find((l) => l.msg === 'fleet stopped')).toMatchObject({ restarts: 3 });

    // Leases expired only where a worker was killed.
    const { rows: rescued } = await db.pool.query<{ owner: string; n: number }>(
      `SELECT detail->>'owner' AS owner, count(*)::int AS n FROM rowfleet.event_log WHERE reason = 'rescued' GROUP BY 1`,
    );
    expect(rescued.length).toBeGreaterThan(0);
    expect(rescued.filter((r) => !killed.has(pidOf(r.owner)))).toEqual([]);
    const { rows: failed } = await db.pool.query(`SELECT record_id FROM rowfleet.event_log WHERE reason = 'failed'`);
    expect(failed).toEqual([]);

    // A version ran more than once only when a killed worker had started it: per version, at most
    // one start by a worker that was not killed.
    const starts = await readStarts(startsFile);
    const byVersion = Map.groupBy(starts, (s) => `${s.id}:${s.version}`);
    const rerunByLiveWorkers = [...byVersion].filter(([, list]) => list.filter((s) => !killed.has(s.pid)).length > 1);
    expect(rerunByLiveWorkers.slice(0, 5)).toEqual([]);
    const rerun = [...byVersion.values()].filter((list) => list.length > 1);
    expect(rerun.length).toBeGreaterThan(0);
    expect(rerun.every((list) => list.some((s) => killed.has(s.pid)))).toBe(true);
  });

  it('poison records that crash their process end FAILED, and none of the records that shared a process with them', async () => {
    const db = await freshDatabase();
    const startsFile = path.join(scratch, 'poison.jsonl');
    // 300 records, 6 of them poison (3 exit, 3 throw from a timer), spread among the ids so that
    // each shares claims with innocent neighbours.
    const poison = new Map([10, 60, 110, 160, 210, 260].map((n, i) => [`p-${String(n).padStart(3, '0')}`, i % 2 === 0 ? 'exit' : 'timer']));
    await upsertMany(
      db.pool,
      Array.from({ length: 300 }, (_, n) => {
        const id = `p-${String(n).padStart(3, '0')}`;
        return { id, data: poison.has(id) ? { crash: poison.get(id)! } : { sleepMs: 60 } };
      }),
    );
    const fleet = procs.start(
      ['fleet', '--workers', '3', '--handler', POISON_HANDLER, '--concurrency', '8', '--lease', '2s', '--max-expirations', '2', '--poll', '200ms'],
      { DATABASE_URL: db.url, RECORDING_STARTS: startsFile },
    );
    await waitFor(async () => (await countWhere(db.pool, `status IN ('COMPLETED', 'PROCESSING')`)) === 0, 240_000, 'every record settled');
    expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    const { rows: failed } = await db.pool.query<{ id: string; last_error: string }>(`SELECT id, last_error FROM rowfleet.records WHERE status = 'FAILED' ORDER BY id`);
    expect(failed.map((r) => r.id)).toEqual([...poison.keys()]);
    expect(failed.every((r) => /^poison: the lease expired 3 times/.test(r.last_error))).toBe(true);
    expect(await countWhere(db.pool, `status = 'PROCESSED' AND processed_version = version`)).toBe(294);
    // Each poison record ran at most 3 times (max-expirations 2, then the third, alone).
    const starts = Map.groupBy(await readStarts(startsFile), (s) => s.id);
    for (const id of poison.keys()) expect(starts.get(id)?.length ?? 0, id).toBeLessThanOrEqual(3);
    // The expiration that made each poison record FAILED was that of a lease it held alone.
    const { rows: verdicts } = await db.pool.query(`SELECT record_id, detail->'alone' AS alone FROM rowfleet.event_log WHERE reason = 'failed' ORDER BY record_id`);
    expect(verdicts).toEqual([...poison.keys()].map((id) => ({ record_id: id, alone: true })));
    // The innocent ones: each committed once at its version, never overlapping.
    const { rows: twice } = await db.pool.query(`SELECT record_id FROM test_executions GROUP BY 1 HAVING count(*) <> 1 LIMIT 5`);
    expect(twice).toEqual([]);
    expect(fleet.logs.some((l) => l.msg.startsWith('claimed alone'))).toBe(true);
  }, 300_000);

  it('kill -9 in mode every: each message of 50 records × 20 finishes, in order per record, never overlapping', async () => {
    const db = await freshDatabase();
    const startsFile = path.join(scratch, 'kill9-every.jsonl');
    await setKind(db.pool, 'ledger', { mode: 'every' });
    const ids = Array.from({ length: 50 }, (_, i) => `l-${i}`);
    // Server-assigned versions, ten rounds now and ten more while the workers run.
    const round = (r: number) =>
      db.pool.query('SELECT * FROM rowfleet.upsert_messages($1::text[], $2::text[], $3::jsonb, $4::bigint[], $5::text[], NULL::int[], NULL::timestamptz[])', [
        ids.map(() => 'ledger'),
        ids,
        JSON.stringify(ids.map(() => ({ round: r }))),
        ids.map(() => null),
        ids.map(() => null),
      ]);
    for (let r = 1; r <= 10; r++) await round(r);

    const fleet = procs.start(
      ['fleet', '--workers', '3', '--handler', RECORDING_HANDLER, '--concurrency', '8', '--lease', '2s', '--poll', '200ms'],
      { DATABASE_URL: db.url, RECORDING_STARTS: startsFile, RECORDING_SLEEP_MS: '15' },
    );
    const finished = async () => (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM test_executions`)).rows[0]!.n;
    const killed = new Set<number>();
    for (const [n, threshold] of [150, 500].entries()) {
      const victim = await waitFor(async () => {
        if ((await finished()) < threshold) return undefined;
        const { rows } = await db.pool.query<{ owner: string }>(`SELECT DISTINCT lease_owner AS owner FROM rowfleet.records WHERE status = 'PROCESSING'`);
        const holders = rows.map((r) => pidOf(r.owner)).filter((pid) => procs.fleetWorkers.includes(pid));
        return holders[Math.floor(Math.random() * holders.length)];
      }, 90_000, `${threshold} messages finished and a worker holding records (kill ${n + 1})`, 20);
      process.kill(victim, 'SIGKILL');
      procs.forget(victim);
      killed.add(victim);
      if (n === 0) for (let r = 11; r <= 20; r++) await round(r);
    }
    await waitFor(async () => (await countWhere(db.pool, `status <> 'PROCESSED'`)) === 0, 120_000, 'every ledger record PROCESSED');
    expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    // Every applied message finished exactly once (its completion committed once), none left out.
    const { rows: messages } = await db.pool.query<{ id: string; versions: string[] }>(
      `SELECT record_id AS id, array_agg(version::text ORDER BY seq) AS versions FROM rowfleet.event_log WHERE kind = 'ledger' AND applied GROUP BY 1`,
    );
    expect(messages).toHaveLength(50);
    const { rows: runs } = await db.pool.query<{ id: string; versions: string[] }>(
      `SELECT record_id AS id, array_agg(version::text ORDER BY ended_at) AS versions FROM test_executions GROUP BY 1`,
    );
    const finishedBy = new Map(runs.map((r) => [r.id, r.versions]));
    for (const m of messages) {
      expect(m.versions.length).toBeGreaterThanOrEqual(10);
      // In version order, each once.
      expect(finishedBy.get(m.id), m.id).toEqual(m.versions);
    }
    expect(messages.reduce((n, m) => n + m.versions.length, 0)).toBe(1000);
    // One record's executions never overlapped in time.
    const { rows: overlaps } = await db.pool.query(
      `SELECT a.record_id FROM test_executions a JOIN test_executions b ON a.record_id = b.record_id AND a.ctid < b.ctid
                             AND tstzrange(a.started_at, a.ended_at, '[]') && tstzrange(b.started_at, b.ended_at, '[]') LIMIT 5`,
    );
    expect(overlaps).toEqual([]);
    // Each record PROCESSED at its newest message.
    expect(await countWhere(db.pool, `kind = 'ledger' AND (status <> 'PROCESSED' OR processed_version <> version OR next_seq IS NOT NULL)`)).toBe(0);
    // A message started more than once only when a killed worker had started it; leases expired
    // only where a worker was killed.
    const { rows: rescued } = await db.pool.query<{ owner: string; id: string }>(`SELECT detail->>'owner' AS owner, record_id AS id FROM rowfleet.event_log WHERE reason = 'rescued'`);
    expect(rescued.filter((r) => !killed.has(pidOf(r.owner)))).toEqual([]);
    const starts = await readStarts(startsFile);
    const byMessage = Map.groupBy(starts, (s) => `${s.id}:${s.version}`);
    expect([...byMessage].filter(([, list]) => list.filter((s) => !killed.has(s.pid)).length > 1).slice(0, 5)).toEqual([]);
    const rerun = [...byMessage.values()].filter((list) => list.length > 1);
    expect(rerun.every((list) => list.some((s) => killed.has(s.pid)))).toBe(true);
  });

  it('kill -9 of boss-engine workers mid-batch: nothing lost, no overlap', async () => {
    const db = await freshDatabase();
    const total = 1500;
    await upsertMany(db.pool, Array.from({ length: total }, (_, i) => ({ id: `b-${i}`, data: { n: i } })));
    // The clock, faster than a real scheduler's minute: a sweep every second.
    const b = loadConfig({}).boss;
    const boss = await startBoss({ config: b, pool: db.pool, role: 'client', log: silentLogger });
    let sweeping = true;
    const clock = (async () => {
      while (sweeping) {
        await sweep(db.pool, boss, { queue: b.queue, schema: b.schema, batch: 1000 });
        await delay(1_000);
      }
    })();
    try {
      const fleet = procs.start(
        ['fleet', '--engine', 'boss', '--workers', '2', '--handler', RECORDING_HANDLER, '--concurrency', '8', '--batch', '16', '--lease', '2s', '--poll', '200ms'],
        { DATABASE_URL: db.url, RECORDING_SLEEP_MS: '20' },
      );
      const killed = new Set<number>();
      for (const threshold of [300, 900]) {
        const victim = await waitFor(async () => {
          if ((await countWhere(db.pool, `status = 'PROCESSED'`)) < threshold) return undefined;
          const { rows } = await db.pool.query<{ owner: string }>(`SELECT DISTINCT lease_owner AS owner FROM rowfleet.records WHERE status = 'PROCESSING'`);
          const holders = rows.map((r) => pidOf(r.owner)).filter((pid) => procs.fleetWorkers.includes(pid));
          return holders[Math.floor(Math.random() * holders.length)];
        }, 90_000, `${threshold} records processed and a boss worker holding records`, 50);
        process.kill(victim, 'SIGKILL');
        procs.forget(victim);
        killed.add(victim);
      }
      await waitFor(async () => (await countWhere(db.pool, `status <> 'PROCESSED'`)) === 0, 120_000, 'every record PROCESSED');
      expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      await expectConsistent(db.pool, total);
      const { rows: rescued } = await db.pool.query<{ owner: string }>(`SELECT DISTINCT detail->>'owner' AS owner FROM rowfleet.event_log WHERE reason = 'rescued'`);
      expect(rescued.length).toBeGreaterThan(0);
      expect(rescued.filter((r) => !killed.has(pidOf(r.owner)))).toEqual([]);
    } finally {
      sweeping = false;
      await clock;
      await stopBoss(boss);
    }
  });

  it('a worker paused past its lease: others take over, its handlers are aborted at the lease deadline on resuming, and its late completions are refused', async () => {
    const db = await freshDatabase();
    const startsFile = path.join(scratch, 'sigstop.jsonl');
    const effectsFile = path.join(scratch, 'sigstop-effects.jsonl');
    const workerArgs = ['worker', '--handler', RECORDING_HANDLER, '--concurrency', '5', '--lease', '1s', '--poll', '100ms'];
    const env = { DATABASE_URL: db.url, RECORDING_STARTS: startsFile, RECORDING_EFFECTS: effectsFile };
    const ids = Array.from({ length: 5 }, (_, i) => `stop-${i}`);

    const paused = procs.start(workerArgs, env);
    await paused.waitForLog((l) => l.msg === 'worker started', 60_000, 'the first worker to start');
    await upsertMany(db.pool, ids.map((id) => ({ id, data: { sleepMs: 1_500 } })));
    await waitFor(async () => (await readStarts(startsFile)).filter((s) => s.pid === paused.pid).length === ids.length, 30_000, 'the first worker to start every handler');
    process.kill(paused.pid, 'SIGSTOP');
    try {
      const { rows: held } = await db.pool.query<{ owner: string }>(`SELECT DISTINCT lease_owner AS owner FROM rowfleet.records WHERE status = 'PROCESSING'`);
      expect(held.map((r) => pidOf(r.owner))).toEqual([paused.pid]);

      const rescuer = procs.start(workerArgs, env);
      await waitFor(async () => (await countWhere(db.pool, `status = 'PROCESSED'`)) === ids.length, 60_000, 'the second worker to process every record');
      const { rows: kept } = await db.pool.query<{ pid: number }>('SELECT DISTINCT pid FROM test_executions');
      expect(kept.map((r) => r.pid)).toEqual([rescuer.pid]);

      process.kill(paused.pid, 'SIGCONT');
      // Back from its pause, it finds every lease gone: each execution is aborted or refused.
      const leaseLost = (l: LogLine) => typeof l.recordId === 'string' && /lease (was )?lost/.test(l.msg);
      await waitFor(() => ids.every((id) => paused.logs.some((l) => leaseLost(l) && l.recordId === id)), 30_000, 'the paused worker to log every lease as lost');
      // Aborted by its own clock at the lease's deadline, the first timer to fire on resuming,
      // before their sleeps (due later) ended: none of its handlers went on to its effect.
      expect(paused.logs.filter((l) => l.msg.startsWith('lease lost: its lease ended')).map((l) => l.recordId).sort()).toEqual(ids);
      const effects = (await fs.readFile(effectsFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { id: string; pid: number; fence: number });
      expect(effects.filter((e) => e.pid === paused.pid)).toEqual([]);
      expect(effects.map((e) => e.id).sort()).toEqual(ids);

      expect(await paused.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await rescuer.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(paused.logs.find((l) => l.msg === 'worker stopped')).toMatchObject({ processed: 0, lost: ids.length });
      expect(rescuer.logs.find((l) => l.msg === 'worker stopped')).toMatchObject({ processed: ids.length, rescued: ids.length });

      await expectConsistent(db.pool, ids.length);
      // Its executions ran (started) but none was kept: the table still holds only the rescuer's.
      const { rows: after } = await db.pool.query<{ pid: number }>('SELECT DISTINCT pid FROM test_executions');
      expect(after.map((r) => r.pid)).toEqual([rescuer.pid]);
      const starts = await readStarts(startsFile);
      expect(starts.filter((s) => s.pid === paused.pid)).toHaveLength(ids.length);
      expect(starts.filter((s) => s.pid === rescuer.pid)).toHaveLength(ids.length);
      // The fencing token grew from the paused holder's claim to the rescuer's, record by record.
      for (const id of ids) {
        const [first, second] = [paused.pid, rescuer.pid].map((pid) => starts.find((s) => s.id === id && s.pid === pid)!.fence);
        expect(second, id).toBeGreaterThan(first!);
      }
      const { rows: rescued } = await db.pool.query<{ owner: string }>(`SELECT detail->>'owner' AS owner FROM rowfleet.event_log WHERE reason = 'rescued'`);
      expect(rescued.map((r) => pidOf(r.owner))).toEqual(ids.map(() => paused.pid));
    } finally {
      // Never leave it stopped: SIGKILL in afterAll works on a stopped process, SIGTERM would not.
      if (isAlive(paused.pid)) process.kill(paused.pid, 'SIGCONT');
    }
  });

  describe('Postgres dropping connections and restarting', () => {
    // A server of its own: restarting the shared test server would break the other test files.
    let home: string | undefined;
    let pool: pg.Pool | undefined;
    const clients: RowfleetClient[] = [];
    afterAll(async () => {
      for (const client of clients) await client.close().catch(() => {});
      await pool?.end().catch(() => {});
      if (home !== undefined) {
        await stopEmbedded(home, silentLogger).catch(() => {});
        await fs.rm(home, { recursive: true, force: true });
      }
    });

    it('workers keep running, reconnect and finish everything, with no human action', async () => {
      home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-faults-pg-'));
      const server = await ensureEmbedded({ home, log: silentLogger });
      await runMigrations(server.url);
      const db = new pg.Pool({ connectionString: server.url, max: 2 });
      pool = db;
      // The restart ends our idle connections too; the pool replaces them.
      db.on('error', () => {});
      await db.query(EXECUTIONS_TABLE);
      await upsertMany(db, Array.from({ length: 1500 }, (_, i) => ({ id: `pg-${i}`, data: { n: i } })));

      const fleet = procs.start(
        ['fleet', '--workers', '2', '--handler', RECORDING_HANDLER, '--concurrency', '8', '--lease', '2s', '--poll', '200ms'],
        { DATABASE_URL: server.url, RECORDING_SLEEP_MS: '20' },
      );
      const processed = () => countWhere(db, `status = 'PROCESSED'`).catch(() => 0);
      // A client waiting for results: its first wait opens its LISTEN, which must survive both faults.
      const client = createClient({ databaseUrl: server.url, poolSize: 2 });
      clients.push(client);
      const firstWait = client.upsert({ id: 'pg-wait-0', data: { n: 0 } }, { wait: '90s' });
      await waitFor(async () => (await processed()) >= 300, 90_000, '300 records processed');
      const workers = procs.fleetWorkers;
      expect(workers).toHaveLength(2);

      // Fault 1: every rowfleet connection dropped at once.
      const dropAt = Date.now();
      const { rows } = await db.query<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE 'rowfleet%' AND pid <> pg_backend_pid()`,
      );
      expect(rows[0]!.n).toBeGreaterThan(0);
      const before = await processed();
      await waitFor(async () => (await processed()) >= before + 300, 60_000, 'progress after the dropped connections');

      // Fault 2: Postgres stops (fast shutdown) and comes back two seconds later on the same port.
      const restartAt = Date.now();
      await stopEmbedded(home, silentLogger);
      await delay(2_000);
      const again = await ensureEmbedded({ home, log: silentLogger });
      expect(again.port).toBe(server.port);
      // New work after the restart: found through the re-established LISTEN or the poll.
      await waitFor(() => upsertMany(db, Array.from({ length: 500 }, (_, i) => ({ id: `pg-new-${i}`, data: { n: i } }))).then(() => true, () => false), 30_000, 'an upsert after the restart');
      await waitFor(async () => (await countWhere(db, `status <> 'PROCESSED'`).catch(() => -1)) === 0, 120_000, 'every record PROCESSED after the restart');
      expect((await firstWait).outcome).toMatchObject({ settled: true, status: 'PROCESSED' });
      // The waiting client is answered by a notification, not when its wait runs out (30 s, when a
      // last read would find it PROCESSED too): its LISTEN reconnected.
      const asked = Date.now();
      expect((await client.upsert({ id: 'pg-wait-1', data: { n: 1 } }, { wait: '30s' })).outcome).toMatchObject({ settled: true, status: 'PROCESSED' });
      expect(Date.now() - asked).toBeLessThan(25_000);

      // The same two workers did it all: none exited, none was restarted.
      expect(fleet.logs.filter((l) => l.msg === 'worker process exited unexpectedly; restarting')).toEqual([]);
      expect(procs.fleetWorkers.sort()).toEqual([...workers].sort());
      for (const pid of workers) expect(isAlive(pid)).toBe(true);
      // They noticed both faults, and said so.
      expect(fleet.logs.filter((l) => isWorkerWarning(l) && (l.time as number) >= dropAt && (l.time as number) < restartAt).length).toBeGreaterThan(0);
      expect(fleet.logs.filter((l) => isWorkerWarning(l) && (l.time as number) >= restartAt).length).toBeGreaterThan(0);

      expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      await expectConsistent(db, 2002);
      const { rows: registered } = await db.query('SELECT id FROM rowfleet.workers');
      expect(registered).toEqual([]);
    });
  });
});
