/**
 * A fleet: one parent process supervising N `rowfleet worker` processes on this machine.
 *
 * Each worker is a process of its own (its own pool, event loop and crash), started as the
 * Procfile's `worker` line would start it. The parent does three things and nothing else:
 * - restarts a worker that dies without being asked to, after a backoff that doubles while the
 *   worker keeps dying young (a worker that cannot start must not spin);
 * - with min < max, samples the backlog at start and every interval and sizes itself to it
 *   (autoscale.ts);
 * - on shutdown, sends SIGTERM to every worker, which drains (handlers finish within their grace,
 *   the rest are released), and SIGKILLs those still running after the grace plus a margin.
 *
 * The records a dead worker held are not the fleet's business: their leases expire and any
 * worker's rescue returns them, exactly as when a worker dies on another machine.
 *
 * Workers run in their own process group (detached): a Ctrl-C in a terminal reaches the whole
 * foreground group, and a worker that got SIGINT from the terminal and then SIGTERM from the fleet
 * would take the second signal as "exit now" and skip its drain.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { createInterface } from 'node:readline';
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { UserError } from '../errors.ts';
import { unregisterProcess } from '../worker/registry.ts';
import { decideScale, nextIdleStreak, type BacklogSample, type ScaleLimits } from './autoscale.ts';
import { sampleBacklog } from '../records/backlog.ts';
import { isMetricsRequest, type MetricsReply, type MetricsRequest } from '../worker/run.ts';

/** How to start one worker process. */
export interface WorkerProcessSpec {
  command: string;
  args: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  cwd?: string;
}

export interface RestartPolicy {
  /** Delay before the first restart; doubles with each further early death. */
  baseMs: number;
  capMs: number;
  /** A worker that ran this long before dying counts as healthy: the backoff starts over. */
  stableMs: number;
}

export interface FleetOptions {
  worker: WorkerProcessSpec;
  /** Workers to start with. */
  initial: number;
  /** Autoscaling bounds; min === max (=== initial) is a fixed-size fleet. */
  min: number;
  max: number;
  scaleEveryMs: number;
  targetWaitMs: number;
  /** Samples in a row that need fewer workers before shrinking. */
  idleSamples: number;
  /** Each worker's --concurrency: how many handler slots a worker adds. */
  concurrency: number;
  /** The workers' --kinds: the backlog counted is theirs (every kind when undefined). */
  kinds?: readonly string[] | undefined;
  /** A small pool: backlog samples, and forgetting the registrations of workers that died. */
  pool: pg.Pool;
  log: Logger;
  /** Where the workers' stdout and stderr go, line by line (they are JSON log lines already). */
  output: { write(text: string): unknown };
  /** How long a stopping worker may take before SIGKILL: its grace plus time to release and disconnect. */
  stopTimeoutMs: number;
  restart?: RestartPolicy;
}

export const DEFAULT_RESTART: RestartPolicy = { baseMs: 500, capMs: 30_000, stableMs: 30_000 };

/** The delay before restarting a worker that died `deaths` times in a row without running `stableMs`. */
export function restartDelayMs(deaths: number, policy: Pick<RestartPolicy, 'baseMs' | 'capMs'>): number {
  return Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, deaths - 1));
}

interface Member {
  /** Stable name in the logs: slot 0..n-1, reused across restarts. */
  slot: number;
  child: ChildProcess | undefined;
  startedAt: number;
  /** Early deaths in a row. */
  deaths: number;
  restartTimer: NodeJS.Timeout | undefined;
  /** Asked to stop (shrink or shutdown): its exit is expected and it is not restarted. */
  retiring: boolean;
  exited: Promise<void>;
}

export interface FleetStats {
  started: number;
  restarts: number;
  grown: number;
  shrunk: number;
}

export class Fleet {
  readonly stats: FleetStats = { started: 0, restarts: 0, grown: 0, shrunk: 0 };
  readonly #o: FleetOptions;
  readonly #log: Logger;
  readonly #restart: RestartPolicy;
  readonly #members: Member[] = [];
  #stopping = false;
  #fatal: Error | undefined;
  #onFatal: (() => void) | undefined;
  #idleStreak = 0;
  #sampling = false;
  /** Metrics asked of the workers (workerMetrics), by request id: what each answered. */
  #metricsAsked = 0;
  readonly #metricsReplies = new Map<number, (reply: MetricsReply) => void>();

  constructor(options: FleetOptions) {
    this.#o = options;
    this.#log = options.log;
    this.#restart = options.restart ?? DEFAULT_RESTART;
  }

  /** Workers counted by autoscaling: running or waiting to be restarted, not retiring. */
  get size(): number {
    return this.#members.filter((m) => !m.retiring).length;
  }

  /** Pids of the worker processes running now. */
  get pids(): number[] {
    return this.#members.flatMap((m) => (m.child?.pid !== undefined && m.child.exitCode === null && m.child.signalCode === null ? [m.child.pid] : []));
  }

  /**
   * Each running worker's metrics (prom-client's getMetricsAsJSON), asked over the IPC channel of
   * workers started with the fleet's metrics on; a worker that does not answer within `timeoutMs`
   * (starting, stopping, busy) is left out of this scrape.
   */
  async workerMetrics(timeoutMs: number): Promise<unknown[][]> {
    const id = ++this.#metricsAsked;
    const children = this.#members.flatMap((m) => (m.child?.connected === true ? [m.child] : []));
    const replies: unknown[][] = [];
    await new Promise<void>((resolve) => {
      let waiting = children.length;
      const timer = setTimeout(done, timeoutMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      if (waiting === 0) return done();
      this.#metricsReplies.set(id, (reply) => {
        replies.push(reply.metrics);
        if (--waiting === 0) done();
      });
      for (const child of children) child.send({ rowfleet: 'metrics', id } satisfies MetricsRequest, (err) => err !== null && err !== undefined && --waiting === 0 && done());
    });
    this.#metricsReplies.delete(id);
    return replies;
  }

  /** Runs until `signal` aborts, then stops every worker. Throws if a worker reports a usage error. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    const autoscale = o.min < o.max;
    // If this process exits without stopping its workers (an uncaught error, a second Ctrl-C),
    // they must not run on unsupervised: the ones not yet told to stop are told now.
    const onExit = () => {
      for (const m of this.#members) if (!m.retiring) m.child?.kill('SIGTERM');
    };
    process.on('exit', onExit);
    this.#log.info({ workers: o.initial, min: o.min, max: o.max, autoscale, ...(autoscale && { scaleEveryMs: o.scaleEveryMs, targetWaitMs: o.targetWaitMs }) }, 'fleet started');
    for (let i = 0; i < o.initial; i++) this.#add();
    // The first sample at once: a backlog waiting at startup should not wait a whole interval.
    if (autoscale) void this.#scale();
    const scaler = autoscale ? setInterval(() => void this.#scale(), o.scaleEveryMs) : undefined;
    try {
      await new Promise<void>((resolve) => {
        if (signal.aborted) return resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
        this.#onFatal = resolve;
      });
    } finally {
      clearInterval(scaler);
      await this.#stopAll();
      process.off('exit', onExit);
      this.#log.info({ ...this.stats }, 'fleet stopped');
    }
    if (this.#fatal !== undefined) throw this.#fatal;
  }

  #add(): void {
    const member: Member = { slot: this.#freeSlot(), child: undefined, startedAt: 0, deaths: 0, restartTimer: undefined, retiring: false, exited: Promise.resolve() };
    this.#members.push(member);
    this.#spawn(member);
  }

  #freeSlot(): number {
    const used = new Set(this.#members.map((m) => m.slot));
    let slot = 0;
    while (used.has(slot)) slot++;
    return slot;
  }

  #spawn(member: Member): void {
    const { worker } = this.#o;
    const child = spawn(worker.command, [...worker.args], {
      cwd: worker.cwd,
      env: worker.env,
      // The IPC channel closes when the fleet dies, even by SIGKILL: the worker then drains and
      // exits (src/cli/main.ts) instead of running on as an orphan.
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: true,
    });
    member.child = child;
    child.on('message', (message: unknown) => {
      if (isMetricsRequest(message)) this.#metricsReplies.get(message.id)?.(message as MetricsReply);
    });
    member.startedAt = Date.now();
    this.stats.started += 1;
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => this.#o.output.write(`${line}\n`));
    }
    member.exited = new Promise((resolve) => {
      let done = false;
      const ended = (code: number | null, signal: NodeJS.Signals | null) => {
        if (done) return;
        done = true;
        this.#onExit(member, child, code, signal);
        resolve();
      };
      child.once('exit', ended);
      // Spawning itself failed (no pid, no exit event): treat it as a death, so it backs off.
      child.once('error', (err) => {
        this.#log.error({ slot: member.slot, err: { message: err.message } }, 'could not start a worker process');
        if (child.pid === undefined) ended(null, null);
      });
    });
    if (child.pid !== undefined) this.#log.info({ slot: member.slot, workerPid: child.pid }, 'worker process started');
  }

  #onExit(member: Member, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const pid = child.pid;
    const clean = code === 0 && signal === null;
    // A worker that exits cleanly has unregistered itself; one that was killed cannot have.
    if (!clean && pid !== undefined) void this.#forget(pid);
    if (member.retiring || this.#stopping) {
      this.#log.info({ slot: member.slot, workerPid: pid, code, signal }, 'worker process stopped');
      this.#members.splice(this.#members.indexOf(member), 1);
      return;
    }
    if (code === 2) {
      // A usage error (bad flag, handler module that does not load) is not fixed by restarting.
      this.#log.error({ slot: member.slot, workerPid: pid, code }, 'worker process exited with a usage error; stopping the fleet');
      this.#fatal ??= new UserError(`a worker process (pid ${pid}) exited with a usage error (code 2); see its message above`, 2);
      this.#onFatal?.();
      this.#members.splice(this.#members.indexOf(member), 1);
      return;
    }
    const livedMs = Date.now() - member.startedAt;
    member.deaths = livedMs >= this.#restart.stableMs ? 1 : member.deaths + 1;
    const restartInMs = restartDelayMs(member.deaths, this.#restart);
    this.#log.warn({ slot: member.slot, workerPid: pid, code, signal, livedMs, restartInMs }, 'worker process exited unexpectedly; restarting');
    member.child = undefined;
    member.restartTimer = setTimeout(() => {
      member.restartTimer = undefined;
      if (this.#stopping || member.retiring) return;
      this.stats.restarts += 1;
      this.#spawn(member);
    }, restartInMs);
  }

  /** Removes a dead worker's row from rowfleet.workers (it could not say goodbye). */
  async #forget(pid: number): Promise<void> {
    try {
      await unregisterProcess(this.#o.pool, os.hostname(), pid);
    } catch (err) {
      this.#log.warn({ workerPid: pid, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'could not remove a dead worker\'s registration');
    }
  }

  async #scale(): Promise<void> {
    if (this.#sampling || this.#stopping) return;
    this.#sampling = true;
    try {
      const o = this.#o;
      const limits: ScaleLimits = { min: o.min, max: o.max, targetWaitMs: o.targetWaitMs, idleSamples: o.idleSamples, concurrency: o.concurrency };
      let sample: BacklogSample;
      try {
        // Counting past what --max workers could start within the target says nothing more.
        sample = await sampleBacklog(o.pool, this.pids, Math.max(1_000, o.max * o.concurrency * 100), o.kinds);
      } catch (err) {
        this.#log.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'backlog sample failed; holding the fleet at its size');
        return;
      }
      if (this.#stopping) return;
      const count = this.size;
      const decision = decideScale(count, sample, this.#idleStreak, limits);
      this.#idleStreak = nextIdleStreak(count, sample, this.#idleStreak, limits);
      const fields = {
        ...decision,
        due: sample.due,
        oldestDueAgeSeconds: sample.oldestDueAgeMs === null ? null : Math.round(sample.oldestDueAgeMs / 100) / 10,
        inFlight: sample.inFlight,
        handlerMs: sample.handlerMs === null ? null : Math.round(sample.handlerMs),
        idleStreak: this.#idleStreak,
      };
      if (decision.to === decision.from) {
        this.#log.debug(fields, 'fleet holds');
        return;
      }
      this.#log.info(fields, decision.to > decision.from ? 'fleet grows' : 'fleet shrinks');
      this.#idleStreak = 0;
      for (let n = count; n < decision.to; n++) {
        this.stats.grown += 1;
        this.#add();
      }
      for (let n = count; n > decision.to; n--) {
        this.stats.shrunk += 1;
        this.#retireNewest();
      }
    } finally {
      this.#sampling = false;
    }
  }

  /** Shrinking: one waiting to be restarted goes first, else the newest running worker drains and exits. */
  #retireNewest(): void {
    const active = this.#members.filter((m) => !m.retiring);
    const member = active.find((m) => m.child === undefined) ?? active.toSorted((a, b) => b.startedAt - a.startedAt)[0];
    if (member === undefined) return;
    member.retiring = true;
    if (member.child === undefined) {
      clearTimeout(member.restartTimer);
      this.#members.splice(this.#members.indexOf(member), 1);
      return;
    }
    member.child.kill('SIGTERM');
  }

  async #stopAll(): Promise<void> {
    this.#stopping = true;
    for (const m of this.#members) clearTimeout(m.restartTimer);
    const running = this.#members.filter((m) => m.child !== undefined);
    this.#log.info({ workers: running.length, timeoutMs: this.#o.stopTimeoutMs }, 'stopping workers');
    for (const m of running) {
      m.retiring = true;
      m.child?.kill('SIGTERM');
    }
    const all = Promise.all(running.map((m) => m.exited));
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([all.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.#o.stopTimeoutMs)))]);
    clearTimeout(timer);
    if (!inTime) {
      for (const m of this.#members) {
        if (m.child === undefined || m.child.exitCode !== null || m.child.signalCode !== null) continue;
        this.#log.error({ slot: m.slot, workerPid: m.child.pid, timeoutMs: this.#o.stopTimeoutMs }, 'worker process did not stop in time; killing it');
        m.child.kill('SIGKILL');
      }
      await all;
    }
    this.#members.length = 0;
  }
}
