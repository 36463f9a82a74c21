/**
 * A worker process's metrics (prom-client), served on --metrics-port (metrics-server.ts) or handed
 * to its fleet, which serves them summed over its workers (src/fleet/metrics.ts). Counted where
 * the outcome is known: claims in the loop, outcomes in settlement.ts, rescues in the rescuer.
 *
 * rowfleet_worker_claimed_total{kind}                   records claimed (a chained message counts under chained)
 * rowfleet_worker_processed_total{kind}                 results completed (PROCESSED, or the next message of mode every)
 * rowfleet_worker_chained_total{kind}                   mode every: next messages handed back by a completion
 * rowfleet_worker_superseded_total{kind}                results discarded: a newer version arrived meanwhile
 * rowfleet_worker_handler_failures_total{kind,reason}   failed attempts: error, timeout, permanent, lease_lost
 * rowfleet_worker_retries_total{kind}                   failed attempts scheduled to run again
 * rowfleet_worker_failed_total{kind}                    records that became FAILED (attempts spent, or permanent)
 * rowfleet_worker_released_total{kind}                  records given back unfinished (shutdown), no attempt spent
 * rowfleet_worker_rescued_total{kind}                   expired leases (of any worker) this worker returned
 * rowfleet_worker_handler_duration_seconds{kind,outcome}  handler run time; outcome ok or error
 * rowfleet_worker_claim_to_completion_seconds{kind}     from the claim to the committed completion
 * rowfleet_worker_queue_wait_seconds{kind}              from due (run_after) to the claim
 * rowfleet_worker_in_flight                             records this process holds now
 * plus prom-client's process and Node.js metrics, prefixed rowfleet_worker_.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type FailureReason = 'error' | 'timeout' | 'permanent' | 'lease_lost';

/** Seconds, from a millisecond handler to a long backlog. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly claimed = this.#counter('claimed', 'Records claimed', ['kind']);
  readonly processed = this.#counter('processed', 'Results completed', ['kind']);
  readonly chained = this.#counter('chained', 'Mode every: next messages handed back by a completion', ['kind']);
  readonly superseded = this.#counter('superseded', 'Results discarded because a newer version arrived while the handler ran', ['kind']);
  readonly failures = this.#counter('handler_failures', 'Failed attempts, by reason (error, timeout, permanent, lease_lost)', ['kind', 'reason']);
  readonly retries = this.#counter('retries', 'Failed attempts scheduled to run again after a backoff', ['kind']);
  readonly failed = this.#counter('failed', 'Records that became FAILED', ['kind']);
  readonly released = this.#counter('released', 'Records given back unfinished without spending an attempt (shutdown)', ['kind']);
  readonly rescued = this.#counter('rescued', 'Records whose expired lease this worker returned', ['kind']);
  readonly handlerSeconds = this.#histogram('handler_duration_seconds', 'Handler run time, by kind and outcome (ok, error)', ['kind', 'outcome']);
  readonly claimToCompletion = this.#histogram('claim_to_completion_seconds', 'From the claim to the committed completion', ['kind']);
  readonly queueWait = this.#histogram('queue_wait_seconds', 'From the time a record was due to its claim', ['kind']);
  readonly inFlight = new Gauge({ name: 'rowfleet_worker_in_flight', help: 'Records this process holds under a lease', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'rowfleet_worker_' });
  }

  #counter<L extends string>(name: string, help: string, labelNames: L[]): Counter<L> {
    return new Counter<L>({ name: `rowfleet_worker_${name}_total`, help, labelNames, registers: [this.registry] });
  }

  #histogram<L extends string>(name: string, help: string, labelNames: L[]): Histogram<L> {
    return new Histogram<L>({ name: `rowfleet_worker_${name}`, help, labelNames, buckets: BUCKETS, registers: [this.registry] });
  }
}
