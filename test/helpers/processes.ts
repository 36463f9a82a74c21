/**
 * Real `rowfleet` processes for tests: started as production starts them
 * (`node --import tsx src/cli/main.ts <command>`), their JSON log lines collected, and every
 * process a test started (and every worker a fleet it started reports) killed by PID in afterAll,
 * even when the test failed halfway:
 *
 *   const procs = new Processes();
 *   afterAll(() => procs.killAll());
 *   const fleet = procs.start(['fleet', '--workers', '2'], { DATABASE_URL: db.url });
 *   await fleet.waitForLog((l) => l.msg === 'worker started', 30_000, 'a worker to start');
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const RECORDING_HANDLER = fileURLToPath(new URL('../fixtures/recording-handler.js', import.meta.url));
/** The recording handler, except that records with `data.crash` kill their process (test/fixtures/poison-handler.js). */
export const POISON_HANDLER = fileURLToPath(new URL('../fixtures/poison-handler.js', import.meta.url));

/** The table test/fixtures/recording-handler.js writes each committed execution to. */
export const EXECUTIONS_TABLE = `
  CREATE TABLE IF NOT EXISTS test_executions (
    record_id text NOT NULL,
    version bigint NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL
  )`;

/** A pino JSON line: level (30 info, 40 warn, 50 error), msg, pid, and the logged fields. */
export type LogLine = Record<string, unknown> & { level: number; msg: string; pid: number };

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RowfleetProcess {
  child: ChildProcess;
  pid: number;
  /** Every output line so far, JSON or not. */
  lines: string[];
  /** The JSON log lines so far (a fleet's include its workers'). */
  logs: LogLine[];
  exited: Promise<Exit>;
  /** Resolves with the first log line (already seen or to come) that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs: number, what: string): Promise<LogLine>;
  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`, and the test fails). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** The last lines, for failure messages. */
  tail(n?: number): string;
}

/** The processes one test file started, plus the fleet workers they reported. */
export class Processes {
  readonly #started: RowfleetProcess[] = [];
  /** Fleet workers alive as far as their fleet's log says: started and not yet reported gone. */
  readonly #fleetWorkers = new Set<number>();
  readonly #onExit = () => this.#killNow();

  constructor() {
    // Should the test runner exit without running afterAll, nothing may outlive it.
    process.once('exit', this.#onExit);
  }

  /** Pids of the fleet workers reported alive. */
  get fleetWorkers(): number[] {
    return [...this.#fleetWorkers];
  }

  /** Every output line of every process started here (a fleet's include its workers'), for greps over all logs. */
  allLines(): string[] {
    return this.#started.flatMap((p) => p.lines);
  }

  start(args: readonly string[], env: Record<string, string>): RowfleetProcess {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, ROWFLEET_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid === undefined) throw new Error(`could not start rowfleet ${args.join(' ')}`);
    const lines: string[] = [];
    const logs: LogLine[] = [];
    const waiters = new Set<(line: LogLine) => void>();
    const onLine = (line: string) => {
      lines.push(line);
      let entry: LogLine;
      try {
        entry = JSON.parse(line) as LogLine;
      } catch {
        return;
      }
      if (typeof entry !== 'object' || entry === null) return;
      logs.push(entry);
      this.#track(entry);
      for (const waiter of waiters) waiter(entry);
    };
    for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream!, crlfDelay: Infinity }).on('line', onLine);
    // 'close', not 'exit': by then every line has been read.
    const exited = new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));

    const proc: RowfleetProcess = {
      child,
      pid: child.pid,
      lines,
      logs,
      exited,
      tail: (n = 30) => lines.slice(-n).join('\n'),
      waitForLog(match, timeoutMs, what) {
        const seen = logs.find(match);
        if (seen !== undefined) return Promise.resolve(seen);
        return new Promise((resolve, reject) => {
          const done = () => {
            clearTimeout(timer);
            waiters.delete(waiter);
          };
          const waiter = (line: LogLine) => {
            if (match(line)) {
              done();
              resolve(line);
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last output:\n${proc.tail()}`));
          }, timeoutMs);
          waiters.add(waiter);
          void exited.then((exit) => {
            if (!waiters.has(waiter)) return;
            done();
            reject(new Error(`exited (${exit.code ?? exit.signal}) while waiting for ${what}; last output:\n${proc.tail()}`));
          });
        });
      },
      async stop(signal = 'SIGTERM', timeoutMs = 60_000) {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
        const outcome = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        if (outcome === 'timeout') {
          child.kill('SIGKILL');
          throw new Error(`pid ${child.pid} did not exit within ${timeoutMs} ms of ${signal}; last output:\n${proc.tail()}`);
        }
        return outcome;
      },
    };
    this.#started.push(proc);
    return proc;
  }

  /** Follows a fleet's reports of the workers it starts and loses. */
  #track(entry: LogLine): void {
    const pid = entry.workerPid;
    if (typeof pid !== 'number') return;
    if (entry.msg === 'worker process started') this.#fleetWorkers.add(pid);
    else if (entry.msg === 'worker process stopped' || entry.msg === 'worker process exited unexpectedly; restarting') this.#fleetWorkers.delete(pid);
  }

  /** Marks a fleet worker as gone (the test killed it) before its fleet reports it. */
  forget(pid: number): void {
    this.#fleetWorkers.delete(pid);
  }

  /**
   * SIGKILLs everything still running: the processes started here, then the workers of their
   * fleets (a fleet killed by SIGKILL cannot stop its workers, which run in their own process group).
   */
  async killAll(): Promise<void> {
    this.#killNow();
    await Promise.all(this.#started.map((p) => Promise.race([p.exited, delay(10_000)])));
    process.off('exit', this.#onExit);
  }

  #killNow(): void {
    for (const p of this.#started) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    for (const pid of this.#fleetWorkers) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.#fleetWorkers.clear();
  }
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
