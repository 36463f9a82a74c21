/**
 * This machine is shared (test suites, other benches): a scenario that starts while a neighbour
 * burns a core measures the neighbour. Before each scenario, wait (a bounded time) until the CPU
 * used by processes outside the bench and its Postgres drops below a threshold; scenarios that
 * still ran beside a busy neighbour are flagged in the reports from their own CPU readings.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { cpuMeter } from './cpu.ts';

const SAMPLE_MS = 500;
/** % of one core used by other processes, below which the machine counts as quiet. */
export const BUSY_OTHER_PERCENT = 25;

export async function awaitQuiet(postgresPids: () => number[], progress: (line: string) => void, maxWaitMs = 10_000): Promise<void> {
  const meter = cpuMeter(() => ({ bench: [process.pid], postgres: postgresPids() }));
  const deadline = performance.now() + maxWaitMs;
  let reported = false;
  for (;;) {
    meter.start();
    await delay(SAMPLE_MS);
    const { other } = meter.stop();
    if (other <= BUSY_OTHER_PERCENT) return;
    if (performance.now() >= deadline) return void progress(`other processes still use ${other}% CPU; measuring anyway`);
    if (!reported) progress(`other processes use ${other}% CPU; waiting up to ${maxWaitMs / 1000}s for them to settle`);
    reported = true;
  }
}
