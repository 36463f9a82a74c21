import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { getRecord } from '../records/read.ts';
import { deleteByKey } from '../records/delete.ts';
import { MAX_ID_LENGTH, MessageError, parseKind, presentVersion } from '../records/message.ts';
import { DEFAULT_KIND, type RecordKey } from '../records/key.ts';
import { sendError } from './server.ts';
import { parseKinds } from './stats-route.ts';
import { listRecords, MAX_LIST_LIMIT } from '../ops/list.ts';
import { inspectRecord } from '../ops/inspect.ts';
import type { RecordStatus } from '../db/schema.ts';

/** The record a request names: `:id` and `?kind=` (default `default`), checked. */
function keyOf(params: { id: string }, query: { kind?: string }): RecordKey {
  const { id } = params;
  if (id.includes('\u0000') || !id.isWellFormed()) throw new MessageError('id', 'must not contain NUL or unpaired surrogates');
  return { kind: parseKind(query.kind) ?? DEFAULT_KIND, id };
}

/** `order/17`, or `17` for kind default: how a record is named in messages. */
const named = (key: RecordKey) => JSON.stringify(key.kind === DEFAULT_KIND ? key.id : `${key.kind}/${key.id}`);

/**
 * GET /records/:id?kind=K, with `?history=1` for its event_log entries in order; DELETE
 * /records/:id?kind=K, which leaves a tombstone (src/records/delete.ts). A deleted record is a
 * 404 that says so. `kind` defaults to `default`.
 */
export function registerRecordRoutes(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  // GET /records?status=FAILED&kind=a,b&error=regex&limit=50&cursor=...: a page in key order (src/ops/list.ts).
  // ?recent=1: the most recently changed first, one page (the dashboard's latest failures).
  app.get<{ Querystring: { status?: string; kind?: string | string[]; error?: string; limit?: string; cursor?: string; recent?: string } }>('/records', async (request) => {
    const q = request.query;
    for (const name of ['status', 'error', 'limit', 'cursor', 'recent'] as const) {
      if (Array.isArray(q[name])) throw new MessageError(name, 'must be given once');
    }
    if (q.recent !== undefined && !['1', 'true', '0', 'false'].includes(q.recent)) throw new MessageError('recent', 'must be 1 or 0');
    if (q.limit !== undefined && !/^\d+$/.test(q.limit)) throw new MessageError('limit', `must be an integer from 1 to ${MAX_LIST_LIMIT}, got ${JSON.stringify(q.limit)}`);
    return listRecords(pool, {
      status: q.status as RecordStatus | undefined,
      kinds: parseKinds(q.kind),
      error: q.error,
      limit: q.limit === undefined ? undefined : Number(q.limit),
      cursor: q.cursor,
      recent: q.recent === '1' || q.recent === 'true',
    });
  });

  // GET /records/:id/timeline?kind=K: what `rowfleet inspect` shows (src/ops/inspect.ts), deleted records included.
  app.get<{ Params: { id: string }; Querystring: { kind?: string } }>('/records/:id/timeline', async (request, reply) => {
    const key = keyOf(request.params, request.query);
    const inspection = [...key.id].length > MAX_ID_LENGTH ? undefined : await inspectRecord(pool, key);
    if (inspection === undefined) return sendError(reply, 404, 'not_found', `no record ${named(key)}${kindHint(key)}`);
    return inspection;
  });

  app.get<{ Params: { id: string }; Querystring: { history?: string; kind?: string } }>('/records/:id', async (request, reply) => {
    const key = keyOf(request.params, request.query);
    const history = request.query.history;
    if (history !== undefined && !['1', 'true', '0', 'false'].includes(history)) {
      throw new MessageError('history', 'must be 1 or 0');
    }
    const record = [...key.id].length > MAX_ID_LENGTH ? undefined : await getRecord(pool, key, { history: history === '1' || history === 'true', deleted: true });
    if (record === undefined) return sendError(reply, 404, 'not_found', `no record ${named(key)}${kindHint(key)}`);
    if (record.status === 'DELETED') return sendError(reply, 404, 'not_found', deletedMessage(key, record.version));
    return record;
  });

  app.delete<{ Params: { id: string }; Querystring: { kind?: string } }>('/records/:id', async (request, reply) => {
    const key = keyOf(request.params, request.query);
    const deleted = [...key.id].length > MAX_ID_LENGTH ? undefined : await deleteByKey(pool, key);
    if (deleted !== undefined) return { kind: key.kind, id: key.id, deleted: true, version: presentVersion(deleted.version) };
    const tombstone = await getRecord(pool, key, { deleted: true });
    if (tombstone !== undefined) return sendError(reply, 404, 'not_found', deletedMessage(key, tombstone.version));
    return sendError(reply, 404, 'not_found', `no record ${named(key)}${kindHint(key)}`);
  });
}

const kindHint = (key: RecordKey) => (key.kind === DEFAULT_KIND ? ' of kind default (add ?kind= for another kind)' : '');

const deletedMessage = (key: RecordKey, version: number | string) =>
  `record ${named(key)} was deleted at version ${version}; a message with a newer version creates it again`;
