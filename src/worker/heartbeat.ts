/**
 * The heartbeat: extends the leases of the handlers still running (one statement for all of them),
 * aborts the handlers whose lease was lost, and tells the workers table this worker is alive, how
 * much it holds and how long its handlers take (for status and autoscaling).
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { extendLeases } from '../records/lease.ts';
import { localLeaseMs, type Execution } from './execution.ts';
import { touchWorker } from './registry.ts';

export interface HeartbeatDeps {
  pool: pg.Pool;
  workerId: string;
  log: Logger;
  now?: (() => Date | undefined) | undefined;
  /** The worker's monotonic clock (ms): the leases' local deadlines. */
  monotonic: () => number;
  warn: (err: unknown, message: string) => void;
}

/** One statement per lease length (one, unless kinds set their own). */
export async function heartbeat(active: ReadonlyMap<string, Execution>, handlerMs: number | null, deps: HeartbeatDeps): Promise<void> {
  const held = Map.groupBy([...active.values()].filter((e) => !e.settling && !e.lost), (e) => e.policy.leaseMs);
  try {
    for (const [leaseMs, executions] of held) {
      const lost = new Set(await extendLeases(deps.pool, { leases: executions.map((e) => e.claimed), leaseMs, now: deps.now?.() }));
      const answeredAt = deps.monotonic();
      // The executions whose lease this statement found gone, not whatever holds their record now:
      // a record completed meanwhile may already be held again by a new execution of this worker
      // (mode every's next message, a newer version), under a lease of its own.
      for (const execution of executions) {
        if (!lost.has(execution.claimed)) {
          execution.leaseDeadline = Math.max(execution.leaseDeadline, answeredAt + localLeaseMs(leaseMs));
          continue;
        }
        if (execution.settling) continue;
        deps.log.warn({ kind: execution.claimed.kind, recordId: execution.claimed.id }, 'lease lost (expired or taken over); aborting its handler');
        execution.loseLease();
      }
    }
    await touchWorker(deps.pool, deps.workerId, { inFlight: active.size, handlerMs });
  } catch (err) {
    deps.warn(err, 'heartbeat failed');
  }
}
