/**
 * The worker's injectable clock: with a ManualClock its timers fire only when the test moves time,
 * in time order, so a wait for a poll or a backoff takes no real time.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/worker/clock.ts';
import { Wakeup } from '../src/worker/wakeup.ts';

describe('ManualClock', () => {
  it('fires timeouts and intervals only as time is moved, in time order', () => {
    const clock = new ManualClock(1_000);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`once@${clock.monotonic()}`), 30);
    const every = clock.setInterval(() => fired.push(`every@${clock.monotonic()}`), 20);
    clock.advance(19);
    expect(fired).toEqual([]);
    clock.advance(31);
    expect(fired).toEqual(['every@1020', 'once@1030', 'every@1040']);
    clock.clear(every);
    clock.advance(100);
    expect(fired).toHaveLength(3);
    expect(clock.statementTime()).toEqual(new Date(1_150));
  });

  it('ends a worker wait at its poll interval only when the clock gets there', async () => {
    const clock = new ManualClock();
    const wakeup = new Wakeup(clock);
    const never = new AbortController().signal;
    const waiting = wakeup.wait(1_000, never);
    let ended: string | undefined;
    void waiting.then((why) => (ended = why));
    clock.advance(999);
    await Promise.resolve();
    expect(ended).toBeUndefined();
    clock.advance(1);
    expect(await waiting).toBe('timeout');
    // A poke ends the next wait at once, whatever the clock says.
    wakeup.poke();
    expect(await wakeup.wait(60_000, never)).toBe('poked');
  });
});
