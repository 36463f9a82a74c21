import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { pendingMigrations } from '../db/migrate.ts';

/** /healthz: the process answers. /readyz: the database answers and its schema is current. */
export function registerHealthRoutes(app: FastifyInstance, { pool }: { pool: pg.Pool }): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (request, reply) => {
    try {
      const pending = await pendingMigrations(pool);
      if (pending > 0) return reply.code(503).send({ status: 'not_ready', reason: `${pending} migration(s) pending; run rowfleet migrate` });
      return { status: 'ready' };
    } catch (err) {
      request.log.warn({ err: { message: (err as Error).message } }, 'readiness check failed');
      return reply.code(503).header('retry-after', '2').send({ status: 'not_ready', reason: 'database unavailable' });
    }
  });
}
