/**
 * The HTTP contract of DESIGN.md §5: every status code, and every bad input answered with a 4xx
 * that names the problem and writes nothing (I6).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { buildServer } from '../src/http/server.ts';
import { loadConfig, type ConfigOverrides } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { Writable } from 'node:stream';
import pino from 'pino';

let db: TestDatabase;
let app: FastifyInstance;

const serverWith = (overrides: ConfigOverrides = {}, pool: pg.Pool = db.pool) =>
  buildServer({ config: loadConfig({}, { databaseUrl: db.url, ...overrides }), pool, log: silentLogger });

beforeAll(async () => {
  db = await createTestDatabase();
  app = serverWith({ maxBatch: 5, maxBodyBytes: 64 * 1024 });
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});

const post = (body: unknown, headers: Record<string, string> = {}, target = app) =>
  target.inject({
    method: 'POST',
    url: '/upsert',
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });

async function counts(): Promise<{ records: number; events: number }> {
  const { rows } = await db.pool.query(
    `SELECT (SELECT count(*)::int FROM rowfleet.records) AS records, (SELECT count(*)::int FROM rowfleet.event_log) AS events`,
  );
  return rows[0];
}

describe('POST /upsert', () => {
  it('200 applied, 200 stale with currentVersion, 409 conflict', async () => {
    const applied = await post({ id: 'h1', data: { a: 1 }, version: 2 });
    expect(applied.statusCode).toBe(200);
    expect(applied.json()).toEqual({ kind: 'default', id: 'h1', applied: true, version: 2, reason: 'applied' });
    expect(applied.headers['x-request-id']).toBeTruthy();

    const stale = await post({ id: 'h1', data: { a: 0 }, version: 1 });
    expect(stale.statusCode).toBe(200);
    expect(stale.json()).toEqual({ kind: 'default', id: 'h1', applied: false, version: 1, currentVersion: 2, reason: 'stale' });

    const conflict = await post({ id: 'h1', data: { a: 9 }, version: 2 });
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json()).toEqual({ kind: 'default', id: 'h1', applied: false, version: 2, currentVersion: 2, reason: 'conflict' });
  });

  it('assigns a version when none is given, and accepts large versions as strings', async () => {
    const r = await post({ id: 'h2', data: {} });
    expect(r.statusCode).toBe(200);
    expect(typeof r.json().version).toBe('number');
    const big = await post({ id: 'h3', data: {}, version: '9007199254740993' });
    expect(big.json()).toMatchObject({ applied: true, version: '9007199254740993' });
  });

  it('repeats the first response for a repeated messageId (body or Idempotency-Key) and 422s a reuse', async () => {
    const first = await post({ id: 'h4', data: { n: 1 }, messageId: 'k1' });
    const again = await post({ id: 'h4', data: { n: 1 } }, { 'idempotency-key': 'k1' });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual({ ...first.json(), duplicate: true });
    const before = await counts();
    const reused = await post({ id: 'h4', data: { n: 2 }, messageId: 'k1' });
    expect(reused.statusCode).toBe(422);
    expect(reused.json()).toMatchObject({ reason: 'message_id_reused', messageId: 'k1' });
    expect(await counts()).toEqual(before);
  });

  it('repeats a 409 for a repeated conflicting messageId', async () => {
    await post({ id: 'h5', data: { n: 1 }, version: 1 });
    const conflict = await post({ id: 'h5', data: { n: 2 }, version: 1, messageId: 'k2' });
    const again = await post({ id: 'h5', data: { n: 2 }, version: 1, messageId: 'k2' });
    expect(conflict.statusCode).toBe(409);
    expect(again.statusCode).toBe(409);
    expect(again.json()).toEqual({ ...conflict.json(), duplicate: true });
  });

  it('answers a batch with one result per item, in request order', async () => {
    const r = await post({
      items: [
        { id: 'hb', data: { n: 2 }, version: 2 },
        { id: 'hb', data: { n: 1 }, version: 1 },
        { id: 'hc', data: { n: 1 }, version: 1, messageId: 'kb' },
        { id: 'hc', data: { n: 1 }, version: 1, messageId: 'kb' },
        { id: 'hb', data: { n: 3 }, version: 2 },
      ],
    });
    expect(r.statusCode).toBe(200);
    expect(r.json().results).toEqual([
      { kind: 'default', id: 'hb', applied: true, version: 2, reason: 'applied' },
      { kind: 'default', id: 'hb', applied: false, version: 1, currentVersion: 2, reason: 'stale' },
      { kind: 'default', id: 'hc', applied: true, version: 1, reason: 'applied' },
      { kind: 'default', id: 'hc', applied: true, version: 1, reason: 'applied', duplicate: true },
      { kind: 'default', id: 'hb', applied: false, version: 2, currentVersion: 2, reason: 'conflict' },
    ]);
  });
});

describe('bad input: a clear 4xx naming the problem, nothing written', () => {
  const deep = (levels: number) => {
    let v: unknown = {};
    for (let i = 1; i < levels; i++) v = { d: v };
    return v;
  };
  const cases: Array<[string, unknown, number, RegExp, Record<string, string>?]> = [
    ['invalid JSON', '{"id": "x", "data": {', 400, /not valid JSON/],
    ['empty body', '', 400, /empty/],
    ['a JSON array body', '[1,2]', 400, /body must be a JSON object/],
    ['missing id', { data: {} }, 400, /^id is required/],
    ['empty id', { id: '', data: {} }, 400, /^id must not be empty/],
    ['numeric id', { id: 7, data: {} }, 400, /^id must be a string/],
    ['id over 256 characters', { id: 'x'.repeat(257), data: {} }, 400, /^id must be at most 256/],
    ['missing data', { id: 'x' }, 400, /^data is required/],
    ['data not an object', { id: 'x', data: [1] }, 400, /^data must be a JSON object/],
    ['data a string', { id: 'x', data: 'hi' }, 400, /^data must be a JSON object/],
    ['negative version', { id: 'x', data: {}, version: -1 }, 400, /^version must be a positive integer/],
    ['zero version', { id: 'x', data: {}, version: 0 }, 400, /^version must be a positive integer/],
    ['fractional version', { id: 'x', data: {}, version: 1.5 }, 400, /^version must be a positive integer/],
    ['unsafe numeric version', { id: 'x', data: {}, version: 2 ** 60 }, 400, /^version must be a positive integer/],
    ['non-numeric version string', { id: 'x', data: {}, version: '12a' }, 400, /^version must be a positive integer/],
    ['version above bigint', { id: 'x', data: {}, version: '9223372036854775808' }, 400, /^version must be at most/],
    ['boolean version', { id: 'x', data: {}, version: true }, 400, /^version must be a positive integer/],
    ['unknown field', { id: 'x', data: {}, extra: 1 }, 400, /^extra is not a known field/],
    ['NUL in id', { id: 'a\u0000b', data: {} }, 400, /^id must not contain the NUL/],
    ['NUL in a data value', { id: 'x', data: { s: 'a\u0000' } }, 400, /^data\.s must not contain the NUL/],
    ['NUL in a data key', { id: 'x', data: { ['k\u0000']: 1 } }, 400, /must not contain the NUL/],
    ['unpaired surrogate', '{"id":"x","data":{"s":"\\ud800"}}', 400, /unpaired UTF-16 surrogates/],
    ['nesting deeper than 64', { id: 'x', data: deep(65) }, 400, /^data is nested deeper than 64/],
    ['messageId not a string', { id: 'x', data: {}, messageId: 5 }, 400, /^messageId must be a string/],
    ['empty messageId', { id: 'x', data: {}, messageId: '' }, 400, /^messageId must not be empty/],
    ['__proto__ key', '{"id":"x","data":{"__proto__":{"a":1}}}', 400, /./],
    ['constructor.prototype key', '{"id":"x","data":{"constructor":{"prototype":{"polluted":true}}}}', 400, /./],
    ['__proto__ at the top', '{"id":"x","data":{},"__proto__":{"admin":true}}', 400, /./],
    ['5,000-deep JSON', `{"id":"x","data":${'{"d":'.repeat(5_000)}{}${'}'.repeat(5_000)}}`, 400, /^data is nested deeper than 64/],
    ['5,000-deep arrays', `{"id":"x","data":{"a":${'['.repeat(5_000)}${']'.repeat(5_000)}}}`, 400, /^data\.a is nested deeper than 64|^data is nested deeper than 64/],
    ['SQL in kind', { kind: "k'; DROP TABLE rowfleet.records; --", id: 'x', data: {} }, 400, /^kind must/],
    ['SQL in version', { id: 'x', data: {}, version: '1; DROP TABLE rowfleet.records' }, 400, /^version must be a positive integer/],
    ['items not an array', { items: {} }, 400, /^items must be an array/],
    ['empty items', { items: [] }, 400, /^items must hold at least one/],
    ['too many items', { items: Array.from({ length: 6 }, (_, i) => ({ id: `t${i}`, data: {} })) }, 400, /^items holds 6 messages; at most 5/],
    ['a bad item among good ones', { items: [{ id: 'ok', data: {} }, { id: 'ok2', data: {}, version: 'x' }] }, 400, /^items\[1\]\.version/],
    ['a field beside items', { items: [{ id: 'ok', data: {} }], id: 'x' }, 400, /^id is not allowed beside items/],
    ['Idempotency-Key on a batch', { items: [{ id: 'ok', data: {} }] }, 400, /^Idempotency-Key applies to a single message/, { 'idempotency-key': 'k' }],
    ['Idempotency-Key differing from messageId', { id: 'x', data: {}, messageId: 'a' }, 400, /^Idempotency-Key differs/, { 'idempotency-key': 'b' }],
  ];

  it.each(cases)('%s', async (_name, body, status, message, headers) => {
    const before = await counts();
    const r = await post(body, headers);
    expect(r.statusCode).toBe(status);
    expect(r.json().message).toMatch(message);
    expect(await counts()).toEqual(before);
  });

  it('stores SQL metacharacters in ids, messageIds and data verbatim, touching nothing else', async () => {
    const nasty = `x'); DELETE FROM rowfleet.records; -- "\\ $1 %s \u2028`;
    const before = await counts();
    const r = await post({ id: nasty, data: { [nasty]: nasty, n: `'${nasty}'` }, messageId: nasty });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ id: nasty, applied: true });
    const { rows } = await db.pool.query(`SELECT data FROM rowfleet.records WHERE id = $1`, [nasty]);
    expect(rows[0].data).toEqual({ [nasty]: nasty, n: `'${nasty}'` });
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE message_id = $1`, [nasty])).rows[0].n).toBe(1);
    expect(await counts()).toEqual({ records: before.records + 1, events: before.events + 1 });
    const read = await app.inject({ method: 'GET', url: `/records/${encodeURIComponent(nasty)}` });
    expect(read.statusCode).toBe(200);
    expect(read.json()).toMatchObject({ id: nasty });
  });

  it('413 for a 2 MiB body over a real socket, with the default limit (1 MiB), and the server answers the next request', async () => {
    const server = serverWith();
    await server.listen({ port: 0, host: '127.0.0.1' });
    try {
      const url = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
      const before = await counts();
      const big = await fetch(`${url}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'big2', data: { s: 'x'.repeat(2 * 1024 * 1024) } }) });
      expect(big.status).toBe(413);
      expect(await big.json()).toMatchObject({ error: 'payload_too_large' });
      expect(await counts()).toEqual(before);
      const next = await fetch(`${url}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'after-big', data: {} }) });
      expect(next.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('413 for a body over the limit', async () => {
    const before = await counts();
    const r = await post({ id: 'big', data: { s: 'x'.repeat(70 * 1024) } });
    expect(r.statusCode).toBe(413);
    expect(r.json()).toMatchObject({ error: 'payload_too_large' });
    expect(await counts()).toEqual(before);
  });

  it('415 for a body that is not JSON', async () => {
    const r = await app.inject({ method: 'POST', url: '/upsert', headers: { 'content-type': 'text/plain' }, payload: 'hello' });
    expect(r.statusCode).toBe(415);
  });
});

describe('tokens', () => {
  let secured: FastifyInstance;
  beforeAll(() => {
    secured = serverWith({ apiTokens: ['s3cret', 'other-token'] });
  });
  afterAll(() => secured.close());

  it('401 without a token or with a wrong one, nothing written; 200 with either right one', async () => {
    const before = await counts();
    const missing = await post({ id: 'tok', data: {} }, {}, secured);
    expect(missing.statusCode).toBe(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer');
    expect((await post({ id: 'tok', data: {} }, { authorization: 'Bearer nope' }, secured)).statusCode).toBe(401);
    expect((await post({ id: 'tok', data: {} }, { authorization: 'Basic czNjcmV0' }, secured)).statusCode).toBe(401);
    expect(await counts()).toEqual(before);
    expect((await post({ id: 'tok', data: {} }, { authorization: 'Bearer s3cret' }, secured)).statusCode).toBe(200);
    expect((await post({ id: 'tok', data: {} }, { authorization: 'Bearer other-token' }, secured)).statusCode).toBe(200);
  });

  it('keeps /healthz and /readyz open, and guards /records, /stats and /metrics', async () => {
    expect((await secured.inject({ url: '/healthz' })).statusCode).toBe(200);
    expect((await secured.inject({ url: '/readyz' })).statusCode).toBe(200);
    expect((await secured.inject({ url: '/records/tok' })).statusCode).toBe(401);
    expect((await secured.inject({ method: 'DELETE', url: '/records/tok' })).statusCode).toBe(401);
    expect((await db.pool.query(`SELECT status FROM rowfleet.records WHERE id = 'tok'`)).rows[0]).toEqual({ status: 'COMPLETED' });
    expect((await secured.inject({ url: '/metrics' })).statusCode).toBe(401);
    expect((await secured.inject({ url: '/metrics', headers: { authorization: 'Bearer s3cret' } })).statusCode).toBe(200);
    expect((await secured.inject({ url: '/stats' })).statusCode).toBe(401);
    expect((await secured.inject({ url: '/records?status=FAILED' })).statusCode).toBe(401);
    expect((await secured.inject({ url: '/stats', headers: { authorization: 'Bearer s3cret' } })).statusCode).toBe(200);
  });

  it('limits requests without a valid token per address, and valid ones per token: 429 with Retry-After', async () => {
    const limited = serverWith({ apiTokens: ['s3cret', 'other-token'], rateLimitPerAddress: 5, rateLimitPerToken: 8 });
    try {
      const get = (headers: Record<string, string> = {}, url = '/stats') => limited.inject({ url, headers });
      for (let i = 0; i < 5; i++) expect((await get({ authorization: `Bearer wrong-${i}` })).statusCode).toBe(401);
      const refused = await get({ authorization: 'Bearer wrong-again' });
      expect(refused.statusCode).toBe(429);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      expect(refused.json()).toEqual({ error: 'rate_limited', message: expect.stringMatching(/^too many requests from this address without a valid token: at most 5 a minute; retry in \d+ (seconds?|minutes?)$/) });
      expect((await get()).statusCode).toBe(429);
      // The burst of wrong tokens does not lock a valid token out, from the same address.
      for (let i = 0; i < 8; i++) expect((await get({ authorization: 'Bearer s3cret' })).statusCode).toBe(200);
      const over = await get({ authorization: 'Bearer s3cret' });
      expect(over.statusCode).toBe(429);
      expect(over.json().message).toMatch(/^too many requests with this token: at most 8 a minute/);
      expect((await get({ authorization: 'Bearer other-token' })).statusCode).toBe(200);
      // The health checks and the dashboard's files are not counted.
      for (const url of ['/healthz', '/readyz', '/', '/dashboard/dashboard.js']) expect((await get({}, url)).statusCode, url).toBe(200);
    } finally {
      await limited.close();
    }
    // An open API (no tokens) is not limited.
    for (let i = 0; i < 110; i++) expect((await app.inject({ url: '/nope' })).statusCode).toBe(404);
  });

  it('refuses a token in the URL, and logs no query string of any request', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    const logged = buildServer({ config: loadConfig({}, { databaseUrl: db.url, apiTokens: ['s3cret'] }), pool: db.pool, log });
    try {
      for (const url of ['/stats?token=canary-1', '/records/tok?kind=default&access_token=canary-2', '/nope?API_KEY=canary-3', '/?token=canary-4']) {
        const res = await logged.inject({ url, headers: { authorization: 'Bearer s3cret' } });
        expect(res.statusCode, url).toBe(400);
        expect(res.json().message, url).toMatch(/^a token in the URL \(\?\w+=\) is refused: send it as Authorization: Bearer <token>/);
      }
      // Other query strings are not logged either: an unmatched route logs its path.
      expect((await logged.inject({ url: '/nope?secret=canary-5', headers: { authorization: 'Bearer s3cret' } })).statusCode).toBe(404);
      expect((await logged.inject({ url: '/records/tok?kind=default&x=canary-6', headers: { authorization: 'Bearer s3cret' } })).statusCode).toBe(200);
      const all = lines.join('');
      expect(all).toContain('"url":"/nope"');
      expect(all).toContain('"url":"/records/:id"');
      expect(all).not.toMatch(/canary|s3cret/);
    } finally {
      await logged.close();
    }
  });
});

describe('GET /records/:id, health', () => {
  it('returns the record, its history in order with ?history=1, and 404 for an unknown id', async () => {
    await post({ id: 'g1', data: { n: 1 }, version: 1 });
    await post({ id: 'g1', data: { n: 0 }, version: 0 + 1 });
    await post({ id: 'g1', data: { n: 2 }, version: 2 });
    const plain = await app.inject({ url: '/records/g1' });
    expect(plain.statusCode).toBe(200);
    expect(plain.json()).toMatchObject({ id: 'g1', version: 2, status: 'COMPLETED', data: { n: 2 } });
    expect(plain.json().history).toBeUndefined();
    const withHistory = await app.inject({ url: '/records/g1?history=1' });
    expect(withHistory.json().history.map((e: { reason: string; version: number }) => [e.reason, e.version])).toEqual([
      ['applied', 1],
      ['conflict', 1],
      ['applied', 2],
    ]);
    const missing = await app.inject({ url: '/records/nope' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: 'not_found' });
  });

  it('healthz and readyz answer 200 when the database is reachable and migrated', async () => {
    expect((await app.inject({ url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await app.inject({ url: '/readyz' })).json()).toEqual({ status: 'ready' });
  });
});

describe('GET /metrics', () => {
  it('counts upsert outcomes and request durations in the Prometheus format', async () => {
    const server = serverWith();
    try {
      await post({ id: 'met-1', data: {}, version: 2 }, {}, server);
      await post({ id: 'met-1', data: {}, version: 1 }, {}, server);
      await post({ id: 'met-1', data: { x: 1 }, version: 2, messageId: 'met-k' }, {}, server);
      await post({ id: 'met-1', data: { x: 1 }, version: 2, messageId: 'met-k' }, {}, server);
      const r = await server.inject({ url: '/metrics' });
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/plain/);
      expect(r.body).toContain('rowfleet_upsert_messages_total{kind="default",reason="applied"} 1');
      expect(r.body).toContain('rowfleet_upsert_messages_total{kind="default",reason="stale"} 1');
      expect(r.body).toContain('rowfleet_upsert_messages_total{kind="default",reason="conflict"} 1');
      expect(r.body).toContain('rowfleet_upsert_messages_total{kind="default",reason="duplicate"} 1');
      // Every request's write, single messages here (the duplicate is answered by the same write path).
      expect(r.body).toContain('rowfleet_upsert_duration_seconds_count{batch="false"} 4');
      expect(r.body).toMatch(/rowfleet_http_request_duration_seconds_count\{method="POST",route="\/upsert",status="409"\} 2/);
      expect(r.body).toContain('rowfleet_process_resident_memory_bytes');
      // The database's gauges, as `status` reads them.
      const status = (await server.inject({ url: '/stats' })).json();
      const completed = status.kinds.find((k: { kind: string }) => k.kind === 'default').counts.COMPLETED;
      expect(completed).toBeGreaterThan(0);
      expect(r.body).toContain(`rowfleet_records{kind="default",status="COMPLETED"} ${completed}`);
      expect(r.body).toContain('rowfleet_records{kind="default",status="PROCESSING"} 0');
      expect(r.body).toMatch(/^rowfleet_due_records\{kind="default"\} [1-9]\d*$/m);
      expect(r.body).toMatch(/^rowfleet_oldest_due_age_seconds\{kind="default"\} [\d.]+$/m);
      expect(r.body).toContain('rowfleet_workers_alive 0');
      expect(r.body).toContain('rowfleet_records_in_flight 0');
      expect(r.body).toContain('rowfleet_database_up 1');
      expect(r.body).toContain(`rowfleet_outcomes_last_hour{outcome="processed"} ${status.lastHour.processed}`);
      expect(r.body).toContain('rowfleet_outcomes_last_hour{outcome="requeued"} 0');
    } finally {
      await server.close();
    }
  });
});

describe('database unavailable', () => {
  it('503 with Retry-After, for upsert and readyz', async () => {
    // A port nothing listens on: connections are refused at once.
    const deadPool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', connectionTimeoutMillis: 1000 });
    deadPool.on('error', () => {});
    const down = serverWith({}, deadPool);
    try {
      const r = await post({ id: 'down', data: {} }, {}, down);
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBeDefined();
      expect(r.json()).toMatchObject({ error: 'database_unavailable' });
      expect((await down.inject({ url: '/readyz' })).statusCode).toBe(503);
      expect((await down.inject({ url: '/healthz' })).statusCode).toBe(200);
      // /metrics still answers, saying the database is down.
      const metrics = await down.inject({ url: '/metrics' });
      expect(metrics.statusCode).toBe(200);
      expect(metrics.body).toContain('rowfleet_database_up 0');
      expect(metrics.body).toContain('rowfleet_process_resident_memory_bytes');
    } finally {
      await down.close();
      await deadPool.end();
    }
  });
});
