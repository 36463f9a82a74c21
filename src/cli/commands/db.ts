import { Command } from 'commander';
import type { CommandContext } from '../context.ts';
import { resolveDatabaseUrl } from '../../db/connect.ts';
import { embeddedStatus, ensureEmbedded, stopEmbedded, type EmbeddedStatus } from '../../db/embedded.ts';
import { UsageError } from '../../errors.ts';
import type { Config } from '../../config.ts';

interface JsonFlag {
  json?: boolean;
}

export function registerDb(ctx: CommandContext): Command {
  const db = new Command('db')
    .description('the embedded Postgres used when DATABASE_URL is not set (data in .rowfleet/pg, shared by every rowfleet process)')
    .addHelpText('after', '\nExamples:\n  rowfleet db start\n  rowfleet db status --json\n  psql "$(rowfleet db url)"\n');

  const start = new Command('start')
    .description('start the embedded Postgres (creating it on first use); does nothing if it is running')
    .option('--json', 'print {"url", "port", "pid", "dataDir", "started"}')
    .addHelpText('after', '\nExample:\n  rowfleet db start && rowfleet migrate\n')
    .action(async (flags: JsonFlag) => {
      const config = embeddedOnly(ctx.config(), 'start');
      const before = await embeddedStatus(config.home, { relocate: !config.homeChosen });
      // What it did is printed below; its own log lines (started, relocated) would say it twice.
      const quiet = ctx.logger(config, 'db').child({}, { level: 'warn' });
      const server = await ensureEmbedded({ home: config.home, relocate: !config.homeChosen, log: quiet });
      ctx.print({ ...server, started: !before.running }, flags.json === true, (s) =>
        `embedded Postgres ${s.started ? 'started' : 'is already running'} on ${hostPort(s.url)} (pid ${s.pid}, data in ${s.dataDir})`,
      );
    });

  const stop = new Command('stop')
    .description('stop the embedded Postgres (its data is kept); does nothing if it is not running')
    .option('--json', 'print {"stopped": bool}')
    .addHelpText('after', '\nExample:\n  rowfleet db stop\n')
    .action(async (flags: JsonFlag) => {
      const config = embeddedOnly(ctx.config(), 'stop');
      const result = await stopEmbedded(config.home, ctx.logger(config, 'db'), { relocate: !config.homeChosen });
      ctx.print(result, flags.json === true, (r) => (r.stopped ? 'embedded Postgres stopped' : 'embedded Postgres is not running'));
    });

  const status = new Command('status')
    .description('whether the embedded Postgres is running, and where')
    .option('--json', 'print {"running": bool, "url"?, "port"?, "pid"?, "dataDir"}')
    .addHelpText('after', '\nExample:\n  rowfleet db status --json\n')
    .action(async (flags: JsonFlag) => {
      const config = ctx.config();
      const result = await embeddedStatus(config.home, { relocate: !config.homeChosen });
      ctx.print(result, flags.json === true, (s) => describeStatus(s, config));
    });

  const url = new Command('url')
    .description('print the Postgres URL rowfleet uses: $DATABASE_URL if set, else the embedded one (started if needed)')
    .option('--json', 'print {"url"}')
    .addHelpText('after', '\nExample:\n  psql "$(rowfleet db url)"\n')
    .action(async (flags: JsonFlag) => {
      const config = ctx.config();
      const resolved = await resolveDatabaseUrl(config, ctx.logger(config, 'db'));
      ctx.print({ url: resolved }, flags.json === true, (r) => r.url);
    });

  for (const sub of [start, stop, status, url]) {
    // Only top-level commands get these from program.ts; without them a bad flag here would call
    // process.exit and print to the real stderr.
    sub.exitOverride().configureOutput({ writeOut: (text) => ctx.io.stdout.write(text), writeErr: (text) => ctx.io.stderr.write(text) });
    db.addCommand(sub);
  }
  return db;
}

function embeddedOnly(config: Config, verb: string): Config {
  if (config.databaseUrl !== undefined) {
    throw new UsageError(`DATABASE_URL is set, so the embedded Postgres is not used; unset it to ${verb} the embedded one`);
  }
  return config;
}

function describeStatus(status: EmbeddedStatus, config: Config): string {
  const note = config.databaseUrl === undefined ? '' : '\n(not in use: DATABASE_URL is set)';
  if (!status.running || status.url === undefined) return `embedded Postgres is not running (data in ${status.dataDir})${note}`;
  return `embedded Postgres is running on ${hostPort(status.url)} (pid ${status.pid}, data in ${status.dataDir})\nurl: ${status.url}${note}`;
}

function hostPort(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port}`;
}
