/**
 * GET /metrics in the Prometheus text format (prom-client). Each server gets its own registry, so
 * several servers in one process (tests) do not collide.
 *
 * rowfleet_upsert_messages_total{kind,reason}  messages answered, by kind and outcome
 * rowfleet_upsert_duration_seconds{batch}  the write of a POST /upsert (not a ?wait), single or batch
 * rowfleet_http_request_duration_seconds  by method, route and status code
 * read from the database at each scrape, with the queries `rowfleet status` runs (src/ops/status.ts):
 * rowfleet_records{kind,status}           records by status (a kind's PROCESSED is left out once the
 *                                         table is over 16 MiB, where only the total is estimated)
 * rowfleet_due_records{kind}              COMPLETED records due now: the backlog
 * rowfleet_oldest_due_age_seconds{kind}   how long the oldest due record has waited (the lag)
 * rowfleet_records_in_flight              records held under a lease by live workers
 * rowfleet_workers_alive                  workers heard from within 60 s
 * rowfleet_outcomes_last_hour{outcome}    processed, failed, retried, rescued, requeued, replayed in
 *                                         the last hour (rowfleet.stats; requeues and replays by the
 *                                         CLI included, which no long-lived process sees)
 * rowfleet_database_up                    1 when those queries answered, 0 when they failed
 * plus prom-client's process and Node.js metrics (memory, event loop lag, GC), prefixed rowfleet_.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { RECORD_STATUSES } from '../db/schema.ts';
import type { Status } from '../ops/status.ts';

export interface ApiMetrics {
  registry: Registry;
  upserts: Counter<'kind' | 'reason'>;
  upsertSeconds: Histogram<'batch'>;
  requests: Histogram<'method' | 'route' | 'status'>;
  /** Sets the database gauges from a status read for this scrape, or marks the database down. */
  observe(status: Status | undefined): void;
}

export function createApiMetrics(): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rowfleet_' });
  const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Gauge<L>({ name, help, labelNames, registers: [registry] });
  const records = gauge('rowfleet_records', 'Records by kind and status', ['kind', 'status']);
  const due = gauge('rowfleet_due_records', 'COMPLETED records due now, by kind (the backlog)', ['kind']);
  const oldest = gauge('rowfleet_oldest_due_age_seconds', 'How long the oldest due record of each kind has waited', ['kind']);
  const inFlight = gauge('rowfleet_records_in_flight', 'Records held under a lease by live workers');
  const alive = gauge('rowfleet_workers_alive', 'Workers heard from within 60 s');
  const lastHour = gauge('rowfleet_outcomes_last_hour', 'Outcomes in the last hour: processed, failed, retried, rescued, requeued, replayed', ['outcome']);
  const up = gauge('rowfleet_database_up', 'Whether the database answered the status queries of this scrape');
  return {
    registry,
    observe(status) {
      up.set(status === undefined ? 0 : 1);
      if (status === undefined) return;
      // Kinds that are gone must not linger with their last values.
      for (const g of [records, due, oldest]) g.reset();
      for (const k of status.kinds) {
        for (const s of RECORD_STATUSES) {
          const n = k.counts[s];
          if (n !== null) records.set({ kind: k.kind, status: s }, n);
        }
        due.set({ kind: k.kind }, k.due);
        oldest.set({ kind: k.kind }, k.oldestDueAgeSeconds);
      }
      const live = status.workers.filter((w) => w.alive);
      inFlight.set(live.reduce((sum, w) => sum + w.inFlight, 0));
      alive.set(live.length);
      for (const [outcome, n] of Object.entries(status.lastHour)) lastHour.set({ outcome }, n);
    },
    upserts: new Counter({
      name: 'rowfleet_upsert_messages_total',
      help: 'Upsert messages answered, by kind and outcome (applied, stale, conflict, duplicate, message_id_reused)',
      labelNames: ['kind', 'reason'],
      registers: [registry],
    }),
    upsertSeconds: new Histogram({
      name: 'rowfleet_upsert_duration_seconds',
      help: 'The write of a POST /upsert, until its messages are committed (a ?wait not included), single or batch',
      labelNames: ['batch'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    requests: new Histogram({
      name: 'rowfleet_http_request_duration_seconds',
      help: 'HTTP request duration, by method, route and status code',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}
