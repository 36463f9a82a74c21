/**
 * `npm run test:faults`: the fault-injection suite. For each scenario (scenarios.ts) it starts a
 * cluster as real processes on loopback (cluster.ts), drives the recorded workload
 * (workload.ts), injects the scenario's faults, heals, waits for quiet, sends every message again
 * (a duplicate must be answered as the first was, and write nothing), and checks the whole history
 * offline (checker.ts). It prints a table, writes it to bench/results/, and exits 1 if any
 * scenario lost, duplicated or invented anything, let a stale write win, or leaked the canary token
 * into a log line.
 *
 *   npm run test:faults                       every scenario, seed 1
 *   npm run test:faults -- --seed 7 --only kill-api,poison
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Cluster, CANARY_TOKEN, Server } from './cluster.ts';
import { check, type History, type Verdict } from './checker.ts';
import { SCENARIOS, type Scenario } from './scenarios.ts';
import { seededRandom } from '../../src/random.ts';
import { runWorkload, type Answer, type Operation, type WorkloadOptions } from './workload.ts';
import { ROOT } from '../helpers/processes.ts';

interface Row extends Verdict {
  scenario: string;
  recoveryMs: number;
  durationMs: number;
  notes: string[];
  passed: boolean;
}

const { values } = parseArgs({ options: { seed: { type: 'string', default: '1' }, only: { type: 'string' }, list: { type: 'boolean', default: false } } });
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
if (values.list) {
  for (const s of SCENARIOS) console.log(`${s.name.padEnd(24)} ${s.summary}`);
  process.exit(0);
}
const only = values.only?.split(',').map((s) => s.trim());
const unknown = only?.filter((name) => !SCENARIOS.some((s) => s.name === name)) ?? [];
if (unknown.length > 0) {
  console.error(`unknown scenario: ${unknown.join(', ')} (see --list)`);
  process.exit(2);
}
const chosen = SCENARIOS.filter((s) => only === undefined || only.includes(s.name));

const BASE: Omit<WorkloadOptions, 'seed'> = { clients: 6, records: 200, operations: 100, pauseMs: 20 };

async function runScenario(server: Server, scenario: Scenario, index: number): Promise<Row> {
  const began = Date.now();
  const notes: string[] = [];
  const cluster = await Cluster.create(server, scenario.name, scenario.cluster);
  try {
    await cluster.start();
    const options: WorkloadOptions = { ...BASE, ...scenario.workload, seed: seed * 100 + index };
    const total = options.clients * options.operations;
    const ops: Operation[] = [];
    const waiters: Array<{ at: number; resolve: () => void }> = [];
    const tick = setInterval(() => {
      for (const w of waiters.filter((w) => ops.length >= w.at * total)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }, 20);
    const ctx = {
      rand: seededRandom(seed * 7 + index),
      progress: (share: number) => new Promise<void>((resolve) => waiters.push({ at: share, resolve })),
      note: (text: string) => notes.push(text),
    };
    let faultError: unknown;
    const workload = runWorkload(() => cluster.apiUrls, options, undefined, ops);
    const faults = (scenario.fault?.(cluster, ctx) ?? Promise.resolve()).catch((err: unknown) => (faultError = err));
    await Promise.all([workload, faults]);
    clearInterval(tick);
    const healedAt = Date.now();
    const problems: string[] = [];
    if (faultError !== undefined) problems.push(`fault: ${(faultError as Error).message}`);

    // Quiet: nothing waiting or held.
    const quietBy = Date.now() + 180_000;
    for (;;) {
      const { rows } = await cluster.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status IN ('COMPLETED', 'PROCESSING')`).catch(() => ({ rows: [{ n: -1 }] }));
      if (rows[0]!.n === 0) break;
      if (Date.now() > quietBy) {
        problems.push(`not quiet 180 s after healing: ${rows[0]!.n} records still waiting or held`);
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const recoveryMs = Date.now() - healedAt;

    // Every message again, with its messageId: answered as the first time, nothing written.
    const eventsBefore = await count(cluster, 'rowfleet.event_log');
    const resent = new Map<string, Answer>();
    await resendAll(cluster, ops, resent);
    const eventsAfter = await count(cluster, 'rowfleet.event_log');
    if (eventsAfter !== eventsBefore) problems.push(`unexpected: sending every message again wrote ${eventsAfter - eventsBefore} event_log rows`);

    if (scenario.after !== undefined) problems.push(...(await scenario.after(cluster, ctx)));
    const history: History = {
      ops,
      resent,
      events: (await cluster.admin.query(`SELECT seq::text, record_id, version::text, applied, reason, message_id FROM rowfleet.event_log WHERE reason IN ('applied', 'stale', 'conflict')`)).rows,
      records: (await cluster.admin.query(`SELECT id, version::text, status, processed_version::text, last_error, result FROM rowfleet.records`)).rows,
      attempts: (await cluster.admin.query(`SELECT key, record_id, version, fence::text, pid, started_ms::text, ended_ms::text, effect FROM harness_attempts`)).rows,
      local: (await cluster.admin.query(`SELECT key FROM harness_local`)).rows,
      poison: new Set(scenario.poison ?? []),
    };
    const verdict = check(history);
    await cluster.stop();
    const leaked = cluster.allLines().filter((l) => l.includes(CANARY_TOKEN));
    if (leaked.length > 0) problems.push(`the canary token appears in ${leaked.length} log lines, e.g. ${leaked[0]!.slice(0, 200)}`);
    verdict.problems.push(...problems);
    const passed = verdict.lost === 0 && verdict.duplicated === 0 && verdict.unexpected === 0 && verdict.staleOverwrites === 0 && problems.length === 0;
    return { scenario: scenario.name, ...verdict, recoveryMs, durationMs: Date.now() - began, notes, passed };
  } finally {
    await cluster.stop().catch(() => {});
  }
}

async function count(cluster: Cluster, table: string): Promise<number> {
  const { rows } = await cluster.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  return rows[0]!.n;
}

/** Each distinct message once more, to the first API; the answers by messageId. */
async function resendAll(cluster: Cluster, ops: readonly Operation[], into: Map<string, Answer>): Promise<void> {
  const distinct = [...new Map(ops.map((o) => [o.messageId, o])).values()];
  const again = await runWorkload(() => cluster.apiUrls, { seed: 0, clients: 0, records: 0, operations: 0 }, undefined, [], distinct);
  for (const op of again) if (op.answers[0] !== undefined) into.set(op.messageId, op.answers[0]);
}

function table(rows: readonly Row[]): string {
  const header = ['scenario', 'ops', 'acked', 'unknown', 'retried', 'lost', 'dup', 'unexpected', 'stale', 're-exec', 'overlap', 'fenced', 'quiet after', 'result'];
  const lines = rows.map((r) => [
    r.scenario, r.operations, r.acknowledged, r.unknown, r.retried, r.lost, r.duplicated, r.unexpected, r.staleOverwrites, r.reExecutions, r.overlapsAfterExpiry, r.fenced,
    `${(r.recoveryMs / 1000).toFixed(1)} s`, r.passed ? 'ok' : 'FAILED',
  ].map(String));
  return [header, header.map((h) => '-'.repeat(h.length)), ...lines].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

const server = await Server.start();
const rows: Row[] = [];
const started = Date.now();
try {
  for (const [index, scenario] of chosen.entries()) {
    process.stderr.write(`[${index + 1}/${chosen.length}] ${scenario.name}: ${scenario.summary} ... `);
    let row: Row;
    try {
      row = await runScenario(server, scenario, index);
    } catch (err) {
      row = { scenario: scenario.name, ...check({ ops: [], resent: new Map(), events: [], records: [], attempts: [], local: [], poison: new Set() }), recoveryMs: 0, durationMs: 0, notes: [], passed: false };
      row.problems.push(`the scenario could not run: ${(err as Error).message}`);
    }
    rows.push(row);
    process.stderr.write(`${row.passed ? 'ok' : 'FAILED'} (${(row.durationMs / 1000).toFixed(0)} s)\n`);
    for (const p of row.problems) process.stderr.write(`    ${p}\n`);
  }
} finally {
  await server.stop();
}

const report = [
  `# Fault suite, seed ${seed}, ${new Date().toISOString()}`,
  '',
  `${rows.length} scenarios in ${((Date.now() - started) / 1000).toFixed(0)} s, each with ${BASE.clients} clients × ${BASE.operations} upserts over ${BASE.records} records (unless the scenario says otherwise), two API processes, a fleet of 3 workers and a scheduler, all connected as the runtime role.`,
  '',
  table(rows),
  '',
  ...rows.filter((r) => r.notes.length > 0 || r.problems.length > 0).map((r) => `- ${r.scenario}: ${[...r.notes, ...r.problems].join('; ')}`),
  '',
].join('\n');
console.log(report);
const out = path.join(ROOT, 'bench/results');
await fs.mkdir(out, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
await fs.writeFile(path.join(out, `faults-${stamp}.md`), report);
await fs.writeFile(path.join(out, `faults-${stamp}.json`), `${JSON.stringify({ seed, rows }, null, 2)}\n`);
process.exit(rows.every((r) => r.passed) ? 0 : 1);
