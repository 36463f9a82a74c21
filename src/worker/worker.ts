/**
 * The worker loop, top to bottom:
 *
 *   1. claim as many due records as there are free slots (the engine's one statement);
 *   2. run each handler under its lease (execution.ts), heartbeats extending the leases (heartbeat.ts);
 *   3. write each outcome with a versioned compare-and-set (settlement.ts); in mode every the
 *      completion may hand the record's next message straight back, which runs at once (step 2);
 *   4. when the claim came back short, sleep until woken: a producer's NOTIFY (see
 *      src/records/wake.ts), a finished handler, a retry falling due, or the poll interval.
 *
 * Expired leases of any worker are rescued on a timer (rescue.ts). A record whose lease expired
 * too often (a suspect: it may kill its process) is taken alone, by a worker that first lets
 * what it holds finish, so that only a record that kills a process holding nothing else is
 * FAILED as poison. Each handler is aborted at its lease's local deadline, without waiting for a
 * heartbeat to find the lease gone. Infrastructure failures
 * (connection lost, Postgres restarting, a deadlock) are logged and retried with backoff, never
 * thrown out of the loop; handler failures are recorded on the record.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { listen } from '../db/listen.ts';
import { claimAlone, suspectsWaiting, type Claimed } from '../records/claim.ts';
import { awaitWork, DUE_CHANNEL } from '../records/wake.ts';
import { handlerFor, kindPolicy, servedKinds, type KindPolicy, type LoadedHandler } from './handler.ts';
import type { KindShare } from '../records/claim.ts';
import { keyOf } from '../records/key.ts';
import { readKindSettings, type KindSettings } from '../records/kinds.ts';
import type { Engine } from './engine.ts';
import { Execution, HandlerTimeoutError, ShutdownError, runHandler } from './execution.ts';
import { heartbeat } from './heartbeat.ts';
import { retrying } from './infrastructure.ts';
import { heartbeatEveryMs } from './policy.ts';
import { registerWorker, unregisterWorker } from './registry.ts';
import { rescue } from './rescue.ts';
import { Settlement, type WorkerStats } from './settlement.ts';
import { Wakeup } from './wakeup.ts';
import { systemClock, type Clock, type Timer } from './clock.ts';
import type { WorkerMetrics } from './metrics.ts';

export type { WorkerStats } from './settlement.ts';

/** How often a worker re-reads the kinds' stored settings (`rowfleet kinds set`). */
const SETTINGS_EVERY_MS = 5_000;
/**
 * Mode every: the most messages of one record a worker goes through in a row, each handed back by
 * the completion of the one before (see drizzle/0013_every_chain.sql), before the record goes back
 * in line for a claim, so that records with long backlogs do not keep the slots from the others.
 */
export const CHAIN_LIMIT = 100;

export interface WorkerOptions {
  pool: pg.Pool;
  /** Where notifications are listened for (a dedicated connection). */
  databaseUrl: string;
  engine: Engine;
  handler: LoadedHandler;
  /** Only these kinds (`--kinds`); undefined: every kind the handler has a handler for. */
  kinds?: readonly string[] | undefined;
  log: Logger;
  /** Handlers running at once, all kinds together (a kind's own concurrency is a part of it). */
  concurrency: number;
  /** Most records claimed in one statement. */
  batch: number;
  leaseMs: number;
  /** A handler running longer is aborted, and the attempt counts as failed. */
  timeoutMs: number;
  maxAttempts: number;
  backoff: { baseMs: number; capMs: number };
  /** Lease expirations after which a record runs alone, and is poison (FAILED) if it expires so. */
  maxExpirations: number;
  /** Claim at least this often when no notification arrives. */
  pollMs: number;
  rescueEveryMs: number;
  /** On shutdown, how long in-flight handlers may take to finish before their records are released. */
  graceMs: number;
  id?: string;
  random?: () => number;
  /** The clock of its statements and timers (tests pass a ManualClock and move it); the system's by default. */
  clock?: Clock;
  /** Counts claims, outcomes and timings by kind (served on --metrics-port, or to the fleet). */
  metrics?: WorkerMetrics | undefined;
}

export class Worker {
  readonly id: string;
  readonly stats: WorkerStats = { processed: 0, superseded: 0, retried: 0, failed: 0, lost: 0, released: 0, rescued: 0, chained: 0 };
  readonly #o: WorkerOptions;
  readonly #log: Logger;
  /** By keyOf(record). */
  readonly #active = new Map<string, Execution>();
  /** Handlers running per kind, for the kinds' own concurrency. */
  readonly #activeByKind = new Map<string, number>();
  /**
   * Handlers running (the slots of --concurrency). A record whose handler has finished stays in
   * #active until its outcome is written, but holds no slot: the next claim then overlaps that
   * completion's commit instead of waiting for it.
   */
  #running = 0;
  /** The kinds this worker claims; undefined: every kind (one handler for all). */
  readonly #kinds: readonly string[] | undefined;
  readonly #policies = new Map<string, KindPolicy>();
  /** What `rowfleet kinds set` stored, re-read every SETTINGS_EVERY_MS: it wins over the map and the flags. */
  #settings = new Map<string, KindSettings>();
  #beat: Timer | undefined;
  #beatEveryMs = 0;
  /** Which kind is offered its share of a claim first; turns with every claim. */
  #turn = 0;
  readonly #clock: Clock;
  readonly #wakeup: Wakeup;
  readonly #settlement: Settlement;
  /** Our flag in rowfleet.workers is up: a producer will notify. Down again once a notification arrives. */
  #flagged = false;
  /** Notifications received so far (one may clear the flag while it is being raised). */
  #notifications = 0;
  /** Wake-ups at the due times of the retries this worker scheduled. */
  readonly #retryTimers = new Set<Timer>();
  /** Mean handler duration, for autoscaling (exponentially weighted). */
  #handlerMs: number | null = null;
  /** Shutting down: completions hand no next message back. */
  #stopping = false;
  /** A suspect waits (see claimAlone): hold nothing else, and take suspects one at a time until none is left. */
  #suspects = false;
  /** Fires at the earliest local lease deadline of the handlers running. */
  #leaseTimer: Timer | undefined;
  #leaseTimerAt = Infinity;

  constructor(options: WorkerOptions) {
    this.#o = options;
    this.id = options.id ?? `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.#log = options.log.child({ worker: this.id });
    this.#clock = options.clock ?? systemClock;
    this.#wakeup = new Wakeup(this.#clock);
    this.#kinds = servedKinds(options.handler, options.kinds);
    const now = () => this.#clock.statementTime();
    this.#settlement = new Settlement({
      pool: options.pool,
      random: options.random,
      now,
      stats: this.stats,
      metrics: options.metrics,
      monotonic: () => this.#clock.monotonic(),
      debug: this.#log.isLevelEnabled('debug'),
      retrying: (what, fn) => this.#retrying(what, fn),
      dueAgain: (execution, delayMs) => this.#dueAgain(execution.claimed, delayMs),
      chainLeaseMs: (execution) => (this.#stopping || execution.chain + 1 >= CHAIN_LIMIT ? null : this.#policy(execution.claimed.kind).leaseMs),
      chained: (execution, next) => this.#start(next, execution.chain + 1),
      log: (execution) => this.#recordLog(execution.claimed),
    });
  }

  /** Records held right now. */
  get inFlight(): number {
    return this.#active.size;
  }

  /** Runs until `signal` aborts, then drains: in-flight handlers finish or are released. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    await this.#retrying('register', () => registerWorker(o.pool, { id: this.id, engine: o.engine.name, concurrency: o.concurrency }), signal);
    this.#log.info(
      { engine: o.engine.name, handler: o.handler.name, kinds: this.#kinds ?? 'all', concurrency: o.concurrency, batch: o.batch, leaseMs: o.leaseMs },
      'worker started',
    );
    // A notification means our flag was cleared; so does a (re)connect, after which work may have arrived unseen.
    const woken = () => {
      this.#flagged = false;
      this.#notifications += 1;
      this.#wakeup.poke();
    };
    const listener = listen(o.databaseUrl, DUE_CHANNEL, woken, this.#log);
    const clock = this.#clock;
    await this.#readSettings();
    this.#armHeartbeat();
    const settings = clock.setInterval(() => void this.#readSettings(), SETTINGS_EVERY_MS);
    // One check of every handler's timeout, a quarter of it apart, rather than a timer per record.
    const timeouts = clock.setInterval(() => this.#expire(), Math.max(5, Math.min(1_000, o.timeoutMs / 4)));
    const rescuer = clock.setInterval(() => void this.#rescue(), o.rescueEveryMs);
    try {
      await this.#loop(signal);
    } finally {
      if (this.#beat !== undefined) clock.clear(this.#beat);
      if (this.#leaseTimer !== undefined) clock.clear(this.#leaseTimer);
      clock.clear(settings);
      clock.clear(timeouts);
      clock.clear(rescuer);
      for (const timer of this.#retryTimers) clock.clear(timer);
      await listener.close();
      await this.#drain();
      await unregisterWorker(o.pool, this.id).catch((err) => this.#warn(err, 'could not unregister'));
      this.#log.info({ ...this.stats }, 'worker stopped');
    }
  }

  async #loop(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    const onAbort = () => {
      this.#stopping = true;
      this.#wakeup.poke();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    let failures = 0;
    try {
      while (!signal.aborted) {
        // 0. A suspect waits: let what is held finish, then take suspects alone, one at a time.
        if (this.#suspects) {
          if (this.#active.size === 0) {
            let suspect: Claimed | undefined;
            try {
              suspect = await claimAlone(o.pool, { owner: this.id, kinds: this.#aloneKinds(), leaseMs: o.leaseMs, maxExpirations: o.maxExpirations, now: this.#clock.statementTime() });
            } catch (err) {
              this.#warn(err, 'claim failed; retrying');
              await this.#wakeup.sleep(1_000, signal);
              continue;
            }
            if (suspect === undefined) this.#suspects = false;
            else {
              this.#claimed([suspect]);
              this.#recordLog(suspect).info({ maxExpirations: o.maxExpirations }, 'claimed alone: its lease expired too often; nothing else runs in this process until it is settled');
              this.#start(suspect, 0);
            }
            continue;
          }
          await this.#wakeup.wait(o.pollMs, signal);
          continue;
        }
        // 1. Claim what fits.
        // A worker whose every kind is at its own concurrency claims nothing, as a full one.
        const size = this.#claimSize();
        const shares = size > 0 ? this.#shares(size) : undefined;
        const want = shares === null ? 0 : size;
        let claimed: Claimed[] = [];
        if (want > 0) {
          try {
            claimed = await o.engine.claim(want, {
              owner: this.id, leaseMs: o.leaseMs, kinds: shares ?? undefined, turn: this.#turn++, maxExpirations: o.maxExpirations, now: this.#clock.statementTime(),
            });
            failures = 0;
          } catch (err) {
            failures += 1;
            this.#warn(err, 'claim failed; retrying');
            await this.#wakeup.sleep(Math.min(10_000, 100 * 2 ** failures), signal);
            continue;
          }
          this.#claimed(claimed);
          // 2. and 3. Run each handler under its lease, then settle its outcome.
          for (const record of claimed) this.#start(record, 0);
          // A full claim suggests more is due: claim again at once.
          if (claimed.length === want) continue;
        }
        // 4. Sleep until woken. Raise the flag first, and claim once more after it is committed,
        //    so that a record committed meanwhile is either seen by that claim or notified.
        if (want > 0 && !this.#flagged) {
          const before = this.#notifications;
          const raised = await awaitWork(o.pool, this.id).then(
            () => true,
            (err) => (this.#warn(err, 'could not ask to be woken; polling'), false),
          );
          // A notification that arrived meanwhile may have cleared the flag just raised: raise it again.
          this.#flagged = raised && this.#notifications === before;
          if (raised) continue;
        }
        if ((await this.#wakeup.wait(o.pollMs, signal)) === 'timeout') this.#flagged = false;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * How many records to claim now. Slots free up one completion at a time; claiming each alone
   * would cost a statement per record (measured: 250 transactions per 1,000 records at batch 10
   * and 5x the Postgres CPU per record of batch 100), so wait until half a batch is free.
   */
  #claimSize(): number {
    const { concurrency, batch } = this.#o;
    // Records waiting for their completion's commit hold no slot, but at most `concurrency` of them
    // are held: a slow database then slows the claims instead of letting a worker hoard records.
    const free = Math.max(0, Math.min(concurrency - this.#running, 2 * concurrency - this.#active.size));
    const enough = Math.ceil(Math.min(concurrency, batch) / 2);
    return free >= enough || this.#running === 0 ? Math.min(free, batch) : 0;
  }

  /**
   * What each kind may take of a claim of `want`: its free slots under its own concurrency.
   * Undefined: every kind, no caps (one handler for all, no kind settings); null: every kind this
   * worker serves is at its concurrency.
   */
  #shares(want: number): KindShare[] | undefined | null {
    if (this.#kinds === undefined) return undefined;
    const shares: KindShare[] = [];
    for (const kind of this.#kinds) {
      const policy = this.#policy(kind);
      const free = policy.concurrency === undefined ? want : Math.min(want, policy.concurrency - (this.#activeByKind.get(kind) ?? 0));
      if (free > 0) shares.push({ kind, cap: free, leaseMs: policy.leaseMs });
    }
    return shares.length === 0 ? null : shares;
  }

  /** A kind's settings: those `rowfleet kinds set` stored, then its handler map entry's, then this worker's. */
  #policy(kind: string): KindPolicy {
    let policy = this.#policies.get(kind);
    if (policy === undefined) {
      const o = this.#o;
      policy = kindPolicy([this.#settings.get(kind), o.handler.kinds.get(kind)?.options], {
        maxAttempts: o.maxAttempts,
        backoff: o.backoff,
        leaseMs: o.leaseMs,
        timeoutMs: o.timeoutMs,
      });
      this.#policies.set(kind, policy);
    }
    return policy;
  }

  /** Re-reads the kinds' stored settings; a change applies to the records claimed from then on. */
  async #readSettings(): Promise<void> {
    let settings: Map<string, KindSettings>;
    try {
      settings = await readKindSettings(this.#o.pool);
    } catch (err) {
      return this.#warn(err, 'could not read the kinds\' settings; keeping the ones known');
    }
    const same = settings.size === this.#settings.size && [...settings].every(([k, v]) => JSON.stringify(v) === JSON.stringify(this.#settings.get(k)));
    if (same) return;
    this.#settings = settings;
    this.#policies.clear();
    if (this.#beat !== undefined) this.#armHeartbeat();
  }

  /** Heartbeats three to a lease, for the shortest lease of any kind this worker may hold. */
  #armHeartbeat(): void {
    const kinds = this.#kinds ?? [...this.#settings.keys()];
    const everyMs = heartbeatEveryMs(Math.min(this.#o.leaseMs, ...kinds.map((k) => this.#policy(k).leaseMs)));
    if (everyMs === this.#beatEveryMs && this.#beat !== undefined) return;
    if (this.#beat !== undefined) this.#clock.clear(this.#beat);
    this.#beatEveryMs = everyMs;
    this.#beat = this.#clock.setInterval(() => void this.#heartbeat(), everyMs);
  }

  #claimed(claimed: readonly Claimed[]): void {
    const m = this.#o.metrics;
    const debug = this.#log.isLevelEnabled('debug');
    if (m === undefined && !debug) return;
    for (const record of claimed) {
      const { kind } = record;
      m?.claimed.inc({ kind });
      if (record.queueWaitMs !== null) m?.queueWait.observe({ kind }, Math.max(0, record.queueWaitMs) / 1000);
      if (debug) this.#recordLog(record).debug({ queueWaitMs: record.queueWaitMs === null ? null : Math.round(record.queueWaitMs) }, 'claimed');
    }
  }

  /** The kinds served with their leases, for claimAlone; undefined: every kind. */
  #aloneKinds(): { kind: string; leaseMs: number }[] | undefined {
    return this.#kinds?.map((kind) => ({ kind, leaseMs: this.#policy(kind).leaseMs }));
  }

  /** Just after the statement that took its lease (a claim, or the completion that chained it) answered. */
  #start(claimed: Claimed, chain: number): void {
    const handler = handlerFor(this.#o.handler, claimed.kind);
    if (handler === undefined) {
      // The claim is given the kinds served, so this is a bug; the lease expires and rescue returns it.
      this.#log.error({ kind: claimed.kind, recordId: claimed.id }, 'claimed a record of a kind this worker has no handler for; leaving it to expire');
      return;
    }
    const execution = new Execution(claimed, this.#clock.monotonic(), handler, this.#policy(claimed.kind));
    execution.chain = chain;
    // Deleted first, so that a record chained to its next message moves to the end: #expire relies
    // on the map's order being the executions' start order.
    const key = keyOf(claimed);
    this.#active.delete(key);
    this.#active.set(key, execution);
    this.#activeByKind.set(claimed.kind, (this.#activeByKind.get(claimed.kind) ?? 0) + 1);
    this.#running += 1;
    this.#o.metrics?.inFlight.set(this.#active.size);
    if (chain > 0 && this.#log.isLevelEnabled('debug')) this.#recordLog(claimed).debug({ chain }, 'claimed: handed on by the completion of the message before');
    if (execution.leaseDeadline < this.#leaseTimerAt) this.#armLeaseTimer();
    void this.#execute(execution);
  }

  /**
   * Arms the one lease timer for the earliest local lease deadline of the handlers running. A timer
   * due at that instant fires before any of the handlers' own later timers, also when the process
   * resumes from a pause (timers fire in the order they are due).
   */
  #armLeaseTimer(): void {
    let at = Infinity;
    for (const execution of this.#active.values()) if (!execution.settling && !execution.lost && execution.leaseDeadline < at) at = execution.leaseDeadline;
    if (at === this.#leaseTimerAt) return;
    if (this.#leaseTimer !== undefined) this.#clock.clear(this.#leaseTimer);
    this.#leaseTimer = undefined;
    this.#leaseTimerAt = at;
    if (at === Infinity) return;
    this.#leaseTimer = this.#clock.setTimeout(() => {
      this.#leaseTimer = undefined;
      this.#leaseTimerAt = Infinity;
      this.#leaseDeadlines();
    }, Math.max(0, at - this.#clock.monotonic()));
  }

  /** Aborts the handlers whose lease has ended by the local clock; their outcome will be discarded. */
  #leaseDeadlines(): void {
    const now = this.#clock.monotonic();
    for (const execution of this.#active.values()) {
      if (execution.settling || execution.lost || execution.leaseDeadline > now) continue;
      this.#recordLog(execution.claimed).warn({ leaseMs: execution.policy.leaseMs }, 'lease lost: its lease ended before a heartbeat could extend it (a pause, or the database out of reach); aborting its handler');
      execution.lostLocally = true;
      execution.loseLease();
    }
    this.#armLeaseTimer();
  }

  async #execute(execution: Execution): Promise<void> {
    const o = this.#o;
    let slotFreed = false;
    /** The handler is done: its slot (and its kind's) is free for the next claim, while its outcome is written. */
    const freeSlot = () => {
      if (slotFreed) return;
      slotFreed = true;
      this.#running -= 1;
      const kind = execution.claimed.kind;
      this.#activeByKind.set(kind, this.#activeByKind.get(kind)! - 1);
      this.#wakeup.poke();
    };
    try {
      const outcome = await runHandler(execution, {
        pool: o.pool,
        log: () => this.#recordLog(execution.claimed),
        now: () => this.#clock.statementTime(),
        monotonic: () => this.#clock.monotonic(),
      });
      execution.settling = true;
      freeSlot();
      const ms = this.#clock.monotonic() - execution.startedAt;
      this.#measure(ms);
      this.#o.metrics?.handlerSeconds.observe({ kind: execution.claimed.kind, outcome: outcome.ok ? 'ok' : 'error' }, ms / 1000);
      await this.#settlement.settle(execution, outcome);
    } catch (err) {
      this.#log.error({ err, kind: execution.claimed.kind, recordId: execution.claimed.id }, 'could not record the outcome; the lease will expire and the record be rescued');
    } finally {
      // Only this execution's entry: a record given back may already be held again by a new one.
      const key = keyOf(execution.claimed);
      if (this.#active.get(key) === execution) this.#active.delete(key);
      freeSlot();
      this.#o.metrics?.inFlight.set(this.#active.size);
      this.#wakeup.poke();
    }
  }

  /**
   * Aborts handlers running past their kind's timeout. Executions start in order, so with one
   * timeout for all the first one still in time ends the look.
   */
  #expire(): void {
    const now = this.#clock.monotonic();
    const oneTimeout =
      [...this.#settings.values()].every((s) => s.timeoutMs === undefined) && (this.#kinds === undefined || this.#kinds.every((k) => this.#policy(k).timeoutMs === this.#o.timeoutMs));
    for (const execution of this.#active.values()) {
      const { timeoutMs } = execution.policy;
      if (now - execution.startedAt < timeoutMs) {
        if (oneTimeout) break;
        continue;
      }
      if (!execution.settling) execution.abort(new HandlerTimeoutError(`handler timed out after ${timeoutMs} ms`));
    }
  }

  #measure(ms: number): void {
    this.#handlerMs = this.#handlerMs === null ? ms : this.#handlerMs * 0.9 + ms * 0.1;
  }

  /**
   * A record this worker held is COMPLETED again: tell the engine, and when it is due later (a
   * retry), wake then rather than at the next poll (a 200 ms backoff once ran after the 1 s poll).
   * The wake-up comes once the engine has taken the record back, so it never comes before the
   * record is claimable: the row's due time is the database's now() plus `delayMs`, set before
   * this call, and a boss job's is its insert's now() plus `delayMs`, before the insert returns.
   */
  #dueAgain(claimed: Pick<Claimed, 'kind' | 'id' | 'version'> & { priority?: number }, delayMs: number): void {
    const wakeThen = () => {
      // Due now: claim again once the engine has it (a boss job committed after the last fetch).
      if (delayMs <= 0) return this.#wakeup.poke();
      const timer = this.#clock.setTimeout(() => {
        this.#retryTimers.delete(timer);
        this.#wakeup.poke();
      }, delayMs + 1);
      this.#retryTimers.add(timer);
    };
    this.#o.engine.dueAgain({ kind: claimed.kind, id: claimed.id, version: claimed.version, delayMs, priority: claimed.priority }).then(wakeThen, (err) => {
      this.#warn(err, 'could not send the job of a record due again; the next sweep will');
      wakeThen();
    });
  }

  #recordLog(claimed: Claimed): Logger {
    return this.#log.child({ kind: claimed.kind, recordId: claimed.id, version: claimed.version, attempt: claimed.attempts });
  }

  #heartbeat(): Promise<void> {
    const o = this.#o;
    return heartbeat(this.#active, this.#handlerMs, {
      pool: o.pool,
      workerId: this.id,
      log: this.#log,
      now: () => this.#clock.statementTime(),
      monotonic: () => this.#clock.monotonic(),
      warn: (err, m) => this.#warn(err, m),
    }).then(() => this.#armLeaseTimer());
  }

  async #rescue(): Promise<void> {
    const o = this.#o;
    try {
      const rescued = await rescue(o.pool, { maxExpirations: o.maxExpirations, now: this.#clock.statementTime() });
      if (!this.#suspects && (await suspectsWaiting(o.pool, { kinds: this.#kinds, maxExpirations: o.maxExpirations, now: this.#clock.statementTime() }))) {
        this.#suspects = true;
        this.#log.info({ inFlight: this.#active.size }, 'a record whose lease expired too often waits: claiming nothing more until it has run alone');
        this.#wakeup.poke();
      }
      if (rescued.length === 0) return;
      this.stats.rescued += rescued.length;
      for (const r of rescued) this.#o.metrics?.rescued.inc({ kind: r.kind });
      const poisoned = rescued.filter((r) => r.status === 'FAILED').map((r) => keyOf(r));
      this.#log.info({ rescued: rescued.length, poisoned }, 'rescued records whose lease expired');
      for (const r of rescued) {
        const line = { kind: r.kind, recordId: r.id, version: r.version, owner: r.owner, status: r.status };
        if (r.status === 'FAILED') this.#log.warn(line, 'failed: poison, its lease expired too often without a completion');
        else this.#log.debug(line, 'rescued: its lease expired; back to COMPLETED');
      }
      for (const r of rescued) if (r.status === 'COMPLETED') this.#dueAgain(r, 0);
      this.#wakeup.poke();
    } catch (err) {
      this.#warn(err, 'rescue failed');
    }
  }

  /** Shutdown: let handlers finish within the grace period, then abort and release the rest. */
  async #drain(): Promise<void> {
    if (this.#active.size === 0) return;
    this.#log.info({ inFlight: this.#active.size, graceMs: this.#o.graceMs }, 'draining in-flight handlers');
    const never = new AbortController().signal;
    const deadline = this.#clock.monotonic() + this.#o.graceMs;
    while (this.#active.size > 0 && this.#clock.monotonic() < deadline) await this.#wakeup.wait(deadline - this.#clock.monotonic(), never);
    for (const execution of this.#active.values()) {
      if (!execution.settling) execution.abort(new ShutdownError('worker shutting down'));
    }
    while (this.#active.size > 0) await this.#wakeup.wait(1_000, never);
  }

  /**
   * A database step, retried while the database is unavailable or the statement lost a deadlock
   * (bounded unless `signal`): a completion that met an upsert in a lock cycle is written on the
   * next try instead of waiting out its lease and running again.
   */
  #retrying<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return retrying(fn, { signal, onRetry: (err) => this.#warn(err, `${what} failed; retrying`) });
  }

  #warn(err: unknown, message: string): void {
    this.#log.warn({ err: { message: (err as Error)?.message, code: (err as { code?: string })?.code } }, message);
  }
}
