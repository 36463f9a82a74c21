/**
 * Runs a worker from a Config until `signal` aborts: the one place that turns settings into a
 * pool, an engine and a Worker. Used by `rowfleet worker` and by the library's createWorker.
 */
import type { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { resolveDatabaseUrl } from '../db/connect.ts';
import { ensureSchema } from '../boss/migrate.ts';
import { createPool } from '../db/pool.ts';
import { warnIfConnectionsShort } from '../db/capacity.ts';
import { startBoss, stopBoss } from '../boss/boss.ts';
import { bossEngine, directEngine, type Engine } from './engine.ts';
import { anyTransactional, type LoadedHandler } from './handler.ts';
import { Worker, type WorkerStats } from './worker.ts';
import { WorkerMetrics } from './metrics.ts';
import { serveMetrics, type MetricsServer } from './metrics-server.ts';

/** What a fleet sends a worker to ask for its metrics, and the worker's answer (src/fleet/metrics.ts). */
export interface MetricsRequest {
  rowfleet: 'metrics';
  id: number;
}
export interface MetricsReply extends MetricsRequest {
  metrics: unknown[];
}
export const isMetricsRequest = (message: unknown): message is MetricsRequest => (message as MetricsRequest | null)?.rowfleet === 'metrics';

export interface RunWorkerOptions {
  config: Config;
  handler: LoadedHandler;
  log: Logger;
  signal: AbortSignal;
  id?: string;
  /**
   * Called with the Worker as soon as it exists, before it registers: the library reads its
   * `stats` while it runs (they grow as records finish, not only once it has stopped).
   */
  onWorker?: (worker: Worker) => void;
  /** Started by a fleet that serves its workers' metrics: answer its requests on the IPC channel. */
  metricsToFleet?: boolean;
}

export async function runWorker({ config, handler, log, signal, id, onWorker, metricsToFleet = false }: RunWorkerOptions): Promise<WorkerStats> {
  const metrics = config.metricsPort !== undefined || metricsToFleet ? new WorkerMetrics() : undefined;
  // First: a port in use is an error before anything else is started.
  const served: MetricsServer | undefined =
    config.metricsPort === undefined || metrics === undefined
      ? undefined
      : await serveMetrics(async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }), { host: config.host, port: config.metricsPort, log });
  const answer = (message: unknown) => {
    if (!isMetricsRequest(message) || metrics === undefined) return;
    void metrics.registry.getMetricsAsJSON().then((json) => process.send?.({ rowfleet: 'metrics', id: message.id, metrics: json } satisfies MetricsReply));
  };
  if (metricsToFleet) {
    process.on('message', answer);
    // A listener refs the channel again; it must not keep a finished worker alive (src/cli/main.ts).
    process.channel?.unref();
  }
  try {
    return await runWith({ config, handler, log, signal, id, onWorker }, metrics);
  } finally {
    process.off('message', answer);
    await served?.close();
  }
}

async function runWith({ config, handler, log, signal, id, onWorker }: RunWorkerOptions, metrics: WorkerMetrics | undefined): Promise<WorkerStats> {
  const w = config.worker;
  const url = await resolveDatabaseUrl(config, log);
  await ensureSchema(url, config.databaseUrl === undefined, w.engine === 'boss' ? config.boss : undefined);
  // A transactional handler holds a connection for as long as it runs.
  const poolSize = anyTransactional(handler) ? Math.max(config.poolSize, w.concurrency + 2) : config.poolSize;
  const pool = createPool({ connectionString: url, max: poolSize, log, applicationName: 'rowfleet worker' });
  await warnIfConnectionsShort(pool, log, 'this worker', [[`pool ${poolSize} + 1 LISTEN`, poolSize + 1]]);
  let boss: PgBoss | undefined;
  let engine: Engine;
  try {
    if (w.engine === 'boss') {
      boss = await startBoss({ config: config.boss, pool, role: 'worker', log });
      engine = bossEngine(pool, boss, config.boss.queue, config.boss.schema);
    } else {
      engine = directEngine(pool);
    }
  } catch (err) {
    await pool.end();
    throw err;
  }
  const worker = new Worker({
    pool,
    databaseUrl: url,
    engine,
    handler,
    kinds: w.kinds,
    log,
    ...(id !== undefined && { id }),
    concurrency: w.concurrency,
    batch: w.batch,
    leaseMs: w.leaseMs,
    timeoutMs: w.timeoutMs,
    maxAttempts: w.maxAttempts,
    backoff: { baseMs: w.backoffBaseMs, capMs: w.backoffCapMs },
    maxExpirations: w.maxExpirations,
    pollMs: w.pollMs,
    // Often enough that a crashed worker's records wait about half a lease; rarely enough to be free.
    rescueEveryMs: Math.max(1_000, Math.min(w.leaseMs / 2, 10_000)),
    graceMs: w.graceMs,
    metrics,
  });
  try {
    onWorker?.(worker);
    await worker.run(signal);
    return worker.stats;
  } finally {
    if (boss !== undefined) await stopBoss(boss).catch((err) => log.warn({ err: { message: (err as Error).message } }, 'pg-boss did not stop cleanly'));
    await pool.end();
  }
}
