import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { MAX_THROUGHPUT_MINUTES, readStatus, readThroughput } from '../ops/status.ts';
import { MessageError, parseKind } from '../records/message.ts';

/**
 * GET /stats: what `rowfleet status --json` prints (counts, due backlog and oldest due age per
 * kind and in all, throughput, the last hour, the workers), read with the same cheap queries.
 * `?kind=order,invoice` (or repeated) narrows it to those kinds, as `status --kind` does.
 */
export function registerStatsRoute(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  app.get<{ Querystring: { kind?: string | string[] } }>('/stats', async (request) => {
    const kinds = parseKinds(request.query.kind);
    return readStatus(pool, { kinds });
  });
  // GET /stats/throughput?minutes=15: outcomes per minute, oldest first (the dashboard's chart).
  app.get<{ Querystring: { minutes?: string | string[] } }>('/stats/throughput', async (request) => {
    const raw = request.query.minutes ?? '15';
    if (Array.isArray(raw) || !/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_THROUGHPUT_MINUTES) {
      throw new MessageError('minutes', `must be an integer from 1 to ${MAX_THROUGHPUT_MINUTES}, got ${JSON.stringify(raw)}`);
    }
    return { minutes: await readThroughput(pool, Number(raw)) };
  });
}

/** `?kind=a,b` or `?kind=a&kind=b`: the kinds, checked; undefined when absent. */
export function parseKinds(raw: string | string[] | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  const listed = (Array.isArray(raw) ? raw : [raw]).flatMap((part) => part.split(',')).map((k) => k.trim());
  if (listed.some((k) => k === '')) throw new MessageError('kind', 'must list kinds separated by commas, like order,invoice');
  return [...new Set(listed.map((k) => parseKind(k)!))];
}
