/**
 * A test file's own database with the surfaces a user meets on it: the HTTP API (driven with
 * `inject`), a library client and the CLI's environment.
 *
 *   let s: Surfaces;
 *   beforeAll(async () => { s = await openSurfaces(); });
 *   afterAll(async () => { await s?.close(); });
 */
import type { FastifyInstance } from 'fastify';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { buildServer } from '../../src/http/server.ts';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/log.ts';
import { createClient, type RowfleetClient } from '../../src/index.ts';

export interface Surfaces {
  db: TestDatabase;
  app: FastifyInstance;
  client: RowfleetClient;
  /** For `rowfleet(env, ...)`. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export async function openSurfaces(): Promise<Surfaces> {
  const db = await createTestDatabase();
  const app = buildServer({ config: loadConfig({}, { databaseUrl: db.url }), pool: db.pool, log: silentLogger });
  const client = createClient({ databaseUrl: db.url, poolSize: 2 });
  return {
    db,
    app,
    client,
    env: { DATABASE_URL: db.url },
    async close() {
      await app.close();
      await client.close();
      await db.drop();
    },
  };
}
