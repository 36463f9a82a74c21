/**
 * Once per `vitest run`: a Postgres for all test files (TEST_DATABASE_URL, else a fresh embedded
 * one in a temporary home) and a migrated template database that each test file clones (see
 * helpers/database.ts), so migrations run once, not once per file.
 *
 * The template is `rowfleet_template` on the embedded server. On a TEST_DATABASE_URL server it gets
 * a suffix unique to this run and is dropped afterwards, so that two runs sharing one server (two
 * checkouts, two CI jobs) never drop each other's template mid-run.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureEmbedded, stopEmbedded } from '../src/db/embedded.ts';
import { migrateAll } from '../src/boss/migrate.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { databaseUrl, withAdmin } from './helpers/database.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A superuser (or CREATEDB) URL of the test server, for creating and dropping databases. */
    databaseUrl: string;
    /** The migrated database to clone. */
    templateDatabase: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await testServer();
  try {
    await withAdmin(server.adminUrl, (admin) => admin.query(`CREATE DATABASE ${server.template}`));
    // migrateAll closes its connections: CREATE DATABASE ... TEMPLATE fails while anyone is
    // connected to the template. Every test database has pg-boss installed, as after `rowfleet migrate`.
    await migrateAll(databaseUrl(server.adminUrl, server.template), loadConfig({}).boss, silentLogger);
  } catch (err) {
    await server.release();
    throw err;
  }
  project.provide('databaseUrl', server.adminUrl);
  project.provide('templateDatabase', server.template);
  return server.release;
}

/** The server this run uses, the template name to create on it, and how to clean up after. */
async function testServer(): Promise<{ adminUrl: string; template: string; release(): Promise<void> }> {
  const external = process.env.TEST_DATABASE_URL;
  if (external !== undefined && external !== '') {
    const template = `rowfleet_template_${randomBytes(4).toString('hex')}`;
    return {
      adminUrl: external,
      template,
      release: async () => {
        await withAdmin(external, (admin) => admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`));
      },
    };
  }
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-test-'));
  const release = async (): Promise<void> => {
    await stopEmbedded(home, silentLogger);
    await fs.rm(home, { recursive: true, force: true });
  };
  try {
    const first = await ensureEmbedded({ home, log: silentLogger });
    // Two test files at a time, each with its pools, fleets and CLI processes, on one server: the
    // default 100 connections would leave the start-up check of src/db/capacity.ts warning (and
    // the tests that expect a clean log failing) whenever the other file is busy.
    await withAdmin(first.url, (admin) => admin.query(`ALTER SYSTEM SET max_connections = 400`));
    await stopEmbedded(home, silentLogger);
    const { url } = await ensureEmbedded({ home, log: silentLogger });
    return { adminUrl: url, template: 'rowfleet_template', release };
  } catch (err) {
    await release();
    throw err;
  }
}
