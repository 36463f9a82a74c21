import { Command } from 'commander';
import { readStatus, renderStatus } from '../../ops/status.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { kindFilterOption } from '../kinds.ts';

const WATCH_EVERY_MS = 2_000;

export function registerStatus(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('status'))
    .description('records by status, the due backlog and its oldest wait, throughput, failures, and live workers')
    .addOption(kindFilterOption('only records of these kinds'))
    .option('--json', 'print the status as one JSON object')
    .option('--watch', `refresh in place every ${WATCH_EVERY_MS / 1000}s until interrupted`)
    .addHelpText(
      'after',
      `
JSON: {"kinds": [{"kind", "counts", "due", "oldestDueAgeSeconds"}], "counts": {"COMPLETED",
"PROCESSING", "PROCESSED", "FAILED", "DELETED"}, "estimated": [...], "due", "oldestDueAgeSeconds",
"throughput": {"1m", "5m", "15m"} (records/s, every kind), "lastHour": {...}, "workers": [{"id",
"host", "pid", "engine", "concurrency", "inFlight", "lastSeenAt", "alive"}]}. With --kind, the
counts and the backlog are those kinds' (throughput and workers stay the fleet's).

Examples:
  rowfleet status
  rowfleet status --watch
  rowfleet status --json | jq .due
  rowfleet status --kind order,invoice
`,
    )
    .action(async (flags: DatabaseFlags & { kind?: string[]; json?: boolean; watch?: boolean }) => {
      const config = ctx.config(overridesFrom(flags));
      const log = ctx.logger(config, 'status');
      await ctx.withPool(config, log, async (pool) => {
        if (flags.watch !== true) {
          const status = await readStatus(pool, { kinds: flags.kind });
          return ctx.print(status, flags.json === true, renderStatus);
        }
        const signal = ctx.io.shutdownSignal;
        const stopped = () => signal?.aborted === true;
        while (!stopped()) {
          const status = await readStatus(pool, { kinds: flags.kind });
          if (flags.json === true) ctx.print(status, true);
          else ctx.io.stdout.write(`${ctx.io.isTTY === true ? '\x1b[H\x1b[2J' : ''}${renderStatus(status)}\n\n(every ${WATCH_EVERY_MS / 1000}s; Ctrl-C to stop)\n`);
          if (stopped()) break;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, WATCH_EVERY_MS);
            function done() {
              clearTimeout(timer);
              signal?.removeEventListener('abort', done);
              resolve();
            }
            signal?.addEventListener('abort', done, { once: true });
          });
        }
      });
    });
}
