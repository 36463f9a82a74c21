/**
 * Failures of the database rather than of a record (unavailable, or this statement lost a deadlock
 * or a serialization check): retried as infrastructure, never counted as an attempt, never turned
 * into a dropped outcome.
 */
import { isDatabaseUnavailable, isTransientConflict } from '../db/pool.ts';

export function isInfrastructure(err: unknown): boolean {
  return isDatabaseUnavailable(err) || isTransientConflict(err);
}

export interface RetryOptions {
  /** Keeps trying until this aborts; without it, gives up after a few tries (about 12 s). */
  signal?: AbortSignal | undefined;
  onRetry: (err: unknown, attempt: number) => void;
}

/** Runs a database step, retrying infrastructure failures with backoff; other errors are thrown at once. */
export async function retrying<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isInfrastructure(err) || (options.signal === undefined && attempt >= 6) || options.signal?.aborted) throw err;
      options.onRetry(err, attempt);
      await new Promise((r) => setTimeout(r, Math.min(5_000, 200 * 2 ** attempt)));
    }
  }
}
