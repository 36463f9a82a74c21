/**
 * GET /metrics in the Prometheus text format (prom-client). Each server gets its own registry, so
 * several servers in one process (tests) do not collide.
 *
 * rowfleet_upsert_messages_total{reason}  messages answered, by outcome
 * rowfleet_http_request_duration_seconds  by method, route and status code
 * plus prom-client's process and Node.js metrics (memory, event loop lag, GC), prefixed rowfleet_.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ApiMetrics {
  registry: Registry;
  upserts: Counter<'reason'>;
  requests: Histogram<'method' | 'route' | 'status'>;
}

export function createApiMetrics(): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rowfleet_' });
  return {
    registry,
    upserts: new Counter({
      name: 'rowfleet_upsert_messages_total',
      help: 'Upsert messages answered, by outcome (applied, stale, conflict, duplicate, message_id_reused)',
      labelNames: ['reason'],
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
