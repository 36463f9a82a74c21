/**
 * `rowfleet config`: every setting (src/settings.ts), its value in this environment and where it
 * came from, so "why does this worker hold leases for 30 s?" has an answer without reading code.
 * Secrets are never printed: a DATABASE_URL's password and the API tokens are masked.
 */
import { Command } from 'commander';
import { SECTIONS, type Setting } from '../../settings.ts';
import type { Env } from '../../config.ts';
import { plain } from '../setting-option.ts';
import type { CommandContext } from '../context.ts';

export interface SettingRow {
  section: string;
  variable: string;
  flag: string | null;
  source: 'environment' | 'default';
  /** As written in the environment (secrets masked), or the default as the reference shows it. */
  value: string;
}

export function registerConfig(ctx: CommandContext): Command {
  return new Command('config')
    .description('show every setting: its value here and whether it comes from the environment or is the default (flags of a command still win)')
    .option('--json', 'print the settings as one JSON array')
    .addHelpText(
      'after',
      `
Every value is checked as the other commands check it: a bad one is named and exits 2.

Examples:
  rowfleet config
  ROWFLEET_LEASE=2m rowfleet config --json | jq '.[] | select(.source == "environment")'
`,
    )
    .action((flags: { json?: boolean }) => {
      ctx.config(); // the same checks as every command: a bad value stops here, with its one line
      ctx.print(settingRows(ctx.io.env), flags.json === true, renderRows);
    });
}

export function settingRows(env: Env): SettingRow[] {
  return SECTIONS.flatMap(({ title, settings }) =>
    (Object.values(settings) as Setting<unknown>[]).map((setting): SettingRow => {
      const raw = env[setting.env];
      const given = raw !== undefined && raw.trim() !== '';
      return {
        section: plain(title),
        variable: setting.env,
        flag: setting.flag?.split(' ')[0] ?? null,
        source: given ? 'environment' : 'default',
        value: given ? masked(setting.env, raw.trim()) : plain(setting.shown),
      };
    }),
  );
}

function masked(variable: string, raw: string): string {
  if (variable === 'ROWFLEET_API_TOKENS') {
    const count = raw.split(',').filter((token) => token.trim() !== '').length;
    return `${count} token${count === 1 ? '' : 's'} (not shown)`;
  }
  if (variable === 'DATABASE_URL') {
    try {
      const url = new URL(raw);
      if (url.password !== '') url.password = '***';
      return url.toString();
    } catch {
      return '(not a URL)';
    }
  }
  return raw;
}

function renderRows(rows: SettingRow[]): string {
  const width = Math.max(...rows.map((row) => row.variable.length));
  const lines: string[] = [];
  let section = '';
  for (const row of rows) {
    if (row.section !== section) {
      if (section !== '') lines.push('');
      section = row.section;
      lines.push(section);
    }
    const from = row.source === 'environment' ? '(environment)' : '';
    lines.push(`  ${row.variable.padEnd(width)}  ${row.value}  ${from}`.trimEnd());
  }
  return lines.join('\n');
}
