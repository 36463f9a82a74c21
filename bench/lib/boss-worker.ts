/**
 * One pg-boss worker process for the drain baseline: `work()` on a queue with a no-op batch
 * handler, the options given as JSON, until SIGTERM. A process of its own, as rowfleet's workers
 * are, so that both engines get the same number of event loops when compared process for process.
 * Started with an IPC channel, it waits at the start gate (bench/lib/gate.ts) after connecting,
 * before its first fetch.
 *
 *   DATABASE_URL=... node --import tsx bench/lib/boss-worker.ts <schema> <queue> '<work options JSON>'
 */
import { PgBoss, type WorkOptions } from 'pg-boss';
import { passGate } from './gate.ts';

const [schema, queue, optionsJson] = process.argv.slice(2);
if (schema === undefined || queue === undefined || optionsJson === undefined) {
  process.stderr.write('usage: boss-worker.ts <schema> <queue> <work options JSON>\n');
  process.exit(2);
}
const boss = new PgBoss({ connectionString: process.env.DATABASE_URL!, schema, migrate: false });
boss.on('error', (err) => process.stderr.write(`[boss-worker ${process.pid}] ${err.message}\n`));
await boss.start();
if (process.send !== undefined) {
  await passGate();
  // The channel would keep this process alive after boss.stop().
  process.disconnect();
}
await boss.work(queue, JSON.parse(optionsJson) as WorkOptions, async () => {});
process.once('SIGTERM', () => void boss.stop({ graceful: true, timeout: 5_000 }));
