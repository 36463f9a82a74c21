import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { requeue } from '../ops/requeue.ts';
import { REQUEUE_STATUSES, type RequeueStatus } from '../records/requeue.ts';
import { isPlainObject, MessageError, parseKind } from '../records/message.ts';

const FIELDS = ['status', 'kinds', 'ids', 'error', 'all', 'dryRun'] as const;

/**
 * POST /requeue `{"status"?, "kinds"?, "ids"?, "error"?, "all"?, "dryRun"?}`: what `rowfleet requeue`
 * does (src/ops/requeue.ts), for the dashboard and for scripts. FAILED records by default; with no
 * filter the body must say `"all": true`, as the CLI asks for --all. Each requeued record gets a
 * `requeued` event with `via: "api"`. A dry run only counts. Answers `{matched, requeued, dryRun,
 * interrupted}`.
 */
export function registerRequeueRoute(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  app.post('/requeue', async (request) => {
    const body = request.body ?? {};
    if (!isPlainObject(body)) throw new MessageError('body', 'must be a JSON object');
    for (const key of Object.keys(body)) {
      if (!(FIELDS as readonly string[]).includes(key)) throw new MessageError(key, `is not a known field (expected ${FIELDS.join(', ')})`);
    }
    const status = (body.status ?? 'FAILED') as RequeueStatus;
    if (!REQUEUE_STATUSES.includes(status)) throw new MessageError('status', `must be one of ${REQUEUE_STATUSES.join(', ')}, got ${JSON.stringify(body.status)}`);
    const kinds = stringList(body.kinds, 'kinds')?.map((k, i) => parseKind(k, `kinds[${i}]`)!);
    const ids = stringList(body.ids, 'ids');
    if (body.error !== undefined && (typeof body.error !== 'string' || body.error === '')) throw new MessageError('error', 'must be a non-empty string (a POSIX regular expression)');
    for (const flag of ['all', 'dryRun'] as const) {
      if (body[flag] !== undefined && typeof body[flag] !== 'boolean') throw new MessageError(flag, 'must be true or false');
    }
    const filtered = kinds !== undefined || ids !== undefined || body.error !== undefined;
    if (!filtered && body.all !== true) throw new MessageError('all', `must be true to requeue every ${status} record (or give kinds, ids or error)`);
    // A pattern Postgres cannot compile is a MessageError naming `error`: a 400.
    return requeue(pool, { status, kinds, ids, error: body.error as string | undefined, dryRun: body.dryRun === true, via: 'api' });
  });
}

function stringList(raw: unknown, field: string): string[] | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw) || raw.length === 0 || raw.some((v) => typeof v !== 'string' || v === '')) throw new MessageError(field, 'must be a non-empty array of non-empty strings');
  return raw as string[];
}
