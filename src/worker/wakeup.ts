/**
 * What the worker loop sleeps on: `poke()` wakes it (a notification, a finished handler, a retry
 * falling due, shutdown); pokes while it is busy count as one, so a wait right after returns at once.
 */
import { systemClock, type Clock } from './clock.ts';

export type WakeReason = 'poked' | 'timeout' | 'aborted';

export class Wakeup {
  #poked = false;
  #resolve: ((reason: WakeReason) => void) | undefined;
  readonly #clock: Clock;

  constructor(clock: Clock = systemClock) {
    this.#clock = clock;
  }

  poke(): void {
    this.#poked = true;
    this.#resolve?.('poked');
  }

  /** Until poked (or already poked since the last wait), `ms` pass, or `signal` aborts. */
  async wait(ms: number, signal: AbortSignal): Promise<WakeReason> {
    if (signal.aborted) return 'aborted';
    if (this.#poked) {
      this.#poked = false;
      return 'poked';
    }
    const reason = await new Promise<WakeReason>((resolve) => {
      const timer = this.#clock.setTimeout(() => done('timeout'), Math.max(0, ms));
      const onAbort = () => done('aborted');
      const done = (why: WakeReason) => {
        this.#clock.clear(timer);
        signal.removeEventListener('abort', onAbort);
        this.#resolve = undefined;
        resolve(why);
      };
      this.#resolve = done;
      signal.addEventListener('abort', onAbort, { once: true });
    });
    this.#poked = false;
    return reason;
  }

  /** `ms` pass or `signal` aborts; pokes do not end it (a backoff after a failure). */
  sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.#clock.clear(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = this.#clock.setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
