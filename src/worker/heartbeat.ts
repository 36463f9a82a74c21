/**
 * The heartbeat: extends the leases of the handlers still running (one statement for all of them),
 * aborts the handlers whose lease was lost, and tells the workers table this worker is alive, how
 * much it holds and how long its handlers take (for status and autoscaling).
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { extendLeases } from '../records/lease.ts';
import type { Execution } from './execution.ts';
import { touchWorker } from './registry.ts';

export interface HeartbeatDeps {
  pool: pg.Pool;
  workerId: string;
  leaseMs: number;
  log: Logger;
  now?: (() => Date | undefined) | undefined;
  warn: (err: unknown, message: string) => void;
}

export async function heartbeat(active: ReadonlyMap<string, Execution>, handlerMs: number | null, deps: HeartbeatDeps): Promise<void> {
  const held = [...active.values()].filter((e) => !e.settling && !e.lost);
  try {
    const lost = await extendLeases(deps.pool, { leases: held.map((e) => e.claimed), leaseMs: deps.leaseMs, now: deps.now?.() });
    for (const id of lost) {
      const execution = active.get(id);
      if (execution === undefined || execution.settling) continue;
      deps.log.warn({ recordId: id }, 'lease lost (expired or taken over); aborting its handler');
      execution.loseLease();
    }
    await touchWorker(deps.pool, deps.workerId, { inFlight: active.size, handlerMs });
  } catch (err) {
    deps.warn(err, 'heartbeat failed');
  }
}
