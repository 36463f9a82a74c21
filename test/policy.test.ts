import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { backoffMs, heartbeatEveryMs } from '../src/worker/policy.ts';
import { parseDuration } from '../src/duration.ts';
import { isTransientConflict } from '../src/db/pool.ts';

describe('backoffMs (exponential, full jitter)', () => {
  const options = { baseMs: 1_000, capMs: 600_000 };
  it('spans [0, base * 2^(attempt-1)) capped, driven by the injected random', () => {
    expect(backoffMs(1, options, () => 0)).toBe(0);
    expect(backoffMs(1, options, () => 0.999999)).toBe(999);
    expect(backoffMs(4, options, () => 0.5)).toBe(4_000);
    expect(backoffMs(30, options, () => 0.5)).toBe(300_000);
  });
  it('never exceeds the cap or goes negative', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, r) => {
        const ms = backoffMs(attempt, options, () => r);
        return ms >= 0 && ms < options.capMs && Number.isInteger(ms);
      }),
    );
  });
});

describe('durations and lease timing', () => {
  it('parses 500ms, 3s, 2m, 1h, 30d, and refuses a number without a unit', () => {
    expect([parseDuration('500ms'), parseDuration('3s'), parseDuration('2m'), parseDuration('1h'), parseDuration('30d')]).toEqual([500, 3_000, 120_000, 3_600_000, 2_592_000_000]);
    expect(parseDuration('250')).toBeUndefined();
    expect(parseDuration('1.5s')).toBe(1_500);
    expect(parseDuration('soon')).toBeUndefined();
    expect(parseDuration('-1s')).toBeUndefined();
  });
  it('heartbeats three times per lease', () => {
    expect(heartbeatEveryMs(30_000)).toBe(10_000);
  });
});

describe('infrastructure failures', () => {
  it('counts a lost deadlock or serialization conflict, wrapped or not, as a transient conflict to retry', () => {
    const pgError = (code: string) => Object.assign(new Error(code), { code });
    const wrapped = (code: string) => new Error('Failed query: UPDATE rowfleet.records ...', { cause: pgError(code) });
    expect([pgError('40P01'), pgError('40001'), wrapped('40P01'), wrapped('40001')].map(isTransientConflict)).toEqual([true, true, true, true]);
    expect([pgError('23505'), wrapped('42P01'), new Error('boom'), undefined].map(isTransientConflict)).toEqual([false, false, false, false]);
  });
});
