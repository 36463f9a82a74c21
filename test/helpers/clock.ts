/**
 * The clock of a worker under test: a ManualClock that the test moves. It starts a minute ahead of
 * the database, so that records a test writes with the database's now() are due to the worker at
 * once; leases, retries and rescues then run on the worker's time alone (its statements pass it).
 */
import { ManualClock, type Clock } from '../../src/worker/clock.ts';
import { waitFor } from './wait.ts';

export function workerClock(): ManualClock {
  return new ManualClock(Date.now() + 60_000);
}

/**
 * Moves a ManualClock forward `stepMs` at a time until `done` holds, letting the worker act on
 * each step's timers before the next (on the system clock, real time moves it); fails with `what`
 * after `timeoutMs` of real time.
 */
export function advanceUntil(clock: Clock, stepMs: number, done: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<true> {
  return waitFor(
    async () => {
      if (await done()) return true;
      if (clock instanceof ManualClock) clock.advance(stepMs);
      return false;
    },
    timeoutMs,
    what,
  );
}
