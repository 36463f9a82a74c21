/**
 * A handler for the autoscale bench: `rowfleet fleet --handler bench/lib/autoscale-handler.ts`
 * with BENCH_AUTOSCALE_SLEEP_MS (default 15000, the motivating job's length) and
 * ROWFLEET_BENCH_STARTS naming a file. It waits that long (aborted on shutdown or a lost lease, as
 * a real job would be), then appends `<record id> <worker pid> <start> <end>` (epoch ms) to the
 * file, so that the bench can tell which worker ran what, and when each worker began to take work.
 */
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HandlerContext, HandlerRecord } from '../../src/worker/handler.ts';

const file = setting('ROWFLEET_BENCH_STARTS');
const sleepMs = Number(process.env.BENCH_AUTOSCALE_SLEEP_MS ?? 15_000);
if (!Number.isFinite(sleepMs) || sleepMs < 0) throw new Error(`autoscale-handler: BENCH_AUTOSCALE_SLEEP_MS must be a number of ms, got ${process.env.BENCH_AUTOSCALE_SLEEP_MS}`);

const now = () => performance.timeOrigin + performance.now();

export default async function slowJob(record: HandlerRecord, ctx: HandlerContext): Promise<{ sleptMs: number }> {
  const startedAt = now();
  await sleep(sleepMs, undefined, { signal: ctx.signal });
  appendFileSync(file, `${record.id} ${process.pid} ${startedAt.toFixed(3)} ${now().toFixed(3)}\n`);
  return { sleptMs: sleepMs };
}

function setting(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`autoscale-handler: set ${name}`);
  return value;
}
