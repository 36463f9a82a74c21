/**
 * Mode every, property-based: random interleavings of senders (batches of server-versioned
 * messages to a few records, sent concurrently), workers claiming, completing, failing (a retry)
 * and crashing (their leases left to expire on the injected clock, then rescued), against a real
 * Postgres, checked against a model of per-key FIFO:
 * - every claim, and every completion that chains (hands the record's next message straight back
 *   to its worker), hands out, for its record, the oldest applied message not yet completed;
 * - no record is handed out while another worker holds it under an unexpired lease (I3);
 * - a message is handed out again only after its holder failed it, crashed or lost the lease;
 * - after a drain, every applied message was completed, and each record's first completions are
 *   in version order (I7); the record is PROCESSED at its newest version.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { upsertMessages } from '../src/records/upsert.ts';
import { claimDue, type Claimed } from '../src/records/claim.ts';
import { completeChaining, fail } from '../src/records/settle.ts';
import { rescueExpired } from '../src/records/rescue.ts';
import { setKind } from '../src/records/kinds.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ poolSize: 8 });
});
afterAll(async () => {
  await db?.drop();
});

const LEASE = 1_000;
const KEYS = 3;
const WORKERS = 3;

type Op =
  | { op: 'send'; batches: number[][] }
  | { op: 'claim'; worker: number; limit: number }
  | { op: 'complete'; worker: number; pick: number; chain: boolean }
  | { op: 'fail'; worker: number; pick: number }
  | { op: 'crash'; worker: number }
  | { op: 'advance'; ms: number };

const key = fc.integer({ min: 0, max: KEYS - 1 });
const worker = fc.integer({ min: 0, max: WORKERS - 1 });
const genOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('send' as const), batches: fc.array(fc.array(key, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('claim' as const), worker, limit: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('complete' as const), worker, pick: fc.nat(), chain: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fail' as const), worker, pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('crash' as const), worker }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 100, max: 1_500 }) }) },
);

interface Held {
  claimed: Claimed;
  expiresAt: number;
}

let run = 0;

describe('mode every, property-based', () => {
  it('is per-key FIFO with one holder at a time, through failures, crashes and expired leases', { timeout: 240_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(genOp, { minLength: 5, maxLength: 45 }), async (ops) => {
        run += 1;
        const kind = `prop${run}`;
        await setKind(db.pool, kind, { mode: 'every' });
        const t0 = Date.now() + 60_000;
        let t = 0;
        const at = () => new Date(t0 + t);
        /** Applied versions per record, in order (server-assigned: the order they reached the database). */
        const applied = new Map<string, bigint[]>();
        /** Completed versions per record, in completion order (repeats included). */
        const completions = new Map<string, bigint[]>();
        const held: Held[][] = Array.from({ length: WORKERS }, () => []);
        /** Leases of crashed workers: nobody completes them, and they hold their records until they expire. */
        const ghosts: Held[] = [];
        /** Messages whose last holder failed, crashed or lost its lease: they may be handed out again. */
        const mayRepeat = new Set<string>();
        const handedOut = new Set<string>();
        const done = (id: string) => new Set(completions.get(id) ?? []);

        /** A message handed to worker w, by a claim or by the completion of the one before (chained). */
        const receive = (w: number, got: readonly Claimed[]) => {
          for (const c of got) {
            const version = BigInt(c.version);
            // One holder: no live lease on this record in the model.
            const holder = [...held, ghosts].findIndex((hs) => hs.some((h) => h.claimed.id === c.id && h.expiresAt > t));
            expect(holder, `${c.id} handed to w${w} while ${holder === WORKERS ? 'a crashed worker' : `w${holder}`} holds it`).toBe(-1);
            // The oldest applied message not yet completed.
            const pending = (applied.get(c.id) ?? []).filter((v) => !done(c.id).has(v));
            expect(version, `${c.id}: handed out ${version}, oldest pending ${pending[0]}`).toBe(pending[0]);
            const mk = `${c.id}@${version}`;
            if (handedOut.has(mk)) expect(mayRepeat.has(mk), `${mk} handed out again without a failure, crash or expiry`).toBe(true);
            handedOut.add(mk);
            mayRepeat.delete(mk);
            expect(c.seq).not.toBeNull();
            held[w]!.push({ claimed: c, expiresAt: t + LEASE });
          }
        };
        const claim = async (w: number, limit: number) => {
          receive(w, await claimDue(db.pool, { owner: `w${w}`, limit, leaseMs: LEASE, kinds: [{ kind, cap: limit, leaseMs: LEASE }], now: at() }));
        };
        const take = (w: number, pick: number): Held | undefined => {
          const hs = held[w]!;
          if (hs.length === 0) return undefined;
          return hs.splice(pick % hs.length, 1)[0];
        };
        const expireDue = () => {
          for (const hs of [...held, ghosts]) {
            for (let i = hs.length - 1; i >= 0; i--) {
              if (hs[i]!.expiresAt <= t) {
                mayRepeat.add(`${hs[i]!.claimed.id}@${hs[i]!.claimed.version}`);
                hs.splice(i, 1);
              }
            }
          }
        };

        for (const op of ops) {
          if (op.op === 'send') {
            // Concurrent calls: the database decides the order, and assigns the versions in it.
            const results = await Promise.all(op.batches.map((b) => upsertMessages(db.pool, b.map((k) => ({ kind, id: `k${k}`, data: { k } })))));
            // A version is taken as a call reaches the database, before its row locks: a call that
            // took a lower one and commits after a higher one is stale, refused, and never handed out.
            for (const r of results.flat()) {
              if (r.applied) applied.set(r.id, [...(applied.get(r.id) ?? []), BigInt(r.version)]);
              else expect(r.reason).toBe('stale');
            }
            for (const [id, vs] of applied) applied.set(id, [...vs].sort((a, b) => (a < b ? -1 : 1)));
          } else if (op.op === 'claim') {
            await claim(op.worker, op.limit);
          } else if (op.op === 'complete' || op.op === 'fail') {
            const h = take(op.worker, op.pick);
            if (h === undefined) continue;
            const live = h.expiresAt > t;
            const mk = `${h.claimed.id}@${h.claimed.version}`;
            if (op.op === 'complete') {
              const completed = (await completeChaining(db.pool, [{ ...h.claimed, result: { v: h.claimed.version }, chainLeaseMs: op.chain ? LEASE : null }], at())).get(`${kind}/${h.claimed.id}`)!;
              const { outcome } = completed;
              if (live) {
                expect(op.chain ? ['processed', 'advanced', 'chained'] : ['processed', 'advanced']).toContain(outcome);
                completions.set(h.claimed.id, [...(completions.get(h.claimed.id) ?? []), BigInt(h.claimed.version)]);
                // Chained: the next message, to the same worker, checked as a claim's.
                if (outcome === 'chained') receive(op.worker, [completed.next!]);
              } else {
                expect(outcome).toBe('lost');
                mayRepeat.add(mk);
              }
            } else {
              const outcome = await fail(db.pool, { ...h.claimed, error: 'x', permanent: false, maxAttempts: 1_000, backoffMs: 0 }, at());
              expect(outcome).toBe(live ? 'retry' : 'lost');
              mayRepeat.add(mk);
            }
          } else if (op.op === 'crash') {
            // Its leases expire on their own; rescue returns them.
            for (const h of held[op.worker]!.splice(0)) {
              mayRepeat.add(`${h.claimed.id}@${h.claimed.version}`);
              ghosts.push(h);
            }
          } else {
            t += op.ms;
            expireDue();
            await rescueExpired(db.pool, { maxExpirations: 1_000, now: at() });
          }
        }

        // Drain: past every lease, rescue, then one worker claims and completes until nothing is left
        // (every other run chaining its completions, as a worker does).
        t += LEASE + 1;
        expireDue();
        await rescueExpired(db.pool, { maxExpirations: 1_000, now: at() });
        const chainDrain = run % 2 === 0;
        for (let rounds = 0; rounds < 500; rounds++) {
          if (held[0]!.length === 0) await claim(0, 5);
          const hs = held[0]!.splice(0);
          if (hs.length === 0) break;
          for (const h of hs) {
            const completed = (await completeChaining(db.pool, [{ ...h.claimed, result: { v: h.claimed.version }, chainLeaseMs: chainDrain ? LEASE : null }], at())).get(`${kind}/${h.claimed.id}`)!;
            expect(chainDrain ? ['processed', 'advanced', 'chained'] : ['processed', 'advanced']).toContain(completed.outcome);
            completions.set(h.claimed.id, [...(completions.get(h.claimed.id) ?? []), BigInt(h.claimed.version)]);
            if (completed.outcome === 'chained') receive(0, [completed.next!]);
          }
        }

        for (const [id, versions] of applied) {
          const firsts = [...new Set(completions.get(id) ?? [])];
          // Every applied message completed, first completions in version order.
          expect(firsts, id).toEqual(versions);
          const { rows } = await db.pool.query(`SELECT status, version, processed_version, next_seq FROM rowfleet.records WHERE kind = $1 AND id = $2`, [kind, id]);
          expect(rows[0]).toEqual({ status: 'PROCESSED', version: String(versions.at(-1)), processed_version: String(versions.at(-1)), next_seq: null });
        }
      }),
      { numRuns: 40 },
    );
  });
});
