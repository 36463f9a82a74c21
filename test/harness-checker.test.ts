/**
 * The fault suite's checker (test/harness/checker.ts) must fail when the history is wrong: each
 * violation it exists to find, planted in an otherwise clean history, is counted where it belongs.
 * (A checker that passes everything would make every fault scenario pass.)
 */
import { describe, expect, it } from 'vitest';
import { check, type AttemptRow, type EventRow, type History, type RecordRow } from './harness/checker.ts';
import type { Answer, Operation } from './harness/workload.ts';

const answer = (applied: boolean, reason = applied ? 'applied' : 'stale', version = '1'): Answer => ({ status: 200, applied, reason, version, duplicate: false });
const op = (id: string, version: string, messageId: string, a: Answer | undefined): Operation => ({
  client: 0, id, version, messageId, data: {}, sentAt: 0, answers: a === undefined ? [] : [a], tries: 1, outcome: a === undefined ? 'unknown' : 'acknowledged',
});
const event = (seq: number, id: string, version: string, applied: boolean, messageId: string): EventRow => ({ seq: String(seq), record_id: id, version, applied, reason: applied ? 'applied' : 'stale', message_id: messageId });
const processed = (id: string, version: string): RecordRow => ({ id, version, status: 'PROCESSED', processed_version: version, last_error: null, result: { fence: 1 } });
const attempt = (id: string, version: string, fence: number, start: number, end: number, effect: AttemptRow['effect'] = 'applied'): AttemptRow => ({
  key: `default:${id}:${version}`, record_id: id, version, fence: String(fence), pid: 1, started_ms: String(start), ended_ms: String(end), effect,
});

/** a: v1 then v2 applied; b: v1 applied, then a stale v0 refused. All processed, one effect each. */
function clean(): History {
  return {
    ops: [op('a', '1', 'm1', answer(true, 'applied', '1')), op('a', '2', 'm2', answer(true, 'applied', '2')), op('b', '1', 'm3', answer(true)), op('b', '0', 'm4', answer(false, 'stale', '0'))],
    resent: new Map(),
    events: [event(1, 'a', '1', true, 'm1'), event(2, 'a', '2', true, 'm2'), event(3, 'b', '1', true, 'm3'), event(4, 'b', '0', false, 'm4')],
    records: [processed('a', '2'), processed('b', '1')],
    attempts: [attempt('a', '2', 1, 0, 10), attempt('b', '1', 1, 0, 10)],
    local: [{ key: 'default:a:2' }, { key: 'default:b:1' }],
    poison: new Set(),
  };
}

const counts = (h: History) => {
  const v = check(h);
  return { lost: v.lost, duplicated: v.duplicated, unexpected: v.unexpected, staleOverwrites: v.staleOverwrites };
};
const none = { lost: 0, duplicated: 0, unexpected: 0, staleOverwrites: 0 };

describe('the fault suite checker', () => {
  it('passes a clean history, and counts what it saw', () => {
    const v = check(clean());
    expect(counts(clean())).toEqual(none);
    expect(v).toMatchObject({ operations: 4, acknowledged: 4, unknown: 0, reExecutions: 0 });
  });

  const planted: Array<[string, (h: History) => void, Partial<typeof none>]> = [
    // Missing m2: the record also holds a version its log never applied.
    ['an acknowledged message missing from event_log', (h) => h.events.splice(1, 1), { lost: 1, unexpected: 1 }],
    // The copy comes after v2 in seq order: v1 applied again, and the log's last version is not the record's.
    ['a message logged twice', (h) => h.events.push({ ...h.events[0]!, seq: '9' }), { duplicated: 1, staleOverwrites: 1, unexpected: 1 }],
    ['a message nobody sent', (h) => h.events.push(event(9, 'b', '5', false, 'm-ghost')), { unexpected: 1 }],
    ['a duplicate answered differently from the first', (h) => h.resent.set('m1', answer(false, 'stale', '1')), { unexpected: 1 }],
    // Back at v1: below the acknowledged v2, not its log's last version, and without v1's effects.
    ['a record holding less than its highest acknowledged version', (h) => (h.records[0]!.version = '1', h.records[0]!.processed_version = '1'), { staleOverwrites: 1, unexpected: 1, lost: 2 }],
    ['versions applied out of seq order', (h) => (h.events[0]!.seq = '5'), { staleOverwrites: 1, unexpected: 1 }],
    ['a record left COMPLETED', (h) => (h.records[1]!.status = 'COMPLETED'), { lost: 1 }],
    ['a processed record without its effect', (h) => h.attempts.splice(1, 1), { lost: 1 }],
    ['an effect applied twice for one key', (h) => h.attempts.push(attempt('b', '1', 2, 20, 30)), { duplicated: 1 }],
    ['a transactional effect committed twice', (h) => h.local.push({ key: 'default:b:1' }), { duplicated: 1 }],
    ['two executions under one claim overlapping', (h) => h.attempts.push(attempt('b', '1', 1, 5, 15, 'duplicate')), { unexpected: 1 }],
    ['an innocent record FAILED', (h) => (h.records[1]!.status = 'FAILED', h.records[1]!.last_error = 'poison: the lease expired 4 times'), { unexpected: 1 }],
  ];
  it.each(planted)('counts %s', (_name, plant, expected) => {
    const h = clean();
    plant(h);
    expect(counts(h)).toEqual({ ...none, ...expected });
  });

  it('allows re-executions and overlaps after an expired lease (a higher fence), and counts them', () => {
    const h = clean();
    h.attempts.push(attempt('b', '1', 2, 5, 15, 'duplicate'));
    expect(counts(h)).toEqual(none);
    expect(check(h)).toMatchObject({ reExecutions: 1, overlapsAfterExpiry: 1 });
  });

  it('expects poison records FAILED as poison', () => {
    const h = clean();
    h.poison = new Set(['b']);
    expect(counts(h)).toEqual({ ...none, unexpected: 1 });
    h.records[1] = { ...h.records[1]!, status: 'FAILED', last_error: 'poison: the lease expired 2 times without a completion' };
    expect(counts(h)).toEqual(none);
  });
});
