import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { getRecord } from '../records/read.ts';
import { MAX_ID_LENGTH, MessageError } from '../records/message.ts';
import { sendError } from './server.ts';

/** GET /records/:id, with `?history=1` for its event_log entries in order. */
export function registerRecordRoutes(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  app.get<{ Params: { id: string }; Querystring: { history?: string } }>('/records/:id', async (request, reply) => {
    const { id } = request.params;
    if (id.includes('\u0000') || !id.isWellFormed()) throw new MessageError('id', 'must not contain NUL or unpaired surrogates');
    const history = request.query.history;
    if (history !== undefined && !['1', 'true', '0', 'false'].includes(history)) {
      throw new MessageError('history', 'must be 1 or 0');
    }
    const record = [...id].length > MAX_ID_LENGTH ? undefined : await getRecord(pool, id, { history: history === '1' || history === 'true' });
    if (record === undefined) return sendError(reply, 404, 'not_found', `no record with id ${JSON.stringify(id)}`);
    return record;
  });
}
