import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { MessageError, parseUpsertBody } from '../records/message.ts';
import { presentResult, statusOf, upsertMessages } from '../records/upsert.ts';

/**
 * POST /upsert: `{"id", "data", "version"?, "messageId"?}` (or the Idempotency-Key header), or
 * `{"items": [...]}`. A single message answers 200 (applied or stale), 409 (conflict) or 422
 * (messageId reused); a batch answers 200 with one result per item, in request order.
 */
export function registerUpsertRoute(app: FastifyInstance, { pool, config }: { pool: pg.Pool; config: Config }): void {
  const limits = { maxBatch: config.maxBatch, maxDepth: config.maxDepth };
  app.post('/upsert', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    if (Array.isArray(key)) throw new MessageError('Idempotency-Key', 'must be sent once');
    const { batch, messages } = parseUpsertBody(request.body, limits, key);
    const results = await upsertMessages(pool, messages);
    if (batch) return reply.send({ results: results.map(presentResult) });
    const result = results[0]!;
    return reply.code(statusOf(result)).send(presentResult(result));
  });
}
