/**
 * A closed-loop load: `concurrency` callers, each issuing its next call as soon as the previous
 * one returns, for a warm-up and then a measured window. Only calls that complete inside the
 * window count, so the rate is not inflated by work started during the warm-up.
 */
import type { CpuMeter, CpuUsage } from './cpu.ts';

export interface LoadOptions {
  concurrency: number;
  warmupSeconds: number;
  seconds: number;
  /** One call; resolves to the number of messages it carried. */
  call: () => Promise<number>;
  cpu: CpuMeter;
}

export interface Measurement {
  messages: number;
  calls: number;
  seconds: number;
  messagesPerSecond: number;
  /** Latency of one call (one batch, or one request), in milliseconds. */
  p50Ms: number;
  p99Ms: number;
  cpu: CpuUsage;
}

export async function closedLoop({ concurrency, warmupSeconds, seconds, call, cpu }: LoadOptions): Promise<Measurement> {
  const windowStart = performance.now() + warmupSeconds * 1000;
  const windowEnd = windowStart + seconds * 1000;
  let messages = 0;
  const latencies: number[] = [];
  let usage: CpuUsage | undefined;
  const startCpu = setTimeout(() => cpu.start(), warmupSeconds * 1000);
  const stopCpu = setTimeout(() => (usage = cpu.stop()), warmupSeconds * 1000 + seconds * 1000);

  const caller = async () => {
    while (performance.now() < windowEnd) {
      const started = performance.now();
      const carried = await call();
      const done = performance.now();
      if (done >= windowStart && done < windowEnd) {
        messages += carried;
        latencies.push(done - started);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, caller));
  } finally {
    clearTimeout(startCpu);
    clearTimeout(stopCpu);
  }
  // The last calls can end just before the timer fires; take the reading now if it has not run.
  usage ??= cpu.stop();
  return {
    messages,
    calls: latencies.length,
    seconds,
    messagesPerSecond: Math.round(messages / seconds),
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    cpu: usage,
  };
}

/** Nearest-rank percentile, rounded to 0.1 ms. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = values.toSorted((a, b) => a - b);
  const value = sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
  return Math.round(value * 10) / 10;
}
