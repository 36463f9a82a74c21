/**
 * The Postgres a bench run measures: DATABASE_URL when set, otherwise an embedded Postgres in a
 * fresh temporary home (realistic defaults: fsync on), stopped and deleted at the end. Every bench
 * gets its own freshly created and migrated database on that server, dropped afterwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../../src/config.ts';
import { ensureEmbedded, stopEmbedded } from '../../src/db/embedded.ts';
import { migrateAll } from '../../src/boss/migrate.ts';
import { silentLogger } from '../../src/log.ts';
import { processTree, processesNamed } from './cpu.ts';

export interface BenchPostgres {
  /** Where the server came from, for the report. */
  origin: 'DATABASE_URL' | 'embedded';
  /** Settings that decide what the numbers mean (version, fsync, synchronous_commit, ...). */
  settings: Record<string, string>;
  /** The server's processes, for CPU accounting. */
  pids(): number[];
  /** Creates and migrates a database of its own (rowfleet's schema, pg-boss and its queues, as `rowfleet migrate`); `drop` removes it. */
  createDatabase(prefix: string): Promise<BenchDatabase>;
  stop(): Promise<void>;
}

export interface BenchDatabase {
  url: string;
  drop(): Promise<void>;
}

const REPORTED_SETTINGS = ['server_version', 'fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections', 'max_wal_size'];

export async function startBenchPostgres(progress: (line: string) => void): Promise<BenchPostgres> {
  const fromEnv = process.env.DATABASE_URL?.trim();
  if (fromEnv) {
    progress(`postgres: DATABASE_URL (${redact(fromEnv)})`);
    return describe(fromEnv, 'DATABASE_URL', () => processesNamed('postgres'), async () => {});
  }
  const home = await mkdtemp(path.join(tmpdir(), 'rowfleet-bench-'));
  progress(`postgres: starting an embedded Postgres in ${home}`);
  const server = await ensureEmbedded({ home, log: silentLogger });
  return describe(server.url, 'embedded', () => processTree(server.pid), async () => {
    await stopEmbedded(home, silentLogger);
    await rm(home, { recursive: true, force: true });
  });
}

async function describe(
  adminUrl: string,
  origin: BenchPostgres['origin'],
  pids: () => number[],
  stop: () => Promise<void>,
): Promise<BenchPostgres> {
  const settings = await withClient(adminUrl, async (client) => {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `SELECT name, current_setting(name) AS setting FROM pg_settings WHERE name = ANY ($1) ORDER BY name`,
      [REPORTED_SETTINGS],
    );
    return Object.fromEntries(rows.map((row) => [row.name, row.setting]));
  });
  return {
    origin,
    settings,
    pids,
    stop,
    async createDatabase(prefix) {
      const name = `${prefix}_${process.pid}_${Date.now()}`;
      await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`));
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      // pg-boss too, in its default schema with rowfleet's queues: the boss engine's workers need it.
      await migrateAll(url.href, loadConfig({}).boss, silentLogger);
      return {
        url: url.href,
        drop: () => withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`)).then(() => {}),
      };
    },
  };
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'rowfleet bench' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password !== '') parsed.password = '***';
  return parsed.href;
}
