/**
 * A Worker in the test's process on a test database, with a handler (a function or a map of kinds)
 * and quick settings, running until `until` resolves; then stopped and drained.
 */
import { silentLogger } from '../../src/log.ts';
import { handlerFromExport, type HandlerExport } from '../../src/worker/handler.ts';
import { directEngine, type Engine } from '../../src/worker/engine.ts';
import { Worker, type WorkerOptions } from '../../src/worker/worker.ts';
import type { TestDatabase } from './database.ts';

export async function runWorkerUntil(
  db: TestDatabase,
  handler: HandlerExport,
  until: () => Promise<unknown>,
  overrides: Partial<WorkerOptions> = {},
  engine: Engine = directEngine(db.pool),
): Promise<Worker> {
  const worker = new Worker({
    pool: db.pool,
    databaseUrl: db.url,
    engine,
    handler: handlerFromExport(handler, 'test', false),
    log: silentLogger,
    concurrency: 8,
    batch: 8,
    leaseMs: 30_000,
    timeoutMs: 30_000,
    maxAttempts: 5,
    backoff: { baseMs: 0, capMs: 0 },
    maxExpirations: 3,
    pollMs: 50,
    rescueEveryMs: 60_000,
    graceMs: 1_000,
    ...overrides,
  });
  const stop = new AbortController();
  const running = worker.run(stop.signal);
  try {
    await until();
  } finally {
    stop.abort();
    await running;
  }
  return worker;
}
