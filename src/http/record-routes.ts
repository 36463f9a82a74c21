import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { getRecord } from '../records/read.ts';
import { deleteById } from '../records/delete.ts';
import { MAX_ID_LENGTH, MessageError, presentVersion } from '../records/message.ts';
import { sendError } from './server.ts';

const checkId = (id: string) => {
  if (id.includes('\u0000') || !id.isWellFormed()) throw new MessageError('id', 'must not contain NUL or unpaired surrogates');
};

/**
 * GET /records/:id, with `?history=1` for its event_log entries in order; DELETE /records/:id,
 * which leaves a tombstone (src/records/delete.ts). A deleted record is a 404 that says so.
 */
export function registerRecordRoutes(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  app.get<{ Params: { id: string }; Querystring: { history?: string } }>('/records/:id', async (request, reply) => {
    const { id } = request.params;
    checkId(id);
    const history = request.query.history;
    if (history !== undefined && !['1', 'true', '0', 'false'].includes(history)) {
      throw new MessageError('history', 'must be 1 or 0');
    }
    const record = [...id].length > MAX_ID_LENGTH ? undefined : await getRecord(pool, id, { history: history === '1' || history === 'true', deleted: true });
    if (record === undefined) return sendError(reply, 404, 'not_found', `no record with id ${JSON.stringify(id)}`);
    if (record.status === 'DELETED') return sendError(reply, 404, 'not_found', deletedMessage(id, record.version));
    return record;
  });

  app.delete<{ Params: { id: string } }>('/records/:id', async (request, reply) => {
    const { id } = request.params;
    checkId(id);
    const deleted = [...id].length > MAX_ID_LENGTH ? undefined : await deleteById(pool, id);
    if (deleted !== undefined) return { id, deleted: true, version: presentVersion(deleted.version) };
    const tombstone = await getRecord(pool, id, { deleted: true });
    if (tombstone !== undefined) return sendError(reply, 404, 'not_found', deletedMessage(id, tombstone.version));
    return sendError(reply, 404, 'not_found', `no record with id ${JSON.stringify(id)}`);
  });
}

const deletedMessage = (id: string, version: number | string) =>
  `record ${JSON.stringify(id)} was deleted at version ${version}; a message with a newer version creates it again`;
