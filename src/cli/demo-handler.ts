/**
 * The demo's handler (`rowfleet demo` runs its fleet with it): a transactional handler that
 * writes one row per committed execution into rowfleet_demo_executions, the evidence the demo's
 * integrity check reads (one committed execution per version, never two of a record at once).
 *
 * By the record's data: `sleepMs` makes it slow; `failTimes` makes its first attempts throw (a
 * flaky dependency); `crash` ends its process (a poison record).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { HandlerContext, HandlerRecord } from '../worker/handler.ts';

export const transactional = true;

export default async function demoHandler(record: HandlerRecord, ctx: HandlerContext): Promise<unknown> {
  const data = (record.data ?? {}) as { sleepMs?: number; failTimes?: number; crash?: boolean };
  const startedAt = new Date();
  if (data.crash === true) {
    await sleep(50);
    process.exit(1);
  }
  if (typeof data.sleepMs === 'number' && data.sleepMs > 0) await sleep(data.sleepMs, undefined, { signal: ctx.signal });
  if (typeof data.failTimes === 'number' && ctx.attempt <= data.failTimes) throw new Error(`the payment service timed out (attempt ${ctx.attempt} of the ${data.failTimes} that fail)`);
  await ctx.query!('INSERT INTO rowfleet_demo_executions (kind, id, version, pid, started_at, ended_at) VALUES ($1, $2, $3, $4, $5, clock_timestamp())', [
    record.kind, record.id, String(record.version), process.pid, startedAt,
  ]);
  return { charged: true, attempt: ctx.attempt };
}
