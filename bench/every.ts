/**
 * Mode every against mode latest and against pg-boss's own per-key FIFO, in one run on one
 * Postgres: messages per second drained by `rowfleet worker --handler noop` (direct engine).
 *
 * - every: 50,000 server-versioned messages over 5,000 records (10 each) of a kind in mode every,
 *   written through the upsert before the workers see them (one transaction, committed at once:
 *   the clock starts at that commit), each handed to the handler once, in order per record.
 * - latest: 50,000 records of kind default, one message each, the drain bench's backlog.
 * - pg-boss 12: the same 50,000 messages as jobs in a `key_strict_fifo` queue, singletonKey the
 *   record's kind and id (so one job per key is active at a time, in insertion order), drained by
 *   work() with the fastest settings seen on this machine (batchSize 1000, localConcurrency 2,
 *   burstWhenBatchFull), in worker processes of its own.
 * Targets (issue 11): every >= 0.7x latest, and >= 1x pg-boss, at the same process count.
 *
 *   npm run bench -- every [--quick: 1 process only] [--scale 0.1]
 */
import type pg from 'pg';
import type { WorkOptions } from 'pg-boss';
import { setKind } from '../src/records/kinds.ts';
import { drainBoss } from './lib/boss-peer.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { withPool } from './lib/pool.ts';
import { drainDirect, drainRecords, plural, resetRecords, type DrainRow } from './lib/record-drain.ts';

const MESSAGES = 50_000;
const PER_RECORD = 10;
const KIND = 'ledger';
const BATCH = 100;
const PROCESSES = [1, 2] as const;
const BOSS_FIFO: WorkOptions = { batchSize: 1000, localConcurrency: 2, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 };
const TARGETS = { latest: 0.7, boss: 1 };
const UPSERT_CHUNK = 1000;

/** `records` records of KIND in mode every, `PER_RECORD` messages each, released in one commit. */
async function drainEvery(ctx: BenchContext, url: string, processes: number, messages: number): Promise<DrainRow> {
  const records = Math.max(1, Math.round(messages / PER_RECORD));
  return withPool(url, 1, async (pool) => {
    await resetRecords(pool);
    const row = await drainRecords(
      ctx,
      url,
      pool,
      { engine: 'direct', scenario: `every, ${plural(processes)}, ${messages.toLocaleString('en-US')} messages / ${records.toLocaleString('en-US')} records`, backlog: messages, processes, batch: BATCH, concurrency: BATCH * 2 },
      {
        prepare: async (db) => {
          await setKind(db, KIND, { mode: 'every' });
        },
        async release(db: pg.Pool) {
          const client = await db.connect();
          try {
            await client.query('BEGIN');
            for (let round = 1; round <= PER_RECORD; round++) {
              for (let from = 0; from < records; from += UPSERT_CHUNK) {
                const ids = Array.from({ length: Math.min(UPSERT_CHUNK, records - from) }, (_, i) => `m-${from + i}`);
                await client.query('SELECT count(*) FROM rowfleet.upsert_messages($1::text[], $2::text[], $3::jsonb, $4::bigint[], $5::text[], NULL::int[], NULL::timestamptz[])', [
                  ids.map(() => KIND),
                  ids,
                  JSON.stringify(ids.map((id) => ({ id, round }))),
                  ids.map(() => null),
                  ids.map(() => null),
                ]);
              }
            }
            await client.query(`SELECT pg_notify('rowfleet_due', '')`);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK');
            throw err;
          } finally {
            client.release();
          }
          return { commits: 1 };
        },
      },
    );
    // drainRecords counts records; here what is drained is messages.
    const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.event_log WHERE kind = $1 AND applied`, [KIND]);
    const done = (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE kind = $1 AND status = 'PROCESSED'`, [KIND])).rows[0]!.n;
    const handled = done === records ? rows[0]!.n : Number.NaN;
    return { ...row, records: handled, perSecond: Math.round(handled / row.seconds) };
  });
}

export const everyBench: Bench = {
  name: 'every',
  summary: `messages/s in mode every (${MESSAGES.toLocaleString('en-US')} over ${(MESSAGES / PER_RECORD).toLocaleString('en-US')} records) vs mode latest and pg-boss key_strict_fifo`,
  budgetMinutes: 15,
  async run(ctx) {
    const messages = ctx.scaled(MESSAGES, 100);
    const db = await ctx.postgres.createDatabase('rowfleet_bench_every');
    const rows: DrainRow[] = [];
    try {
      for (const processes of ctx.quick ? [1] : PROCESSES) {
        rows.push(await drainEvery(ctx, db.url, processes, messages));
        rows.push(await drainDirect(ctx, db.url, { processes, batch: BATCH, backlog: messages }));
        rows.push(
          ...(await drainBoss(ctx, db.url, [
            { label: 'pg-boss key_strict_fifo, batchSize 1000, localConcurrency 2, burstWhenBatchFull', processes, backlog: messages, options: BOSS_FIFO, strictFifoKeys: Math.round(messages / PER_RECORD) },
          ])),
        );
      }
    } finally {
      await db.drop();
    }
    const verdicts = (ctx.quick ? [1] : PROCESSES).map((processes) => {
      const of = (match: (r: DrainRow) => boolean) => rows.find((r) => r.processes === processes && match(r))!;
      const every = of((r) => r.scenario.startsWith('every'));
      const latest = of((r) => r.engine === 'direct' && !r.scenario.startsWith('every'));
      const boss = of((r) => r.engine === 'pg-boss');
      const vsLatest = every.perSecond / latest.perSecond;
      const vsBoss = every.perSecond / boss.perSecond;
      return { processes, every: every.perSecond, latest: latest.perSecond, boss: boss.perSecond, vsLatest, vsBoss, pass: vsLatest >= TARGETS.latest && vsBoss >= TARGETS.boss };
    });
    const table = renderTable(
      'lrrrrr',
      ['processes', 'every msgs/s', 'latest records/s', 'pg-boss key_strict_fifo jobs/s', `every / latest (>= ${TARGETS.latest})`, `every / pg-boss (>= ${TARGETS.boss})`],
      verdicts.map((v) => [String(v.processes), v.every.toLocaleString('en-US'), v.latest.toLocaleString('en-US'), v.boss.toLocaleString('en-US'), `${v.vsLatest.toFixed(2)}x`, `${v.vsBoss.toFixed(2)}x`]),
    );
    const notes = rows.flatMap((r) => r.notes.map((n) => `${r.scenario}: ${n}`));
    return {
      text: [table, ...notes, verdicts.every((v) => v.pass) ? 'targets met' : 'targets missed'].join('\n'),
      data: { rows, verdicts, targets: TARGETS },
    };
  },
};

if (isMain(import.meta.url)) main([everyBench]);
