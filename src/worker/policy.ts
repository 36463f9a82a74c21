/**
 * Pure policies of the worker: no clock, no randomness of their own (both are passed in), so
 * tests check them exactly.
 */

/** Exponential backoff with full jitter: a uniform delay in [0, min(cap, base * 2^(attempt-1))). */
export function backoffMs(attempt: number, options: { baseMs: number; capMs: number }, random: () => number = Math.random): number {
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/** How often a lease is extended: three heartbeats fit in one lease, so one lost beat is harmless. */
export function heartbeatEveryMs(leaseMs: number): number {
  return Math.max(10, Math.floor(leaseMs / 3));
}
