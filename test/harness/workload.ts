/**
 * The recorded workload: concurrent clients upserting through the two APIs over HTTP, as real
 * producers would. Every operation is kept with its send time, every answer it got and its
 * outcome. An answer lost to a timeout, a reset or a dead API is `unknown`, never `failed`: the
 * client retries with the same messageId (on the other API), as a real client would, and the
 * operation is acknowledged if any try is answered.
 */
import { seededRandom } from '../../src/random.ts';
import { CANARY_TOKEN } from './cluster.ts';

export interface Answer {
  status: number;
  applied: boolean;
  reason: string;
  version: string;
  duplicate: boolean;
}

export interface Operation {
  client: number;
  id: string;
  version: string;
  messageId: string;
  data: Record<string, unknown>;
  sentAt: number;
  /** Every answer, in the order received (more than one when a retry was answered too). */
  answers: Answer[];
  tries: number;
  /** acknowledged: answered 200 or 409; unknown: no answer; rejected: a 4xx other than 409 (a harness bug). */
  outcome: 'acknowledged' | 'unknown' | 'rejected';
  /** Ms from the send to the first answer. */
  latencyMs?: number;
}

export interface WorkloadOptions {
  seed: number;
  clients: number;
  records: number;
  /** Operations per client. */
  operations: number;
  /** Record ids a third of the operations go to (contention on a hot key). */
  hot?: number;
  /** Data for record `n` beyond its counter (faults, sleeps). */
  dataFor?: (id: string, n: number) => Record<string, unknown>;
  /** Same-id contention: this share of operations reuses a version another client sends too. */
  equalVersions?: number;
  /** This share of operations is sent twice at once, by two clients, with one messageId. */
  duplicates?: number;
  /** Gap between a client's operations. */
  pauseMs?: number;
}

export const recordId = (n: number) => `r-${String(n).padStart(4, '0')}`;

/**
 * Runs the clients to the end against `apis()` (read at every try: an API restarted on the same
 * port is the same URL). Each client draws from its own seeded PRNG, so the messages (ids,
 * versions, data) are the same in every run of a seed; `equalVersions` reuses the last version sent
 * for an id, by whichever client sent it, so it depends on the interleaving.
 */
export async function runWorkload(
  apis: () => string[],
  options: WorkloadOptions,
  signal?: AbortSignal,
  ops: Operation[] = [],
  /** Instead of new messages: send these again, as they were, in parallel batches. */
  again?: readonly Operation[],
): Promise<Operation[]> {
  if (again !== undefined) {
    const fresh: Operation[] = [];
    for (let i = 0; i < again.length; i += 16) await Promise.all(again.slice(i, i + 16).map((o) => send(apis, fresh, o)));
    return fresh;
  }
  const pending: Promise<void>[] = [];
  const lastVersion = new Map<string, number>();
  for (let c = 0; c < options.clients; c++) {
    const clientRand = seededRandom(options.seed * 1_000 + c);
    pending.push(
      (async () => {
        for (let k = 0; k < options.operations && signal?.aborted !== true; k++) {
          const hot = options.hot !== undefined && clientRand() < 1 / 3;
          const n = hot ? Math.floor(clientRand() * options.hot!) : Math.floor(clientRand() * options.records);
          const id = recordId(n);
          // A logical clock shared by the clients as if they went in step, skewed back by up to two
          // ticks (so some messages arrive after newer ones: stale), plus the client in the last
          // digits (so no two clients send one version unless the scenario asks for it).
          const tick = 1_000 + k * options.clients + c - Math.floor(clientRand() * 3);
          let version = tick * 100 + c;
          if (options.equalVersions !== undefined && clientRand() < options.equalVersions && lastVersion.has(id)) version = lastVersion.get(id)!;
          lastVersion.set(id, version);
          const data = { n, client: c, k, ...options.dataFor?.(id, n) };
          const messageId = `m-${options.seed}-${c}-${k}`;
          const sends = [send(apis, ops, { client: c, id, version: String(version), messageId, data })];
          if (options.duplicates !== undefined && clientRand() < options.duplicates) sends.push(send(apis, ops, { client: c + 1000, id, version: String(version), messageId, data }));
          await Promise.all(sends);
          if (options.pauseMs !== undefined) await new Promise((r) => setTimeout(r, options.pauseMs! * (0.5 + clientRand())));
        }
      })(),
    );
  }
  await Promise.all(pending);
  return ops;
}

/** Sends one message until answered (at most 8 tries over about 20 s), recording every answer. */
async function send(apis: () => string[], ops: Operation[], message: Pick<Operation, 'client' | 'id' | 'version' | 'messageId' | 'data'>): Promise<void> {
  const op: Operation = { ...message, sentAt: Date.now(), answers: [], tries: 0, outcome: 'unknown' };
  ops.push(op);
  const body = JSON.stringify({ id: op.id, version: op.version, messageId: op.messageId, data: op.data });
  for (let attempt = 0; attempt < 8; attempt++) {
    const urls = apis();
    const url = urls[(op.client + attempt) % urls.length]!;
    op.tries += 1;
    try {
      const response = await fetch(`${url}/upsert`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${CANARY_TOKEN}` },
        body,
        signal: AbortSignal.timeout(4_000),
      });
      const json = (await response.json()) as { applied?: boolean; reason?: string; version?: number | string; duplicate?: boolean };
      if (response.status === 200 || response.status === 409) {
        op.answers.push({ status: response.status, applied: json.applied === true, reason: String(json.reason), version: String(json.version), duplicate: json.duplicate === true });
        op.latencyMs ??= Date.now() - op.sentAt;
        op.outcome = 'acknowledged';
        return;
      }
      // 503 (database unavailable), 429, 5xx: no answer about the message; try again.
      if (response.status < 500 && response.status !== 429) {
        op.outcome = 'rejected';
        op.answers.push({ status: response.status, applied: false, reason: String(json.reason ?? (json as { message?: string }).message), version: op.version, duplicate: false });
        return;
      }
    } catch {
      // Timeout, reset, refused: unknown; retried with the same messageId.
    }
    await new Promise((r) => setTimeout(r, Math.min(3_000, 150 * 2 ** attempt)));
  }
}
