/**
 * The worker's clock: the time its statements pass to the database, and its timers (poll,
 * heartbeat, timeouts, rescue, retry wake-ups, drain). Production uses the system's; tests pass a
 * ManualClock and move time themselves, so nothing in them waits for real time to pass.
 */
export interface Clock {
  /** The time statements pass to the database; undefined: the database's own now(). */
  statementTime(): Date | undefined;
  /** Milliseconds on a monotonic scale, for durations. */
  monotonic(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  setInterval(fn: () => void, ms: number): Timer;
  clear(timer: Timer): void;
}

export type Timer = { readonly id: unknown };

export const systemClock: Clock = {
  statementTime: () => undefined,
  monotonic: () => performance.now(),
  setTimeout: (fn, ms) => ({ id: setTimeout(fn, ms) }),
  setInterval: (fn, ms) => ({ id: setInterval(fn, ms) }),
  clear: (timer) => clearTimeout(timer.id as NodeJS.Timeout),
};

interface Scheduled {
  at: number;
  every: number | undefined;
  fn: () => void;
  timer: Timer;
}

/** A clock that moves only when told to (`advance`), firing the timers that fall due on the way. */
export class ManualClock implements Clock {
  #now: number;
  readonly #scheduled = new Set<Scheduled>();

  constructor(start = Date.now()) {
    this.#now = start;
  }

  statementTime(): Date {
    return new Date(this.#now);
  }

  monotonic(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    return this.#schedule(fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): Timer {
    return this.#schedule(fn, ms, Math.max(1, ms));
  }

  clear(timer: Timer): void {
    for (const s of this.#scheduled) if (s.timer === timer) this.#scheduled.delete(s);
  }

  /** Moves time forward by `ms`, firing every timer due by then, in time order. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      const next = [...this.#scheduled].filter((s) => s.at <= end).sort((a, b) => a.at - b.at)[0];
      if (next === undefined) break;
      this.#now = Math.max(this.#now, next.at);
      if (next.every === undefined) this.#scheduled.delete(next);
      else next.at += next.every;
      next.fn();
    }
    this.#now = end;
  }

  #schedule(fn: () => void, ms: number, every: number | undefined): Timer {
    const timer: Timer = { id: Symbol('timer') };
    this.#scheduled.add({ at: this.#now + Math.max(0, ms), every, fn, timer });
    return timer;
  }
}
