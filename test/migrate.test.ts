import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { afterEach, describe, expect, it } from 'vitest';
import { MIGRATIONS_FOLDER, pendingMigrations, runMigrations } from '../src/db/migrate.ts';
import { claimDue } from '../src/records/claim.ts';
import { complete } from '../src/records/settle.ts';
import { createEmptyDatabase, type TestDatabase } from './helpers/database.ts';

describe('runMigrations', () => {
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it('applies every migration to an empty database, then nothing', async () => {
    db = await createEmptyDatabase();
    const first = await runMigrations(db.url);
    expect(first.total).toBeGreaterThan(0);
    expect(first.applied).toBe(first.total);
    expect(await runMigrations(db.url)).toEqual({ applied: 0, total: first.total });
    expect(await pendingMigrations(db.pool)).toBe(0);
  });

  it('lets two processes migrate the same empty database at once: one applies, the other finds it done', async () => {
    db = await createEmptyDatabase();
    const results = await Promise.all([runMigrations(db.url), runMigrations(db.url)]);
    const total = results[0]!.total;
    expect(results.map((r) => r.applied).sort()).toEqual([0, total]);

    const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM rowfleet.migrations');
    expect(rows[0]!.n).toBe(total);
    const tables = await db.pool.query<{ name: string }>(
      `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'rowfleet' ORDER BY 1`,
    );
    expect(tables.rows.map((r) => r.name)).toEqual(expect.arrayContaining(['event_log', 'migrations', 'records']));
  });
});

describe('upgrading a database written before kinds (0011_kinds)', () => {
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it('keeps every record and event, as kind default, and they work as before', async () => {
    db = await createEmptyDatabase();
    // The package as it was before kinds: its migrations up to 0010.
    const before = fs.mkdtempSync(path.join(os.tmpdir(), 'rowfleet-before-kinds-'));
    try {
      fs.mkdirSync(path.join(before, 'meta'));
      const journal = JSON.parse(fs.readFileSync(path.join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string }[] };
      const kept = journal.entries.slice(0, journal.entries.findIndex((e) => e.tag === '0011_kinds'));
      fs.writeFileSync(path.join(before, 'meta', '_journal.json'), JSON.stringify({ ...journal, entries: kept }));
      for (const e of kept) fs.copyFileSync(path.join(MIGRATIONS_FOLDER, `${e.tag}.sql`), path.join(before, `${e.tag}.sql`));
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        await client.query(`SET client_min_messages = warning`);
        await migrate(drizzle(client), { migrationsFolder: before, migrationsSchema: 'rowfleet', migrationsTable: 'migrations' });
      } finally {
        await client.end();
      }
    } finally {
      fs.rmSync(before, { recursive: true, force: true });
    }
    // Written through that version's functions: applied, stale, a FAILED one.
    await db.pool.query(`SELECT * FROM rowfleet.upsert_messages(ARRAY['old-1', 'old-2', 'old-1'], '[{"n": 1}, {"n": 2}, {"n": 0}]', ARRAY[2, 1, 1]::bigint[], ARRAY['m-1', NULL, NULL])`);
    await db.pool.query(`UPDATE rowfleet.records SET status = 'FAILED', last_error = 'boom' WHERE id = 'old-2'`);
    const recordsBefore = (await db.pool.query(`SELECT id, version, data, status, last_error FROM rowfleet.records ORDER BY id`)).rows;
    const eventsBefore = (await db.pool.query(`SELECT seq, record_id, version, reason, message_id FROM rowfleet.event_log ORDER BY seq`)).rows;
    expect(recordsBefore).toHaveLength(2);
    expect(eventsBefore).toHaveLength(3);

    expect((await runMigrations(db.url)).applied).toBeGreaterThanOrEqual(1);
    expect((await db.pool.query(`SELECT kind, id, version, data, status, last_error FROM rowfleet.records ORDER BY id`)).rows).toEqual(recordsBefore.map((r) => ({ kind: 'default', ...r })));
    expect((await db.pool.query(`SELECT kind, seq, record_id, version, reason, message_id FROM rowfleet.event_log ORDER BY seq`)).rows).toEqual(eventsBefore.map((e) => ({ kind: 'default', ...e })));
    // The same message id again is still a duplicate; the record is claimable and completes.
    const [again] = (await db.pool.query(`SELECT * FROM rowfleet.upsert_message('default', 'old-1', '{"n": 1}', 2, 'm-1', NULL, NULL)`)).rows;
    expect(again).toMatchObject({ duplicate: true, reused: false });
    const claimed = await claimDue(db.pool, { owner: 'w', limit: 10, leaseMs: 60_000 });
    expect(claimed.map((c) => [c.kind, c.id])).toEqual([['default', 'old-1']]);
    expect((await complete(db.pool, claimed.map((c) => ({ ...c, result: null })))).get('default/old-1')).toBe('processed');
  });
});
