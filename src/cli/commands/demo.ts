import { Command } from 'commander';
import { migrateAll } from '../../boss/migrate.ts';
import { embeddedStatus } from '../../db/embedded.ts';
import { getRecord, type RecordView } from '../../records/read.ts';
import { DEFAULT_KIND } from '../../kind.ts';
import { loadHandler } from '../../worker/handler.ts';
import { runWorker } from '../../worker/run.ts';
import { buildServer } from '../../http/server.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

interface Step {
  say: string;
  body: unknown;
  headers?: Record<string, string>;
}

/** Out-of-order, duplicate and conflicting messages, as a real network delivers them. */
function steps(id: string): Step[] {
  return [
    { say: 'server B writes version 2 first, with an idempotency key', body: { id, data: { status: 'shipped', items: 3 }, version: 2, messageId: `${id}-evt-2` } },
    { say: 'server A, slow, delivers the older version 1 late: refused as stale, never overwrites', body: { id, data: { status: 'paid', items: 3 }, version: 1 } },
    {
      say: 'server B timed out and retries version 2 with the same key: the first answer again (duplicate), nothing written',
      body: { id, data: { status: 'shipped', items: 3 }, version: 2 },
      headers: { 'idempotency-key': `${id}-evt-2` },
    },
    {
      say: 'version 2 again from another producer, with no key: stale, not duplicate (no key ties it to the first; the same data at the same version is a harmless repeat)',
      body: { id, data: { status: 'shipped', items: 3 }, version: 2 },
    },
    { say: 'a different payload claiming the same version 2', body: { id, data: { status: 'cancelled' }, version: 2 } },
    { say: 'version 3 arrives', body: { id, data: { status: 'delivered', items: 3 }, version: 3 } },
    { say: 'a message with no version: the database assigns one', body: { id: `${id}-note`, data: { text: 'no version given' } } },
    {
      say: 'a batch: items for one id apply in order',
      body: { items: [{ id: `${id}-b`, data: { n: 1 }, version: 1 }, { id: `${id}-b`, data: { n: 3 }, version: 3 }, { id: `${id}-b`, data: { n: 2 }, version: 2 }] },
    },
    { say: 'bad input is refused with a 400 naming the field', body: { id, data: 'not an object' } },
  ];
}

export function registerDemo(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('demo'))
    .description('start the database and API, send out-of-order and duplicate messages, show what was applied and refused')
    .addHelpText('after', '\nExample:\n  npm run demo        # same as: rowfleet demo\n')
    .action(async (flags: DatabaseFlags) => {
      const config = ctx.config({ ...overridesFrom(flags), logLevel: flags.logLevel ?? 'warn', port: 0 });
      const log = ctx.logger(config, 'demo');
      const out = (line = '') => ctx.io.stdout.write(`${line}\n`);
      await ctx.withPool(config, log, async (pool, url) => {
        const where = config.databaseUrl === undefined ? `embedded Postgres (data in ${(await embeddedStatus(config.home, { relocate: !config.homeChosen })).dataDir})` : 'DATABASE_URL';
        out(`database   ${where}`);
        const { applied, total } = await migrateAll(url, config.boss, log);
        out(`migrations ${applied} applied, ${total} in all`);
        const app = buildServer({ config, pool, log, listenUrl: url });
        const address = await app.listen({ port: 0, host: '127.0.0.1' });
        out(`api        ${address}`);
        out();
        try {
          const id = `order-${Date.now().toString(36)}`;
          for (const step of steps(id)) {
            const response = await fetch(`${address}/upsert`, {
              method: 'POST',
              headers: { 'content-type': 'application/json', ...step.headers },
              body: JSON.stringify(step.body),
            });
            const answer = await response.text();
            out(`# ${step.say}`);
            out(`  POST /upsert ${JSON.stringify(step.body)}${step.headers ? ` (Idempotency-Key: ${step.headers['idempotency-key']})` : ''}`);
            out(`  → ${response.status} ${answer}`);
          }
          const record = (await (await fetch(`${address}/records/${id}?history=1`)).json()) as RecordView;
          out();
          out(`# GET /records/${id}?history=1: the newest version won; every message is in the audit log`);
          out(`  ${record.id}  version ${record.version}  ${record.status}  ${JSON.stringify(record.data)}`);
          for (const e of record.history ?? []) {
            out(`  seq ${String(e.seq).padEnd(5)} v${String(e.version).padEnd(3)} ${e.reason.padEnd(9)} ${JSON.stringify(e.data)}`);
          }

          out();
          out('# a worker claims the COMPLETED records (FOR UPDATE SKIP LOCKED), runs the checksum handler, completes them');
          const ids = [id, `${id}-note`, `${id}-b`];
          const stop = new AbortController();
          const worker = runWorker({ config, handler: await loadHandler('checksum', process.cwd(), config.worker), log, signal: stop.signal });
          try {
            for (const recordId of ids) {
              const done = await waitUntil(async () => (await getRecord(pool, { kind: DEFAULT_KIND, id: recordId }))?.status === 'PROCESSED', 30_000);
              const view = await getRecord(pool, { kind: DEFAULT_KIND, id: recordId });
              out(`  ${recordId}  version ${view?.version}  ${view?.status}${done ? `  result ${JSON.stringify(view?.result)}` : ' (not yet)'}`);
            }
            out();
            out('# ?wait= answers once the worker has processed the message, with its result');
            const body = { id: `${id}-wait`, data: { total: 30 } };
            const waited = await fetch(`${address}/upsert?wait=10s`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
            out(`  POST /upsert?wait=10s ${JSON.stringify(body)}`);
            out(`  → ${waited.status} ${await waited.text()}`);
          } finally {
            stop.abort();
            await worker;
          }
        } finally {
          await app.close();
        }
        out();
        out(config.databaseUrl === undefined ? 'The embedded Postgres keeps running for the next command; `npx rowfleet db stop` stops it.' : 'Done.');
        out('Next: `npx rowfleet api` serves this API, `npx rowfleet worker --handler ./your-handler.js` processes it; see README.md.');
      });
    });
}

/** Polls `check` every 50 ms for up to `ms`; whether it came true. */
async function waitUntil(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
