import { afterEach, describe, expect, it } from 'vitest';
import { pendingMigrations, runMigrations } from '../src/db/migrate.ts';
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
