/**
 * `rowfleet fleet`: the autoscale decision and the restart backoff as pure functions, the option
 * checks in-process, and a real fleet: its workers register, a SIGKILLed one is replaced, the
 * fleet follows a backlog up and back down, and SIGTERM leaves nothing running or registered.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { decideScale, nextIdleStreak, workersNeeded, type BacklogSample, type ScaleLimits } from '../src/fleet/autoscale.ts';
import { restartDelayMs } from '../src/fleet/fleet.ts';
import { fleetSize } from '../src/fleet/run.ts';
import { UsageError } from '../src/errors.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { rowfleet } from './helpers/cli.ts';
import { CLI, isAlive, Processes, ROOT, type LogLine } from './helpers/processes.ts';
import { waitFor } from './helpers/wait.ts';

describe('decideScale', () => {
  const limits: ScaleLimits = { min: 1, max: 8, targetWaitMs: 5_000, idleSamples: 2, concurrency: 5 };
  const sample = (due: number, inFlight: number, handlerMs: number | null = null): BacklogSample => ({ due, inFlight, handlerMs, oldestDueAgeMs: due > 0 ? 1_000 : null });
  const decide = (count: number, s: BacklogSample, idleStreak = 0) => decideScale(count, s, idleStreak, limits);

  it('goes straight to what the backlog needs: 200 records of 15 s ask for every slot, so --max at once', () => {
    expect(decide(1, sample(195, 5))).toEqual({ from: 1, to: 8, reason: 'backlog', needed: 40 });
    expect(decide(1, sample(195, 5, 15_000))).toEqual({ from: 1, to: 8, reason: 'backlog', needed: 40 });
  });

  it('gives fast handlers only the slots that start every due record within the target', () => {
    // 10,000 due records of 10 ms: 20 slots start them all within 5 s, plus the 5 held.
    expect(workersNeeded(sample(10_000, 5, 10), limits)).toBe(5);
    expect(decide(2, sample(10_000, 5, 10))).toEqual({ from: 2, to: 5, reason: 'backlog', needed: 5 });
  });

  it('holds at max however large the backlog', () => {
    expect(decide(8, sample(100_000, 40))).toEqual({ from: 8, to: 8, reason: 'at-max', needed: 20_008 });
  });

  it('holds while it has what the sample needs', () => {
    expect(decide(2, sample(3, 7, 1_000))).toEqual({ from: 2, to: 2, reason: 'steady', needed: 2 });
  });

  it('shrinks to what is needed only after enough idle samples in a row, never below min', () => {
    expect(decide(4, sample(0, 6, 200), 0)).toEqual({ from: 4, to: 4, reason: 'steady', needed: 2 });
    expect(nextIdleStreak(4, sample(0, 6, 200), 0, limits)).toBe(1);
    expect(decide(4, sample(0, 6, 200), 1)).toEqual({ from: 4, to: 2, reason: 'idle', needed: 2 });
    expect(decide(1, sample(0, 0), 10)).toEqual({ from: 1, to: 1, reason: 'steady', needed: 0 });
    // Needing what it has ends an idle streak.
    expect(nextIdleStreak(2, sample(0, 10, 200), 5, limits)).toBe(0);
  });

  it('returns to the bounds first', () => {
    expect(decide(0, sample(0, 0))).toEqual({ from: 0, to: 1, reason: 'below-min', needed: 0 });
    expect(decide(10, sample(500, 40))).toEqual({ from: 10, to: 8, reason: 'above-max', needed: 108 });
  });

  it('scales from zero when min is 0, and back to zero', () => {
    const zero = { ...limits, min: 0 };
    expect(decideScale(0, sample(3, 0), 0, zero)).toEqual({ from: 0, to: 1, reason: 'backlog', needed: 1 });
    expect(decideScale(1, sample(0, 0, 50), 1, zero)).toEqual({ from: 1, to: 0, reason: 'idle', needed: 0 });
  });
});

describe('restartDelayMs', () => {
  it('doubles with each early death, up to the cap', () => {
    const policy = { baseMs: 500, capMs: 30_000 };
    expect([1, 2, 3, 4, 7, 8, 50].map((deaths) => restartDelayMs(deaths, policy))).toEqual([500, 1_000, 2_000, 4_000, 30_000, 30_000, 30_000]);
  });
});

describe('fleet options', () => {
  it('sizes a fixed fleet and an autoscaled one', () => {
    expect(fleetSize({ workers: 3 })).toMatchObject({ initial: 3, min: 3, max: 3 });
    expect(fleetSize({ min: 1, max: 5 })).toEqual({ initial: 1, min: 1, max: 5, scaleEveryMs: 5_000, targetWaitMs: 5_000 });
    expect(fleetSize({ min: 0, max: 5, workers: 2, scaleEvery: 1_000, targetWait: 0 })).toEqual({ initial: 2, min: 0, max: 5, scaleEveryMs: 1_000, targetWaitMs: 0 });
  });

  it.each([
    [['--min', '5', '--max', '2'], '--min (5) must not exceed --max (2)'],
    [['--min', '1'], 'autoscaling needs both --min and --max (got only --min)'],
    [['--max', '3'], 'autoscaling needs both --min and --max (got only --max)'],
    [['--min', '2', '--max', '4', '--workers', '5'], '--workers (5) must be between --min (2) and --max (4)'],
    [['--workers', '0'], '--workers must be at least 1 without autoscaling (--min 0 --max N scales to zero)'],
    [['--workers', '2', '--target-wait', '3s'], '--target-wait only applies when autoscaling; add --min and --max'],
    [['--workers', 'many'], '--workers must be a whole number, got "many"'],
    [['--workers', '1000'], '--workers must be between 0 and 256, got 1000'],
    [['--scale-every', '10ms', '--min', '1', '--max', '2'], '--scale-every must be at least 100 ms, got "10ms"'],
    [['--lease', 'soon'], '--lease must be a duration with a unit (ms, s, m, h or d) like 500ms, 30s, 5m or 1h, got "soon"'],
  ])('refuses %j: %s', async (args, message) => {
    // No database is touched: the options are refused first.
    const run = await rowfleet({ DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' }, 'fleet', ...args);
    expect(run.error).toBeInstanceOf(UsageError);
    expect((run.error as Error).message).toBe(message);
  });

  it('exits 2 with one line from the binary', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'fleet', '--min', '3', '--max', '1'], {
      env: { ...process.env, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual(['rowfleet: --min (3) must not exceed --max (1)']);
  });
});

describe('a fleet of worker processes', () => {
  let db: TestDatabase;
  const procs = new Processes();
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await procs.killAll();
    await db?.drop();
  });

  const registered = async (): Promise<number[]> => {
    const { rows } = await db.pool.query<{ pid: number }>('SELECT pid FROM rowfleet.workers ORDER BY pid');
    return rows.map((r) => r.pid);
  };
  const sameSet = (a: number[], b: number[]) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);

  it('runs N workers, replaces one killed with SIGKILL, and stops them all on SIGTERM', async () => {
    const fleet = procs.start(['fleet', '--workers', '2', '--handler', 'noop', '--poll', '200ms'], { DATABASE_URL: db.url });
    const first = await waitFor(async () => {
      const pids = procs.fleetWorkers;
      return pids.length === 2 && sameSet(await registered(), pids) ? pids : undefined;
    }, 60_000, 'two registered workers');

    const victim = first[0]!;
    process.kill(victim, 'SIGKILL');
    procs.forget(victim);
    const death = await fleet.waitForLog((l) => l.msg === 'worker process exited unexpectedly; restarting' && l.workerPid === victim, 30_000, 'the fleet to notice the kill');
    expect(death).toMatchObject({ level: 40, code: null, signal: 'SIGKILL', slot: expect.any(Number), restartInMs: expect.any(Number) });

    // The replacement registers; the dead worker's row is removed by the fleet.
    const second = await waitFor(async () => {
      const pids = procs.fleetWorkers;
      return pids.length === 2 && !pids.includes(victim) && sameSet(await registered(), pids) ? pids : undefined;
    }, 60_000, 'a replacement worker, registered, and the dead one forgotten');
    expect(second).toContain(first[1]);

    const exit = await fleet.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await registered()).toEqual([]);
    for (const pid of [...first, ...second]) expect(isAlive(pid), `worker ${pid} still running`).toBe(false);
    const stopped = fleet.logs.filter((l) => l.msg === 'worker stopped');
    expect(stopped).toHaveLength(2);
    expect(fleet.logs.find((l) => l.msg === 'fleet stopped')).toMatchObject({ restarts: 1 });
  });

  it('leaves no orphans: when the fleet is killed with SIGKILL, its workers drain and exit', async () => {
    const fleet = procs.start(['fleet', '--workers', '2', '--handler', 'noop', '--poll', '200ms'], { DATABASE_URL: db.url });
    const workers = await waitFor(async () => {
      const pids = procs.fleetWorkers;
      return pids.length === 2 && sameSet(await registered(), pids) ? pids : undefined;
    }, 60_000, 'two registered workers');
    expect(await fleet.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    await waitFor(() => workers.every((pid) => !isAlive(pid)), 30_000, 'the orphaned workers to exit');
    for (const pid of workers) procs.forget(pid);
    // They exited through their drain, saying goodbye.
    expect(await registered()).toEqual([]);
  });

  it('started through npm, winds down when npm exits without passing the SIGTERM on', async () => {
    // `sh` stands in for npm: it starts the fleet, and is killed as npm exits on SIGTERM.
    const npm = spawn('sh', ['-c', '"$0" --import tsx "$1" fleet --workers 2 --handler noop --poll 200ms & echo $!; wait', process.execPath, CLI], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'warn', npm_command: 'exec' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const fleetPid = Number((await once(createInterface({ input: npm.stdout! }), 'line'))[0]);
    let workers: number[] = [];
    try {
      workers = await waitFor(async () => {
        const pids = await registered();
        return pids.length === 2 ? pids : undefined;
      }, 60_000, 'two registered workers');
      npm.kill('SIGKILL');
      await waitFor(() => !isAlive(fleetPid) && workers.every((pid) => !isAlive(pid)), 30_000, 'the fleet and its workers to exit');
      // They drained and said goodbye, rather than being killed.
      expect(await registered()).toEqual([]);
    } finally {
      for (const pid of [fleetPid, ...workers]) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('writes one readable line per event, its workers\' too, when its format is pretty (a terminal)', async () => {
    const fleet = spawn(process.execPath, ['--import', 'tsx', CLI, 'fleet', '--workers', '1', '--handler', 'noop', '--poll', '200ms'], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'info', ROWFLEET_LOG_FORMAT: 'pretty', NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const lines: string[] = [];
    const workerStarted = new Promise<void>((resolve) =>
      createInterface({ input: fleet.stderr! }).on('line', (line) => {
        lines.push(line);
        if (line.includes('(worker): worker started')) resolve();
      }),
    );
    const exited = once(fleet, 'exit');
    try {
      await Promise.race([workerStarted, exited.then(() => Promise.reject(new Error(`the fleet exited early:\n${lines.join('\n')}`)))]);
      fleet.kill('SIGTERM');
      expect((await exited)[0]).toBe(0);
    } finally {
      if (fleet.exitCode === null) fleet.kill('SIGKILL');
    }
    const event = /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN) \((fleet|worker)\): \S/;
    expect(lines.filter((line) => !event.test(line))).toEqual([]);
    expect(lines.some((line) => line.includes('(fleet): fleet stopped'))).toBe(true);
  });

  it('one-shot commands print their result and nothing more on a terminal', async () => {
    for (const args of [['enqueue'], ['requeue', '--all'], ['replay', '--dry-run']]) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
        cwd: ROOT,
        env: { ...process.env, DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'info', ROWFLEET_LOG_FORMAT: 'pretty', NO_COLOR: '1' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toBe('');
    }
  });

  it('grows to what the backlog needs at once and shrinks back when idle, logging each decision with its inputs', async () => {
    // 24 records of 400 ms with 2 handlers per worker: at the first sample the backlog asks for
    // more than the max of 3 workers, so the fleet goes to 3 in one step.
    await db.pool.query(
      `SELECT * FROM rowfleet.upsert_messages(
         array(SELECT 'scale-' || g FROM generate_series(1, 24) g),
         (SELECT jsonb_agg(jsonb_build_object('sleepMs', 400)) FROM generate_series(1, 24)),
         array_fill(NULL::bigint, ARRAY[24]), array_fill(NULL::text, ARRAY[24]))`,
    );
    const fleet = procs.start(
      ['fleet', '--min', '1', '--max', '3', '--scale-every', '500ms', '--target-wait', '300ms', '--handler', 'sleep', '--concurrency', '2', '--poll', '200ms'],
      { DATABASE_URL: db.url },
    );
    const isScale = (l: LogLine) => l.msg === 'fleet grows' || l.msg === 'fleet shrinks';
    await fleet.waitForLog((l) => l.msg === 'fleet grows' && l.to === 3, 60_000, 'the fleet to grow to 3');
    await waitFor(async () => {
      const { rows } = await db.pool.query(`SELECT 1 FROM rowfleet.records WHERE id LIKE 'scale-%' AND status <> 'PROCESSED'`);
      return rows.length === 0;
    }, 60_000, 'every record processed');
    await fleet.waitForLog((l) => l.msg === 'fleet shrinks' && l.to === 1, 60_000, 'the fleet to shrink back to 1');
    await waitFor(() => fleet.logs.filter((l) => l.msg === 'worker process stopped').length === 2, 60_000, 'the two retired workers to exit');

    const decisions = fleet.logs.filter(isScale).map((l) => `${l.from}->${l.to} ${l.reason}`);
    expect(decisions).toEqual(['1->3 backlog', '3->1 idle']);
    const grow = fleet.logs.find((l) => l.msg === 'fleet grows')!;
    expect(grow).toMatchObject({ due: expect.any(Number), inFlight: expect.any(Number), needed: expect.any(Number) });
    expect((grow.due as number) + (grow.inFlight as number)).toBe(24);
    expect(grow.needed).toBeGreaterThan(3);
    // Idle: nothing due, and at most what one worker holds (on a busy machine the last records may
    // still run across two samples; it shrinks to what they need, never below --min).
    const shrink = fleet.logs.find((l) => l.msg === 'fleet shrinks')!;
    expect(shrink).toMatchObject({ due: 0, to: 1 });
    expect(shrink.needed).toBeLessThanOrEqual(1);
    expect(shrink.inFlight).toBeLessThanOrEqual(2);
    // Measured by the workers and reported with their heartbeats (null until the first one).
    expect(shrink.handlerMs === null || (shrink.handlerMs as number) >= 400).toBe(true);
    // Shrinking is a drain, not a kill: those workers stopped cleanly.
    expect(fleet.logs.filter((l) => l.msg === 'worker process stopped')).toHaveLength(2);
    expect(fleet.logs.filter((l) => l.msg === 'worker process stopped').every((l) => l.code === 0)).toBe(true);

    expect(await fleet.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await registered()).toEqual([]);
  });
});
