/**
 * The fault suite's scenarios: each a cluster (test/harness/cluster.ts), a workload
 * (workload.ts) and the faults injected while it runs. Every scenario ends healed; the runner
 * then waits for quiet and checks the whole history (checker.ts).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Cluster, ClusterOptions } from './cluster.ts';
import { recordId, type WorkloadOptions } from './workload.ts';

export interface FaultContext {
  rand: () => number;
  /** Resolves once the workload is this far through (0..1). */
  progress: (share: number) => Promise<void>;
  note: (text: string) => void;
}

export interface Scenario {
  name: string;
  summary: string;
  cluster?: ClusterOptions;
  workload?: Partial<WorkloadOptions>;
  /** Records meant to end FAILED as poison. */
  poison?: string[];
  /** Injects the faults while the workload runs, and heals them before returning. */
  fault?: (c: Cluster, ctx: FaultContext) => Promise<void>;
  /** After the checks: more of them, each returning the problems found. */
  after?: (c: Cluster, ctx: FaultContext) => Promise<string[]>;
}

/** A fleet worker that holds records right now (its pid, from the lease owner). */
async function busyWorker(c: Cluster, rand: () => number, among?: number[]): Promise<number | undefined> {
  const { rows } = await c.admin.query<{ owner: string }>(`SELECT DISTINCT lease_owner AS owner FROM rowfleet.records WHERE status = 'PROCESSING'`);
  const pids = rows.map((r) => Number(/:(\d+):[0-9a-f]+$/.exec(r.owner)?.[1])).filter((pid) => (among ?? c.procs.fleetWorkers).includes(pid));
  return pids[Math.floor(rand() * pids.length)];
}

async function until<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(50);
  }
}

/** Samples how long sessions have been idle in a transaction, while `during` runs; the longest, in ms. */
async function longestIdleInTransaction(c: Cluster, during: Promise<void>): Promise<number> {
  let longest = 0;
  let done = false;
  void during.finally(() => (done = true));
  while (!done) {
    const { rows } = await c.admin
      .query<{ ms: number }>(`SELECT coalesce(max(extract(epoch FROM now() - state_change) * 1000), 0)::float8 AS ms FROM pg_stat_activity
                               WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)
      .catch(() => ({ rows: [{ ms: 0 }] }));
    longest = Math.max(longest, rows[0]!.ms);
    await delay(250);
  }
  await during;
  return longest;
}

const slow = (ms: number) => () => ({ sleepMs: ms });

export const SCENARIOS: Scenario[] = [
  { name: 'baseline', summary: 'no fault' },
  {
    name: 'kill-api',
    summary: 'kill -9 of each API process in turn while clients retry on the other',
    async fault(c, { progress, note }) {
      for (const [slot, at] of [[0, 0.25], [1, 0.6]] as const) {
        await progress(at);
        process.kill(c.apis[slot]!.pid, 'SIGKILL');
        note(`killed API ${slot}`);
        await delay(1_500);
        await c.startApi(slot);
      }
    },
  },
  {
    name: 'kill-worker-points',
    summary: 'workers kill -9 themselves after the claim, after the effect before the completion, after the completion',
    workload: {
      dataFor: (_id, n) => (n % 40 === 3 ? { fault: 'kill-after-claim' } : n % 40 === 13 ? { fault: 'kill-after-effect' } : n % 40 === 23 ? { fault: 'kill-after-complete' } : { sleepMs: 20 }),
    },
  },
  {
    name: 'kill-worker-random',
    summary: 'kill -9 of a random worker holding records, four times',
    workload: { dataFor: slow(40) },
    async fault(c, { rand, progress, note }) {
      for (const at of [0.15, 0.35, 0.55, 0.75]) {
        await progress(at);
        const victim = await until(() => busyWorker(c, rand), 20_000, 'a worker holding records');
        process.kill(victim, 'SIGKILL');
        c.procs.forget(victim);
        note(`killed worker ${victim}`);
      }
    },
  },
  {
    name: 'sigstop',
    summary: 'a worker SIGSTOPped for five leases, then resumed; its handlers ignore their abort signal, and the fence refuses their late effects',
    workload: { dataFor: () => ({ sleepMs: 400, ignoreSignal: true }) },
    async fault(c, { rand, progress, note }) {
      await progress(0.3);
      const victim = await until(() => busyWorker(c, rand), 20_000, 'a worker holding records');
      process.kill(victim, 'SIGSTOP');
      note(`stopped worker ${victim}`);
      // Long enough for its records to be rescued and done again behind the backlog.
      try {
        await delay(10_000);
      } finally {
        process.kill(victim, 'SIGCONT');
      }
    },
    async after(c) {
      // Its handlers went on to their effects with the tokens of claims long lost: each refused.
      const { rows } = await c.admin.query<{ effect: string; n: number }>(`SELECT effect, count(*)::int AS n FROM harness_attempts GROUP BY 1`);
      const fenced = rows.find((r) => r.effect === 'fenced')?.n ?? 0;
      return fenced > 0 ? [] : [`no late effect of the paused worker was fenced (${JSON.stringify(rows)})`];
    },
  },
  {
    name: 'pg-crash-restart',
    summary: 'Postgres shut down in immediate mode three times under load, back after a second',
    async fault(c, { progress, note }) {
      for (const at of [0.2, 0.45, 0.7]) {
        await progress(at);
        await c.server.crashRestart(1_000);
        note('Postgres restarted (immediate)');
      }
    },
  },
  {
    name: 'terminate-backends',
    summary: 'pg_terminate_backend of every rowfleet connection, every second for eight seconds',
    async fault(c, { progress, note }) {
      await progress(0.2);
      let terminated = 0;
      for (let i = 0; i < 8; i++) {
        const { rows } = await c.admin.query<{ n: number }>(
          `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'rowfleet%'`,
        );
        terminated += rows[0]!.n;
        await delay(1_000);
      }
      note(`terminated ${terminated} connections`);
    },
  },
  {
    name: 'proxy-blackhole',
    summary: 'one worker cut off from Postgres (no resets, silence) for five leases, then healed',
    cluster: { proxy: 'worker' },
    workload: { dataFor: slow(150) },
    async fault(c, { progress, note }) {
      await progress(0.3);
      c.proxy!.blackhole();
      note('blackholed the proxied worker');
      const longest = await longestIdleInTransaction(c, delay(10_000));
      c.proxy!.heal();
      note(`longest idle in transaction during the partition: ${Math.round(longest)} ms`);
      // A transactional handler's session left open by the partition must not hold its records'
      // locks past its timeout (the worker's --timeout 5s, plus a second).
      if (longest > 6_500) throw new Error(`a session stayed idle in transaction for ${Math.round(longest)} ms, past its 6 s timeout`);
    },
  },
  {
    name: 'proxy-resets',
    summary: 'every connection of the fleet reset, five times',
    cluster: { proxy: 'fleet' },
    async fault(c, { progress, note }) {
      await progress(0.2);
      for (let i = 0; i < 5; i++) {
        c.proxy!.resetAll();
        await delay(1_500);
      }
      note(`reset ${c.proxy!.stats().reset} connections`);
    },
  },
  {
    name: 'proxy-latency',
    summary: '150 ms added to every packet between the fleet and Postgres for eight seconds',
    cluster: { proxy: 'fleet' },
    async fault(c, { progress }) {
      await progress(0.2);
      c.proxy!.setLatency(150);
      await longestIdleInTransaction(c, delay(8_000)).then((ms) => {
        if (ms > 6_500) throw new Error(`a session stayed idle in transaction for ${Math.round(ms)} ms`);
      });
      c.proxy!.heal();
    },
  },
  {
    name: 'contention',
    summary: 'a hot key, equal versions from different clients, one messageId sent by two clients at once',
    workload: { hot: 4, equalVersions: 0.3, duplicates: 0.2 },
  },
  {
    name: 'poison',
    summary: 'records that crash their worker process, then their requeue',
    cluster: { fleetArgs: ['--max-expirations', '1'] },
    poison: [recordId(5), recordId(55), recordId(105)],
    workload: { dataFor: (id) => ([recordId(5), recordId(55), recordId(105)].includes(id) ? { fault: 'crash' } : { sleepMs: 20 }) },
    async after(c) {
      // The poison records the workload wrote are FAILED; requeued, they crash again and are
      // FAILED again, alone; nothing else is harmed.
      const failedIds = async () => (await c.admin.query<{ id: string }>(`SELECT id FROM rowfleet.records WHERE status = 'FAILED' ORDER BY id`)).rows.map((r) => r.id).join(',');
      const before = await failedIds();
      if (before === '') return ['no poison record was written'];
      const requeue = c.procs.start(['requeue', ...before.split(',').flatMap((id) => ['--id', id])], { DATABASE_URL: c.roleUrl });
      const exit = await requeue.exited;
      if (exit.code !== 0) return [`rowfleet requeue exited ${exit.code}: ${requeue.tail(5)}`];
      await until(async () => {
        const { rows } = await c.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status IN ('COMPLETED', 'PROCESSING')`);
        return rows[0]!.n === 0 ? true : undefined;
      }, 120_000, 'the requeued poison records to settle');
      const after = await failedIds();
      return after === before ? [] : [`FAILED before the requeue: ${before}; after it: ${after}`];
    },
  },
  {
    name: 'hanging-handlers',
    summary: 'handlers that ignore their abort signal and never return (on their first attempt)',
    cluster: { fleetArgs: ['--timeout', '2s'] },
    workload: { dataFor: (_id, n) => (n % 25 === 7 ? { fault: 'hang' } : { sleepMs: 10 }) },
  },
  {
    name: 'two-schedulers',
    summary: 'two schedulers across tick boundaries, one killed -9 and started again',
    cluster: { schedulers: 2 },
    workload: { dataFor: (_id, n) => (n % 50 === 9 ? { fault: 'kill-after-claim' } : { sleepMs: 20 }) },
    async fault(c, { progress, note }) {
      await progress(0.4);
      process.kill(c.schedulers[0]!.pid, 'SIGKILL');
      note('killed a scheduler');
      await delay(1_000);
      c.schedulers[0] = await c.startScheduler();
    },
  },
  {
    name: 'sigterm',
    summary: 'SIGTERM to the fleet mid-job: it drains and exits 0; started again, it finishes the rest',
    workload: { dataFor: slow(300) },
    async fault(c, { progress, note }) {
      await progress(0.4);
      const exit = await c.fleet!.stop('SIGTERM', 30_000);
      note(`fleet exited ${exit.code ?? exit.signal}`);
      if (exit.code !== 0) throw new Error(`the fleet exited ${exit.code ?? exit.signal} on SIGTERM, not 0`);
      await c.startFleet();
    },
  },
  {
    name: 'connection-exhaustion',
    summary: 'Postgres with max_connections 20 and default pools: clear errors, nothing lost, recovery afterwards',
    async fault(c, { progress, note }) {
      await progress(0.2);
      await c.server.setting('max_connections', '20');
      await c.server.restart();
      note('max_connections 20');
      await delay(6_000);
      await c.server.setting('max_connections', '200', c.admin);
      await c.server.restart();
      note('max_connections 200 again');
    },
    async after(c) {
      // Said clearly: a line naming the cause, not a stack trace.
      const lines = c.allLines().filter((l) => /too many|connection slots|53300|remaining connection/i.test(l));
      return lines.length > 0 ? [] : ['no process said that Postgres had no connection left'];
    },
  },
];
