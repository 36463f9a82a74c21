/**
 * `rowfleet demo`: the problems rowfleet exists for, reproduced and solved in under a minute.
 *
 * It starts the embedded Postgres (or uses DATABASE_URL), migrates, and runs the API, the
 * scheduler and a fleet of three worker processes, as `rowfleet up` would. Four producers then
 * send orders over HTTP as a real network delivers them: versions out of order, retries of the
 * same message, a hot key updated thirty times in a burst. The records are slow enough to spread
 * over the workers; some are flaky (their first attempts fail), one is poison (it kills its
 * worker process), and halfway through the demo kills one worker with `kill -9`. A live line shows
 * progress (plain lines when not a terminal). The report says what was applied, refused,
 * absorbed, conflated, processed, retried and failed (with the command that requeues it), and
 * checks DESIGN.md's invariants I1 to I5 over the run; it exits 1 if one fails. `--keep` leaves
 * everything running and prints the dashboard's URL.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { migrateAll } from '../../boss/migrate.ts';
import { embeddedStatus } from '../../db/embedded.ts';
import { buildServer } from '../../http/server.ts';
import { runScheduler } from '../../scheduler/scheduler.ts';
import { runFleet } from '../../fleet/run.ts';
import { workersWithHoldings } from '../../records/counts.ts';
import { checkInvariants, DEMO_EXECUTIONS_TABLE, runCounts, type RunCounts } from '../../records/integrity.ts';
import { UserError } from '../../errors.ts';
import { seededRandom } from '../../random.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { waitForShutdown } from './api.ts';

const KIND = 'order';
const ORDERS = 40;
const HOT_VERSIONS = 30;
const POISON = 13;
const FLAKY = new Set([5, 17, 29]);
const here = fileURLToPath(import.meta.url);
/** The demo's handler module, beside this one's folder: .ts under tsx, .js when built. */
const HANDLER = path.join(path.dirname(here), '..', `demo-handler${path.extname(here)}`);

interface Message {
  id: string;
  version: number;
  messageId: string;
  data: Record<string, unknown>;
}

interface Tally {
  sent: number;
  applied: number;
  stale: number;
  duplicates: number;
  conflicts: number;
  /** Per record, the highest version acknowledged as applied. */
  acknowledged: Map<string, bigint>;
  messageIds: string[];
}

/** Each order's three versions, shuffled among four producers; some sent twice; the hot key's burst. */
function workload(prefix: string): Message[][] {
  const rand = seededRandom(42);
  const messages: Message[] = [];
  for (let n = 1; n <= ORDERS; n++) {
    const id = `${prefix}${String(n).padStart(2, '0')}`;
    const extra = n === POISON ? { crash: true } : FLAKY.has(n) ? { failTimes: 2 } : {};
    for (const [v, status] of [[1, 'created'], [2, 'paid'], [3, 'shipped']] as const) {
      messages.push({ id, version: v, messageId: `${id}-v${v}`, data: { status, total: 10 * n, sleepMs: 150 + Math.floor(rand() * 450), ...extra } });
    }
  }
  for (let v = 1; v <= HOT_VERSIONS; v++) messages.push({ id: `${prefix}hot`, version: v, messageId: `${prefix}hot-v${v}`, data: { status: `step ${v}`, sleepMs: 400 } });
  for (let i = messages.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [messages[i], messages[j]] = [messages[j]!, messages[i]!];
  }
  // A fifth of them again, later, with the same messageId: a producer's retry after a timeout.
  const retries = messages.filter(() => rand() < 0.2);
  const all = [...messages, ...retries];
  return [0, 1, 2, 3].map((p) => all.filter((_, i) => i % 4 === p));
}

export function registerDemo(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('demo'))
    .description('the problems rowfleet solves, in under a minute: out-of-order and duplicate messages, a hot key, slow, flaky and poison records, a worker killed; then a report and an integrity check')
    .option('--keep', 'leave the API, the scheduler and the workers running afterwards, and print the dashboard\'s URL')
    .addHelpText('after', '\nExamples:\n  npm run demo        # same as: rowfleet demo\n  npx rowfleet demo --keep\n')
    .action(async (flags: DatabaseFlags & { keep?: boolean }) => {
      const config = ctx.config({ ...overridesFrom(flags), logLevel: flags.logLevel ?? 'warn', port: 0 });
      const log = ctx.logger(config, 'demo');
      const out = (line = '') => ctx.io.stdout.write(`${line}\n`);
      await ctx.withPool(config, log, async (pool, url) => {
        const where = config.databaseUrl === undefined ? `embedded Postgres (data in ${(await embeddedStatus(config.home, { relocate: !config.homeChosen })).dataDir})` : 'DATABASE_URL';
        out(`database   ${where}`);
        const { applied, total } = await migrateAll(url, config.boss, log);
        out(`migrations ${applied} applied, ${total} in all`);
        await pool.query(DEMO_EXECUTIONS_TABLE);
        const prefix = `demo-${Date.now().toString(36)}-`;
        const stop = new AbortController();
        const app = buildServer({ config, pool, log, listenUrl: url });
        const address = await app.listen({ port: 0, host: '127.0.0.1' });
        const workerLines: string[] = [];
        // The killed worker's restart and the poison record's are part of the story, told by the
        // progress line and the report: only errors of the fleet and the scheduler are printed.
        const quiet = log.child({}, { level: 'error' });
        const fleetConfig = {
          ...config,
          databaseUrl: url,
          worker: { ...config.worker, handler: HANDLER, concurrency: 8, leaseMs: 3_000, maxExpirations: 1, backoffBaseMs: 200, backoffCapMs: 1_000, pollMs: 250, graceMs: 5_000 },
        };
        const parts = [
          runScheduler({ config: { ...config, databaseUrl: url }, pool, log: quiet, signal: stop.signal }),
          runFleet({
            config: fleetConfig,
            size: { initial: 3, min: 3, max: 3, scaleEveryMs: 5_000, targetWaitMs: 5_000 },
            log: quiet,
            env: ctx.io.env,
            // The workers' own lines (retries, the poison record, the killed worker) stay out of the story; kept for a failure.
            output: {
              write: (text: string) => {
                workerLines.push(...text.split('\n').filter(Boolean));
                if (workerLines.length > 200) workerLines.splice(0, workerLines.length - 200);
              },
            },
            logFormat: 'json',
            signal: stop.signal,
          }),
        ];
        // Rejects when a part fails while the story runs; a failure during the stop is awaited below.
        const failed = Promise.race(parts.map((p) => p.then(() => new Promise<never>(() => {}))));
        failed.catch(() => {});
        out(`api        ${address} (the dashboard is at ${address}/)`);
        out(`workers    3 processes, 8 handlers each, 3 s leases`);
        out();
        out(`${ORDERS} orders of 3 versions each and a hot key of ${HOT_VERSIONS}, sent over HTTP by 4 producers out of order, a fifth of them twice;`);
        out(`orders ${[...FLAKY].join(', ')} fail twice before they succeed, order ${POISON} kills its worker, and one worker is killed with kill -9 halfway.`);
        out();
        try {
          const tally = await Promise.race([play(ctx, address, pool, prefix, out), failed]);
          out();
          await report(pool, prefix, tally, out);
        } catch (err) {
          if (workerLines.length > 0) ctx.io.stderr.write(`the workers' last lines:\n${workerLines.slice(-20).join('\n')}\n`);
          throw err;
        } finally {
          if (flags.keep === true) {
            out();
            out(`Everything keeps running: the dashboard is at ${address}/ and the API at ${address}. Ctrl-C stops it.`);
            await waitForShutdown(ctx.io.shutdownSignal);
          }
          stop.abort();
          await Promise.allSettled(parts);
          await app.close();
        }
        out();
        out(config.databaseUrl === undefined ? 'The embedded Postgres keeps running for the next command; `npx rowfleet db stop` stops it.' : 'Done.');
        out('Next: `npx rowfleet up --handler ./your-handler.js` runs the API, the dashboard, the scheduler and a fleet; see README.md.');
      });
    });
}

/** Sends the workload, kills a worker halfway, and shows progress until every record has settled. */
async function play(ctx: CommandContext, address: string, pool: import('pg').Pool, prefix: string, out: (line?: string) => void): Promise<Tally> {
  const producers = workload(prefix);
  const total = producers.reduce((n, p) => n + p.length, 0);
  const tally: Tally = { sent: 0, applied: 0, stale: 0, duplicates: 0, conflicts: 0, acknowledged: new Map(), messageIds: [] };
  const started = Date.now();
  let counts: RunCounts | undefined;
  let killed: number | undefined;
  const line = () =>
    `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  sent ${String(tally.sent).padStart(3)}/${total}  applied ${tally.applied}  stale ${tally.stale}  duplicates ${tally.duplicates}` +
    `  |  processed ${counts?.processed ?? 0}/${counts?.records ?? 0}  retried ${counts?.retried ?? 0}  failed ${counts?.failed ?? 0}  rescued ${counts?.rescued ?? 0}${killed === undefined ? '' : `  (killed worker ${killed})`}`;
  const tty = ctx.io.isTTY === true;
  let last = 0;
  const show = (force = false) => {
    if (tty) ctx.io.stdout.write(`\r${line()}\x1b[K`);
    else if (force || Date.now() - last >= 2_000) {
      out(line());
      last = Date.now();
    }
  };
  const send = async (m: Message) => {
    const response = await fetch(`${address}/upsert`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: KIND, ...m }) });
    const body = (await response.json()) as { applied?: boolean; reason?: string; duplicate?: boolean };
    tally.sent += 1;
    if (response.status !== 200 && response.status !== 409) throw new UserError(`the API answered ${response.status} to ${JSON.stringify(m)}: ${JSON.stringify(body)}`);
    tally.messageIds.push(m.messageId);
    if (body.duplicate === true) tally.duplicates += 1;
    else if (body.applied === true) tally.applied += 1;
    else if (body.reason === 'conflict') tally.conflicts += 1;
    else tally.stale += 1;
    if (body.applied === true && (tally.acknowledged.get(m.id) ?? 0n) < BigInt(m.version)) tally.acknowledged.set(m.id, BigInt(m.version));
  };
  const sending = Promise.all(producers.map(async (messages) => {
    for (const m of messages) {
      await send(m);
      await new Promise((r) => setTimeout(r, 15));
    }
  }));
  const deadline = Date.now() + 90_000;
  let sent = false;
  void sending.then(() => (sent = true));
  for (;;) {
    counts = await runCounts(pool, KIND, prefix);
    if (killed === undefined && counts.processed >= counts.records / 3 && counts.records > 0) killed = await killOne(pool);
    show();
    if (sent && counts.open === 0 && counts.records > 0) break;
    if (Date.now() > deadline) throw new UserError(`the demo did not finish within 90 s: ${counts.open} records still waiting or held`);
    await new Promise((r) => setTimeout(r, 250));
  }
  await sending;
  show(true);
  if (tty) ctx.io.stdout.write('\n');
  return tally;
}

/** Kills, with SIGKILL, one of this process's own worker processes that holds records; its pid. */
async function killOne(pool: import('pg').Pool): Promise<number | undefined> {
  const holders = (await workersWithHoldings(pool, 60)).filter((w) => w.in_flight > 0 && w.host === os.hostname() && parentOf(w.pid) === process.pid);
  const victim = holders[0];
  if (victim === undefined) return undefined;
  process.kill(victim.pid, 'SIGKILL');
  return victim.pid;
}

/** The parent pid of a process (Linux), so that the demo only ever kills its own children. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

async function report(pool: import('pg').Pool, prefix: string, tally: Tally, out: (line?: string) => void): Promise<void> {
  const counts = await runCounts(pool, KIND, prefix);
  const poisonId = `${prefix}${String(POISON).padStart(2, '0')}`;
  const row = (label: string, value: number | string, why: string) => out(`  ${label.padEnd(20)} ${String(value).padStart(4)}  ${why}`);
  out('What happened');
  row('messages', tally.sent, 'sent by 4 producers over HTTP, out of order, a fifth of them twice');
  row('applied', tally.applied, 'the newest version so far for their record: written, audited in event_log');
  row('stale refused', tally.stale, 'older than what the record held: answered applied=false, never written');
  row('duplicates absorbed', tally.duplicates, 'a messageId seen before: the first answer again, nothing written');
  row('conflated', counts.conflated, 'versions replaced by a newer one before a worker got to them: processed once, at the newest');
  row('processed', counts.processed, `records PROCESSED at their latest version, by 3 worker processes`);
  row('retried', counts.retried, 'failed attempts retried with backoff and jitter (the flaky orders)');
  row('rescued', counts.rescued, 'leases that expired with their worker (the killed one, the poison record) and were taken over');
  row('failed', counts.failed, counts.failed === 0 ? '' : `FAILED: ${counts.failedIds.join(', ')} (poison: it killed its worker each time, alone)`);
  if (counts.failed > 0) {
    out();
    out(`  Requeue it once it is fixed:  npx rowfleet requeue --kind ${KIND} ${counts.failedIds.map((id) => `--id ${id}`).join(' ')}`);
  }
  out();
  out('Integrity check');
  const checks = await checkInvariants(pool, KIND, prefix, tally.acknowledged, tally.messageIds, new Set([poisonId]));
  for (const c of checks) out(`  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(32)} ${c.detail}`);
  if (checks.some((c) => !c.ok)) throw new UserError('the integrity check failed: see the lines marked FAIL above');
}
