/**
 * What the dashboard reads and does over HTTP: outcomes per minute (GET /stats/throughput), the
 * latest failures (GET /records?recent=1), a record's timeline (GET /records/:id/timeline, the same
 * as `rowfleet inspect`), and requeue (POST /requeue: a dry run counts, a requeue is audited with
 * via "api", bad input is a 400 naming the field with nothing changed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { runWorkerUntil } from './helpers/worker.ts';
import { waitFor } from './helpers/wait.ts';
import { inspectRecord } from '../src/ops/inspect.ts';
import { buildServer } from '../src/http/server.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';

let s: Surfaces;
const get = (url: string) => s.app.inject({ method: 'GET', url });
const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object });
const statuses = async () =>
  Object.fromEntries((await s.db.pool.query<{ k: string; status: string }>(`SELECT kind || '/' || id AS k, status FROM rowfleet.records ORDER BY 1`)).rows.map((r) => [r.k, r.status]));

beforeAll(async () => {
  s = await openSurfaces();
  const items = [
    ...Array.from({ length: 5 }, (_, i) => ({ kind: 'd.order', id: `ok-${i}`, data: { i } })),
    ...Array.from({ length: 3 }, (_, i) => ({ kind: 'd.order', id: `bad-${i}`, data: { i } })),
    { kind: 'd.mail', id: 'bad-m', data: {} },
  ];
  expect((await post('/upsert', { items })).statusCode).toBe(200);
  const failing = async (record: { id: string }) => {
    if (record.id.startsWith('bad')) throw new Error(`refused ${record.id}`);
    return { ok: true };
  };
  await runWorkerUntil(s.db, failing, () =>
    waitFor(async () => Object.values(await statuses()).every((st) => st === 'PROCESSED' || st === 'FAILED'), 20_000, 'every record settled'),
  { maxAttempts: 1 });
  // bad-1 fails last: change it again so that its updated_at is the newest.
  await s.db.pool.query(`UPDATE rowfleet.records SET updated_at = now() + interval '1 second' WHERE id = 'bad-1'`);
});
afterAll(async () => {
  await s?.close();
});

describe('GET /stats/throughput', () => {
  it('gives the outcomes of each of the last minutes, oldest first, zeros filled in', async () => {
    const res = await get('/stats/throughput?minutes=15');
    expect(res.statusCode, res.body).toBe(200);
    const { minutes } = res.json() as { minutes: { at: string; processed: number; failed: number }[] };
    expect(minutes).toHaveLength(15);
    const starts = minutes.map((m) => Date.parse(m.at));
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBe(60_000);
    expect(minutes.reduce((n, m) => n + m.processed, 0)).toBe(5);
    expect(minutes.reduce((n, m) => n + m.failed, 0)).toBe(4);
    expect((await get('/stats/throughput')).json().minutes).toHaveLength(15);
  });

  it('refuses a bad number of minutes, naming it', async () => {
    for (const bad of ['0', '1441', 'x', '1.5']) {
      const res = await get(`/stats/throughput?minutes=${bad}`);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ field: 'minutes' });
    }
  });
});

describe('GET /records?recent=1', () => {
  it('lists the latest failures first, with their errors, in one page', async () => {
    const res = await get('/records?status=FAILED&recent=1&limit=2');
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json() as { records: { id: string; lastError: string }[]; nextCursor: string | null };
    expect(page.records.map((r) => r.id)[0]).toBe('bad-1');
    expect(page.records).toHaveLength(2);
    expect(page.records[0]!.lastError).toBe('refused bad-1');
    expect(page.nextCursor).toBeNull();
    const mail = (await get('/records?status=FAILED&recent=1&kind=d.mail')).json() as { records: { id: string }[] };
    expect(mail.records.map((r) => r.id)).toEqual(['bad-m']);
  });

  it('needs a status and takes no cursor', async () => {
    expect((await get('/records?recent=1')).json()).toMatchObject({ field: 'status' });
    expect((await get('/records?status=FAILED&recent=1&cursor=WyJhIiwiYiJd')).json()).toMatchObject({ field: 'cursor' });
    expect((await get('/records?status=FAILED&recent=yes')).json()).toMatchObject({ field: 'recent' });
  });
});

describe('GET /records/:id/timeline', () => {
  it('answers what rowfleet inspect shows', async () => {
    const res = await get('/records/bad-0/timeline?kind=d.order');
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { timeline: { what: string; summary: string }[] };
    expect(body.timeline.map((t) => t.what)).toEqual(['applied', 'failed']);
    expect(body.timeline[1]!.summary).toContain('refused bad-0');
    expect(body).toEqual(JSON.parse(JSON.stringify(await inspectRecord(s.db.pool, { kind: 'd.order', id: 'bad-0' }))));
  });

  it('is a 404 naming the record when there is none', async () => {
    const res = await get('/records/nope/timeline?kind=d.order');
    expect(res.statusCode).toBe(404);
    expect(res.json().message).toBe('no record "d.order/nope"');
  });
});

describe('POST /requeue', () => {
  it('refuses bad input with a 400 naming the field, and changes nothing', async () => {
    const before = await statuses();
    const cases: [unknown, string][] = [
      [{}, 'all'],
      [{ status: 'COMPLETED', all: true }, 'status'],
      [{ kinds: 'd.order' }, 'kinds'],
      [{ kinds: ['Bad Kind!'] }, 'kinds[0]'],
      [{ error: '(' }, 'error'],
      [{ all: 'yes' }, 'all'],
      [{ all: true, force: true }, 'force'],
      [[1], 'body'],
    ];
    for (const [body, field] of cases) {
      const res = await post('/requeue', body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json(), JSON.stringify(body)).toMatchObject({ error: 'invalid_request', field });
    }
    expect(await statuses()).toEqual(before);
  });

  it('counts in a dry run, then requeues what the filter matches, each audited as via api', async () => {
    expect((await post('/requeue', { all: true, dryRun: true })).json()).toEqual({ matched: 4, requeued: 0, dryRun: true, interrupted: false });
    expect((await post('/requeue', { kinds: ['d.order'], error: 'bad-[01]$', dryRun: true })).json()).toMatchObject({ matched: 2 });
    const res = await post('/requeue', { kinds: ['d.order'], error: 'bad-[01]$' });
    expect(res.json()).toEqual({ matched: 2, requeued: 2, dryRun: false, interrupted: false });
    const after = await statuses();
    expect([after['d.order/bad-0'], after['d.order/bad-1'], after['d.order/bad-2'], after['d.mail/bad-m']]).toEqual(['COMPLETED', 'COMPLETED', 'FAILED', 'FAILED']);
    const { rows } = await s.db.pool.query(`SELECT record_id, detail FROM rowfleet.event_log WHERE reason = 'requeued' ORDER BY record_id`);
    expect(rows).toEqual([
      { record_id: 'bad-0', detail: { from: 'FAILED', lastError: 'refused bad-0', via: 'api' } },
      { record_id: 'bad-1', detail: { from: 'FAILED', lastError: 'refused bad-1', via: 'api' } },
    ]);
    // Again: nothing left to move.
    expect((await post('/requeue', { kinds: ['d.order'], error: 'bad-[01]$' })).json()).toMatchObject({ matched: 0, requeued: 0 });
    expect((await post('/requeue', { all: true })).json()).toMatchObject({ matched: 2, requeued: 2 });
    // Counted where status, the chart and the API's metrics read them.
    expect((await get('/stats')).json().lastHour).toMatchObject({ requeued: 4, failed: 4 });
    const minutes = (await get('/stats/throughput?minutes=5')).json().minutes as { requeued: number }[];
    expect(minutes.reduce((n, m) => n + m.requeued, 0)).toBe(4);
  });

  it('is refused without a token when tokens are set', async () => {
    const app = buildServer({ config: loadConfig({ ROWFLEET_API_TOKENS: 'secret-1' }, { databaseUrl: s.db.url }), pool: s.db.pool, log: silentLogger });
    try {
      expect((await app.inject({ method: 'POST', url: '/requeue', payload: { all: true } })).statusCode).toBe(401);
      const ok = await app.inject({ method: 'POST', url: '/requeue', payload: { all: true, dryRun: true }, headers: { authorization: 'Bearer secret-1' } });
      expect(ok.statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});
