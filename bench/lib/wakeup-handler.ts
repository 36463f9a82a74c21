/**
 * A handler for the wake-up bench: `rowfleet worker --handler bench/lib/wakeup-handler.ts` with
 * ROWFLEET_BENCH_STARTS naming a file. It appends `<record id> <epoch ms, fractional>` the moment
 * it is called, and does nothing else; the bench joins these lines with the instants its upserts
 * committed. Both sides read the same host clock (performance.timeOrigin + performance.now(), for
 * sub-millisecond resolution).
 */
import { appendFileSync } from 'node:fs';
import type { HandlerRecord } from '../../src/worker/handler.ts';

const file = startsFile();

export default async function recordStart(record: HandlerRecord): Promise<null> {
  const startedAt = performance.timeOrigin + performance.now();
  // Synchronous: a line per record at 500/s costs microseconds, and nothing is lost on SIGTERM.
  appendFileSync(file, `${record.id} ${startedAt.toFixed(3)}\n`);
  return null;
}

function startsFile(): string {
  const name = process.env.ROWFLEET_BENCH_STARTS;
  if (name === undefined || name === '') throw new Error('wakeup-handler: set ROWFLEET_BENCH_STARTS to the file that collects handler start times');
  return name;
}
