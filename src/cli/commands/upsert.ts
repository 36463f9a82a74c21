import { Command } from 'commander';
import { MessageError, parseMessage } from '../../records/message.ts';
import { presentResult, statusOf, upsertMessages } from '../../records/upsert.ts';
import { openEnqueue } from '../../boss/enqueue.ts';
import { UsageError, UserError } from '../../errors.ts';
import { overridesFrom, withDatabaseOptions, type CommandContext, type DatabaseFlags } from '../context.ts';

export function registerUpsert(ctx: CommandContext): Command {
  return withDatabaseOptions(new Command('upsert'))
    .description('write one message, as POST /upsert does, and print the response as JSON')
    .argument('<id>', 'record id')
    .argument('<json>', 'the record data, a JSON object')
    .option('--version <n>', 'message version (default: assigned by the database)')
    .option('--message-id <id>', 'idempotency key: repeating it returns the first response')
    .addHelpText('after', `\nExamples:\n  rowfleet upsert order-1 '{"total": 12}' --version 3\n  rowfleet upsert order-1 '{"total": 12}' --message-id evt-42\n\nExit code 0 when applied or stale, 1 on a conflict or a reused message id, 2 for bad input.\n`)
    .action(async (id: string, json: string, flags: DatabaseFlags & { version?: string; messageId?: string }) => {
      const config = ctx.config(overridesFrom(flags));
      let data: unknown;
      try {
        data = JSON.parse(json);
      } catch (err) {
        throw new UsageError(`<json> is not valid JSON: ${(err as Error).message}`);
      }
      let message;
      try {
        message = parseMessage({ id, data, version: flags.version, messageId: flags.messageId }, config);
      } catch (err) {
        if (err instanceof MessageError) throw new UsageError(err.message.replace(/^data/, '<json>'));
        throw err;
      }
      const log = ctx.logger(config, 'upsert');
      const [result] = await ctx.withPool(config, log, async (pool, url) => {
        const enqueue = await openEnqueue(config, pool, log);
        try {
          return await upsertMessages(pool, [message], { enqueue: enqueue?.enqueue });
        } finally {
          await enqueue?.close();
        }
      });
      ctx.print(presentResult(result!), true);
      if (statusOf(result!) !== 200) throw new UserError(result!.reason === 'conflict' ? 'conflict: the record holds other data at this version' : 'the message id was already used for a different message');
    });
}
