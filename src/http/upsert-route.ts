import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { MessageError, parseUpsertBody } from '../records/message.ts';
import { presentResult, statusOf, upsertMessages } from '../records/upsert.ts';
import { coalescedCalls, UpsertCoalescer } from '../records/coalescer.ts';
import type { Enqueue, UpsertResult } from '../records/upsert.ts';
import type { ApiMetrics } from './metrics.ts';

/**
 * POST /upsert: `{"id", "data", "version"?, "messageId"?}` (or the Idempotency-Key header), or
 * `{"items": [...]}`. A single message answers 200 (applied or stale), 409 (conflict) or 422
 * (messageId reused); a batch answers 200 with one result per item, in request order.
 */
export function registerUpsertRoute(
  app: FastifyInstance,
  { pool, config, metrics, enqueue }: { pool: pg.Pool; config: Config; metrics: ApiMetrics; enqueue?: Enqueue | undefined },
): void {
  const count = (results: readonly UpsertResult[]) => {
    for (const r of results) metrics.upserts.inc({ reason: 'duplicate' in r && r.duplicate ? 'duplicate' : r.reason });
  };
  const limits = { maxBatch: config.maxBatch, maxDepth: config.maxDepth };
  // Concurrent single messages share calls.
  const coalescer = new UpsertCoalescer(pool, { maxInFlight: coalescedCalls(config.poolSize), maxBatch: config.maxBatch, enqueue });
  app.post('/upsert', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    if (Array.isArray(key)) throw new MessageError('Idempotency-Key', 'must be sent once');
    const { batch, messages } = parseUpsertBody(request.body, limits, key);
    if (batch) {
      const results = await upsertMessages(pool, messages, { enqueue });
      count(results);
      return reply.send({ results: results.map(presentResult) });
    }
    const result = await coalescer.upsert(messages[0]);
    count([result]);
    return reply.code(statusOf(result)).send(presentResult(result));
  });
}
