/**
 * A fleet's GET /metrics (--metrics-port): its workers' metrics summed into one endpoint, asked of
 * each worker over its IPC channel at every scrape (prom-client's AggregatorRegistry: counters and
 * histograms add up; of the process gauges, memory and handles add up), plus the fleet's own:
 *
 * rowfleet_fleet_workers              worker processes running now
 * rowfleet_fleet_worker_restarts_total  workers restarted after dying unasked
 * rowfleet_fleet_workers_scraped      workers whose metrics this scrape includes
 *
 * A worker that restarts starts its counters from zero: the sums drop, which Prometheus's rate()
 * and increase() read as a counter reset. For each worker's own numbers, run workers with
 * --metrics-port each (a Procfile) instead.
 */
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { MetricsText } from '../worker/metrics-server.ts';
import type { Fleet } from './fleet.ts';

/** How long a scrape waits for the workers' answers. */
const ANSWER_WITHIN_MS = 2_000;

export function fleetMetrics(fleet: Fleet): () => Promise<MetricsText> {
  const own = new Registry();
  let scraped = 0;
  new Gauge({ name: 'rowfleet_fleet_workers', help: 'Worker processes running now', registers: [own], collect() { this.set(fleet.pids.length); } });
  new Counter({ name: 'rowfleet_fleet_worker_restarts_total', help: 'Worker processes restarted after dying unasked', registers: [own], collect() { this.reset(); this.inc(fleet.stats.restarts); } });
  new Gauge({ name: 'rowfleet_fleet_workers_scraped', help: 'Workers whose metrics this scrape includes', registers: [own], collect() { this.set(scraped); } });
  return async () => {
    const replies = await fleet.workerMetrics(ANSWER_WITHIN_MS);
    scraped = replies.length;
    const workers = AggregatorRegistry.aggregate(replies);
    const body = `${await workers.metrics()}\n${await own.metrics()}`;
    return { contentType: own.contentType, body };
  };
}
