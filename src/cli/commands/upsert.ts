import { Command } from 'commander';
import { MessageError, parseMessage } from '../../records/message.ts';
import { statusOf, upsertMessages } from '../../records/upsert.ts';
import { Awaiter, parseWait, presentAnswer, upsertAnswering } from '../../records/await.ts';
import { openEnqueue } from '../../boss/enqueue.ts';
import { UsageError, UserError } from '../../errors.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';
import { kindOption } from '../kinds.ts';

export function registerUpsert(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('upsert'))
    .description('write one message, as POST /upsert does, and print the response as JSON')
    .argument('<id>', 'record id')
    .argument('<json>', 'the record data, a JSON object')
    .addOption(kindOption())
    .option('--version <n>', 'message version (default: assigned by the database)')
    .option('--message-id <id>', 'idempotency key: repeating it returns the first response')
    .option('--priority <n>', 'higher runs first among due records (-1000 to 1000, default 0)')
    .option('--run-at <time>', 'not processed before this ISO-8601 time (e.g. 2026-12-02T06:00:00Z)')
    .option('--wait <duration>', 'answer once the applied version is processed or failed, waiting at most this long (e.g. 10s, at most 5m)')
    .addHelpText(
      'after',
      `\nExamples:\n  rowfleet upsert order-1 '{"total": 12}' --version 3\n  rowfleet upsert 17 '{"total": 12}' --kind invoice\n  rowfleet upsert order-1 '{"total": 12}' --message-id evt-42\n  rowfleet upsert order-1 '{"total": 12}' --wait 30s\n  rowfleet upsert report-7 '{}' --priority 10 --run-at 2026-12-02T06:00:00Z\n\nExit code 0 when applied or stale (with --wait: and processed), 1 on a conflict, a reused message id or (with --wait) a FAILED record, 2 for bad input, 3 when the wait ran out first.\n`,
    )
    .action(async (id: string, json: string, flags: DatabaseFlags & { kind?: string; version?: string; messageId?: string; priority?: string; runAt?: string; wait?: string }) => {
      const config = ctx.config(overridesFrom(flags));
      let waitMs: number | undefined;
      try {
        waitMs = flags.wait === undefined ? undefined : parseWait(flags.wait);
      } catch (err) {
        if (err instanceof MessageError) throw new UsageError(err.message.replace(/^wait/, '--wait'));
        throw err;
      }
      let data: unknown;
      try {
        data = JSON.parse(json);
      } catch (err) {
        throw new UsageError(`<json> is not valid JSON: ${(err as Error).message}`);
      }
      let message;
      try {
        const priority = flags.priority !== undefined && /^-?\d+$/.test(flags.priority) ? Number(flags.priority) : flags.priority;
        message = parseMessage({ kind: flags.kind, id, data, version: flags.version, messageId: flags.messageId, priority, runAt: flags.runAt }, config);
      } catch (err) {
        if (err instanceof MessageError) throw new UsageError(err.message.replace(/^data/, '<json>').replace(/^priority/, '--priority').replace(/^runAt/, '--run-at'));
        throw err;
      }
      const log = ctx.logger(config, 'upsert');
      const [answer] = await ctx.withPool(config, log, async (pool, url) => {
        const enqueue = await openEnqueue(config, pool, log);
        const awaiter = waitMs === undefined ? undefined : new Awaiter(pool, { listenUrl: url, log });
        try {
          const send = () => upsertMessages(pool, [message], { enqueue: enqueue?.enqueue });
          return await upsertAnswering(send, awaiter === undefined ? undefined : { awaiter, ms: waitMs! });
        } finally {
          await awaiter?.close();
          await enqueue?.close();
        }
      });
      const { result, outcome } = answer!;
      ctx.print(presentAnswer(answer!), true);
      if (statusOf(result) !== 200) throw new UserError(result.reason === 'conflict' ? 'conflict: the record holds other data at this version' : 'the message id was already used for a different message');
      if (outcome?.status === 'FAILED') throw new UserError(`the record is FAILED: ${outcome.error ?? 'no error recorded'}`);
      if (outcome !== undefined && !outcome.settled) throw new UserError(`not processed within ${flags.wait} (status ${outcome.status ?? 'unknown'}); it stays queued`, 3);
    });
}
