/**
 * The heartbeat: extends the leases of the handlers still running (one statement for all of them),
 * aborts the handlers whose lease was lost, and tells the workers table this worker is alive, how
 * much it holds and how long its handlers take (for status and autoscaling).
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { extendLeases } from '../records/lease.ts';
import { keyOf } from '../records/key.ts';
import type { Execution } from './execution.ts';
import { touchWorker } from './registry.ts';

export interface HeartbeatDeps {
  pool: pg.Pool;
  workerId: string;
  log: Logger;
  now?: (() => Date | undefined) | undefined;
  warn: (err: unknown, message: string) => void;
}

/** `active` is keyed by keyOf(record). One statement per lease length (one, unless kinds set their own). */
export async function heartbeat(active: ReadonlyMap<string, Execution>, handlerMs: number | null, deps: HeartbeatDeps): Promise<void> {
  const held = Map.groupBy([...active.values()].filter((e) => !e.settling && !e.lost), (e) => e.policy.leaseMs);
  try {
    for (const [leaseMs, executions] of held) {
      const lost = await extendLeases(deps.pool, { leases: executions.map((e) => e.claimed), leaseMs, now: deps.now?.() });
      for (const claimed of lost) {
        const execution = active.get(keyOf(claimed));
        if (execution === undefined || execution.settling) continue;
        deps.log.warn({ kind: claimed.kind, recordId: claimed.id }, 'lease lost (expired or taken over); aborting its handler');
        execution.loseLease();
      }
    }
    await touchWorker(deps.pool, deps.workerId, { inFlight: active.size, handlerMs });
  } catch (err) {
    deps.warn(err, 'heartbeat failed');
  }
}
