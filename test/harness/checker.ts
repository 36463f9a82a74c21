/**
 * The offline check of a scenario's history (Jepsen's queue checker, for rowfleet's invariants):
 * what the clients were told, against what the database and the "other system" hold once the
 * system is quiet. Pure: `check` takes plain rows, so that its own test (test/harness-checker.test.ts)
 * can feed it broken histories and see each violation counted.
 */
import type { Answer, Operation } from './workload.ts';

export interface EventRow {
  seq: string;
  record_id: string;
  version: string;
  applied: boolean;
  reason: string;
  message_id: string | null;
}

export interface RecordRow {
  id: string;
  version: string;
  status: string;
  processed_version: string | null;
  last_error: string | null;
  result: { fence?: number } | null;
}

export interface AttemptRow {
  key: string;
  record_id: string;
  version: string;
  fence: string;
  pid: number;
  started_ms: string;
  ended_ms: string;
  effect: 'applied' | 'duplicate' | 'fenced';
}

export interface History {
  ops: Operation[];
  /** Answers to every message sent again once the system was quiet, by messageId. */
  resent: Map<string, Answer>;
  events: EventRow[];
  records: RecordRow[];
  attempts: AttemptRow[];
  /** harness_local: the transactional effects, one row per committed completion. */
  local: { key: string }[];
  /** Records meant to end FAILED (poison), by id. */
  poison: ReadonlySet<string>;
}

export interface Verdict {
  operations: number;
  acknowledged: number;
  unknown: number;
  /** Operations that needed more than one try (a timeout, a reset, a dead API) before an answer. */
  retried: number;
  /** Acknowledged messages missing from event_log, processed records without their effect, records not settled. */
  lost: number;
  /** A message logged twice, an effect applied twice for one key, a transactional effect committed twice. */
  duplicated: number;
  /** Messages nobody sent, answers that disagree with the log or with each other, overlaps without an expired lease. */
  unexpected: number;
  /** A record holding less than the highest acknowledged applied version, applied versions out of seq order. */
  staleOverwrites: number;
  /** Executions beyond the first per key (allowed: at-least-once), and how many of them overlapped an older holder. */
  reExecutions: number;
  overlapsAfterExpiry: number;
  /** Effects the other system refused for an older fencing token. */
  fenced: number;
  /** The first few violations, as sentences. */
  problems: string[];
}

const same = (a: Answer, b: Answer) => a.status === b.status && a.applied === b.applied && a.reason === b.reason && a.version === b.version;

export function check(h: History): Verdict {
  const v: Verdict = {
    operations: h.ops.length, acknowledged: 0, unknown: 0, retried: h.ops.filter((o) => o.tries > 1).length, lost: 0, duplicated: 0, unexpected: 0, staleOverwrites: 0, reExecutions: 0, overlapsAfterExpiry: 0, fenced: 0, problems: [],
  };
  const problem = (field: 'lost' | 'duplicated' | 'unexpected' | 'staleOverwrites', text: string) => {
    v[field] += 1;
    if (v.problems.length < 12) v.problems.push(`${field}: ${text}`);
  };

  // Upsert side.
  const logged = Map.groupBy(h.events.filter((e) => e.message_id !== null), (e) => e.message_id!);
  for (const [messageId, rows] of logged) if (rows.length > 1) problem('duplicated', `message ${messageId} is in event_log ${rows.length} times`);
  const byMessage = Map.groupBy(h.ops, (o) => o.messageId);
  for (const messageId of logged.keys()) if (!byMessage.has(messageId)) problem('unexpected', `event_log holds message ${messageId}, which no client sent`);
  const highestAcked = new Map<string, bigint>();
  for (const [messageId, ops] of byMessage) {
    const answers = ops.flatMap((o) => o.answers.filter((a) => a.status === 200 || a.status === 409));
    const acknowledged = ops.some((o) => o.outcome === 'acknowledged');
    for (const o of ops) {
      if (o.outcome === 'acknowledged') v.acknowledged += 1;
      else if (o.outcome === 'unknown') v.unknown += 1;
      else problem('unexpected', `message ${messageId} was rejected: ${o.answers[0]?.status} ${o.answers[0]?.reason}`);
    }
    const resent = h.resent.get(messageId);
    const first = answers[0];
    if (first !== undefined) {
      // A duplicate's answer is the first answer.
      for (const later of [...answers.slice(1), ...(resent === undefined ? [] : [resent])]) {
        if (!same(first, later)) problem('unexpected', `message ${messageId} was answered ${first.reason} (${first.status}), then ${later.reason} (${later.status})`);
      }
    }
    const event = logged.get(messageId)?.[0];
    if (acknowledged && event === undefined) problem('lost', `message ${messageId} was acknowledged (${first?.reason}) but is not in event_log`);
    if (event !== undefined && first !== undefined && event.applied !== first.applied) problem('unexpected', `message ${messageId}: answered applied=${first.applied}, logged applied=${event.applied}`);
    if (first?.applied === true) {
      const id = ops[0]!.id;
      const version = BigInt(ops[0]!.version);
      if ((highestAcked.get(id) ?? 0n) < version) highestAcked.set(id, version);
    }
  }
  const records = new Map(h.records.map((r) => [r.id, r]));
  for (const [id, version] of highestAcked) {
    const record = records.get(id);
    if (record === undefined) problem('lost', `record ${id} is gone, though version ${version} was acknowledged`);
    else if (BigInt(record.version) < version) problem('staleOverwrites', `record ${id} holds version ${record.version}, below the acknowledged ${version}`);
  }
  const applied = Map.groupBy(h.events.filter((e) => e.applied), (e) => e.record_id);
  for (const [id, events] of applied) {
    const inOrder = events.toSorted((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
    for (let i = 1; i < inOrder.length; i++) {
      if (BigInt(inOrder[i]!.version) <= BigInt(inOrder[i - 1]!.version)) problem('staleOverwrites', `record ${id}: version ${inOrder[i]!.version} applied after ${inOrder[i - 1]!.version}`);
    }
    const record = records.get(id);
    const last = inOrder.at(-1)!;
    if (record !== undefined && record.version !== last.version) problem('unexpected', `record ${id} holds version ${record.version}, its last applied message ${last.version}`);
  }

  // Processing side.
  const attemptsByKey = Map.groupBy(h.attempts, (a) => a.key);
  const localByKey = Map.groupBy(h.local, (l) => l.key);
  for (const record of h.records) {
    const key = `default:${record.id}:${record.version}`;
    if (h.poison.has(record.id)) {
      if (record.status !== 'FAILED' || !/^poison/.test(record.last_error ?? '')) problem('unexpected', `poison record ${record.id} is ${record.status} (${record.last_error})`);
      continue;
    }
    if (record.status === 'FAILED') {
      problem('unexpected', `record ${record.id} is FAILED: ${record.last_error}`);
      continue;
    }
    if (record.status !== 'PROCESSED' || record.processed_version !== record.version) {
      problem('lost', `record ${record.id} is ${record.status} at ${record.version} (processed ${record.processed_version})`);
      continue;
    }
    const effects = (attemptsByKey.get(key) ?? []).filter((a) => a.effect === 'applied');
    if (effects.length === 0) problem('lost', `record ${record.id} is PROCESSED at ${record.version} without its effect`);
    if ((localByKey.get(key)?.length ?? 0) !== 1) problem(localByKey.has(key) ? 'duplicated' : 'lost', `record ${record.id}: ${localByKey.get(key)?.length ?? 0} transactional effects for ${key}`);
  }
  for (const [key, attempts] of attemptsByKey) {
    const effects = attempts.filter((a) => a.effect === 'applied');
    if (effects.length > 1) problem('duplicated', `effect ${key} applied ${effects.length} times`);
    v.reExecutions += attempts.length - 1;
    v.fenced += attempts.filter((a) => a.effect === 'fenced').length;
  }
  for (const [key, rows] of localByKey) if (rows.length > 1 && !v.problems.some((p) => p.includes(key))) problem('duplicated', `transactional effect ${key} committed ${rows.length} times`);
  // Executions of one record that overlapped: only after the older holder's lease expired, which
  // its lower fencing token shows (a new claim took the record), and then its result was not kept.
  for (const [id, attempts] of Map.groupBy(h.attempts, (a) => a.record_id)) {
    const byStart = attempts.toSorted((a, b) => Number(a.started_ms) - Number(b.started_ms));
    for (let i = 0; i < byStart.length; i++) {
      for (let j = i + 1; j < byStart.length && Number(byStart[j]!.started_ms) < Number(byStart[i]!.ended_ms); j++) {
        const [a, b] = [byStart[i]!, byStart[j]!];
        if (a.fence === b.fence) problem('unexpected', `record ${id}: two executions under one claim (fence ${a.fence}) overlapped`);
        else v.overlapsAfterExpiry += 1;
      }
    }
  }
  return v;
}
