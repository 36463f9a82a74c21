/**
 * Where this process's Postgres is: DATABASE_URL when set, otherwise the embedded Postgres of this
 * checkout (`<home>/pg`), started on demand and shared by every rowfleet process using that home.
 */
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { ensureEmbedded } from './embedded.ts';

export async function resolveDatabaseUrl(config: Config, log: Logger): Promise<string> {
  if (config.databaseUrl !== undefined) return config.databaseUrl;
  const server = await ensureEmbedded({ home: config.home, relocate: !config.homeChosen, log });
  return server.url;
}
