/** Polls a condition on the database until it holds or a deadline passes. */
import { setTimeout as delay } from 'node:timers/promises';

export interface PollResult {
  /** performance.now() at the poll that found the condition true, or at the deadline. */
  at: number;
  timedOut: boolean;
}

export async function pollUntil(condition: () => Promise<boolean>, { intervalMs, timeoutMs }: { intervalMs: number; timeoutMs: number }): Promise<PollResult> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const done = await condition();
    const at = performance.now();
    if (done) return { at, timedOut: false };
    if (at >= deadline) return { at, timedOut: true };
    await delay(intervalMs);
  }
}
