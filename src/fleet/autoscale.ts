/**
 * How big a fleet should be. The decision is a pure function of one sample (what is due, what the
 * fleet holds, how long its handlers take) and a little state (the current size, how many samples
 * in a row were idle), so tests check it exactly.
 *
 * Size to the backlog: the slots needed are those holding records now plus enough to start every
 * due record within the target wait. A slot finishes a record every `handlerMs`, so within the
 * target it starts `targetWaitMs / handlerMs` of them: `due * handlerMs / targetWaitMs` slots, and
 * never more than `due` (a record runs in one slot at a time). Before any handler has finished,
 * its duration is unknown and every due record is given a slot. 200 records of 15 s with a
 * 5 s target ask for 200 slots at the first sample: with 5 handlers each, the fleet goes straight
 * to its --max of 8 instead of one worker per sample.
 *
 * Grow to that size at once (bounded by --max). Shrink only after several idle samples in a row,
 * idle meaning the fleet needs fewer workers than it has: busy workers with long handlers show
 * little due between claims, and shrinking on one sample would let the backlog grow back.
 */
import type { BacklogSample } from '../records/backlog.ts';

export type { BacklogSample };

export interface ScaleLimits {
  min: number;
  max: number;
  /** Every due record should start within this. */
  targetWaitMs: number;
  /** Idle samples in a row before shrinking. */
  idleSamples: number;
  /** Handlers per worker. */
  concurrency: number;
}

export type ScaleReason = 'below-min' | 'above-max' | 'backlog' | 'idle' | 'at-max' | 'steady';

export interface ScaleDecision {
  from: number;
  /** Equal to `from` when the fleet holds. */
  to: number;
  reason: ScaleReason;
  /** Workers the sample asks for, before the bounds. */
  needed: number;
}

/** Workers needed for what `sample` shows, before the bounds. */
export function workersNeeded(sample: BacklogSample, limits: Pick<ScaleLimits, 'targetWaitMs' | 'concurrency'>): number {
  const perRecord = sample.handlerMs === null ? 1 : Math.min(1, sample.handlerMs / limits.targetWaitMs);
  const slots = sample.inFlight + sample.due * perRecord;
  return Math.ceil(slots / limits.concurrency);
}

/** `idleStreak`: idle samples in a row before this one (see nextIdleStreak). */
export function decideScale(count: number, sample: BacklogSample, idleStreak: number, limits: ScaleLimits): ScaleDecision {
  const needed = workersNeeded(sample, limits);
  const decision = (to: number, reason: ScaleReason): ScaleDecision => ({ from: count, to, reason, needed });
  if (count < limits.min) return decision(limits.min, 'below-min');
  if (count > limits.max) return decision(limits.max, 'above-max');
  if (needed > count) return count < limits.max ? decision(Math.min(limits.max, needed), 'backlog') : decision(count, 'at-max');
  if (needed < count && idleStreak + 1 >= limits.idleSamples && count > limits.min) return decision(Math.max(limits.min, needed), 'idle');
  return decision(count, 'steady');
}

/** The idle streak after `sample`: one more when the fleet needs fewer workers than it has, else none. */
export function nextIdleStreak(count: number, sample: BacklogSample, idleStreak: number, limits: ScaleLimits): number {
  return workersNeeded(sample, limits) < count ? idleStreak + 1 : 0;
}
