import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { MessageError, parseUpsertBody } from '../records/message.ts';
import { statusOf, upsertMessages } from '../records/upsert.ts';
import { coalescedCalls, UpsertCoalescer } from '../records/coalescer.ts';
import { parseWait, presentAnswer, upsertAnswering, type Awaiter } from '../records/await.ts';
import type { Enqueue, UpsertResult } from '../records/upsert.ts';
import type { ApiMetrics } from './metrics.ts';

/**
 * POST /upsert: `{"id", "data", "version"?, "messageId"?}` (or the Idempotency-Key header), or
 * `{"items": [...]}`. A single message answers 200 (applied or stale), 409 (conflict) or 422
 * (messageId reused); a batch answers 200 with one result per item, in request order. With
 * `?wait=10s`, each applied message's answer waits until its version is PROCESSED or FAILED, or
 * the wait runs out, and carries an `outcome` (see src/records/await.ts).
 */
export function registerUpsertRoute(
  app: FastifyInstance,
  { pool, config, metrics, enqueue, awaiter }: { pool: pg.Pool; config: Config; metrics: ApiMetrics; enqueue?: Enqueue | undefined; awaiter: Awaiter },
): void {
  const count = (results: readonly UpsertResult[]) => {
    for (const r of results) metrics.upserts.inc({ kind: r.kind, reason: 'duplicate' in r && r.duplicate ? 'duplicate' : r.reason });
  };
  const limits = { maxBatch: config.maxBatch, maxDepth: config.maxDepth };
  // Concurrent single messages share calls.
  const coalescer = new UpsertCoalescer(pool, { maxInFlight: coalescedCalls(config.poolSize), maxBatch: config.maxBatch, enqueue });
  app.post<{ Querystring: { wait?: string | string[] } }>('/upsert', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    if (Array.isArray(key)) throw new MessageError('Idempotency-Key', 'must be sent once');
    const { wait: rawWait } = request.query;
    if (Array.isArray(rawWait)) throw new MessageError('wait', 'must be given once');
    const waitMs = rawWait === undefined ? undefined : parseWait(rawWait);
    const { batch, messages } = parseUpsertBody(request.body, limits, key);
    const write = () => (batch ? upsertMessages(pool, messages, { enqueue }) : coalescer.upsert(messages[0]).then((r) => [r]));
    const send = async () => {
      const timer = metrics.upsertSeconds.startTimer({ batch: String(batch) });
      const results = await write();
      timer();
      return results;
    };
    const answered = await upsertAnswering(send, waitMs === undefined ? undefined : { awaiter, ms: waitMs });
    count(answered.map((a) => a.result));
    if (batch) return reply.send({ results: answered.map(presentAnswer) });
    return reply.code(statusOf(answered[0]!.result)).send(presentAnswer(answered[0]!));
  });
}
