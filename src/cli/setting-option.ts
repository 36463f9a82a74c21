/**
 * A commander option built from a setting (src/settings.ts): its flag, its meaning, its variable
 * and default in the help, and its schema as the parser, so a flag and its environment variable
 * accept exactly the same values and say the same thing about a wrong one.
 */
import { Option } from 'commander';
import { parseValue, type Setting } from '../settings.ts';

/** Markdown's backticks and links, as a terminal shows them. */
export const plain = (text: string): string => text.replaceAll('`', '').replace(/\[([^\]]+)\]\([^)]*\)/g, '$1');

export function settingOption<T>(setting: Setting<T>, description = setting.doc): Option {
  if (setting.flag === undefined) throw new Error(`${setting.env} has no flag`);
  const long = setting.flag.split(' ')[0]!;
  const shown = plain(setting.shown);
  const fallback = shown.startsWith('(') ? shown.slice(1, -1) : shown;
  const defaults = fallback === 'required' ? `required: this or $${setting.env}` : `default: $${setting.env}, else ${fallback}`;
  return new Option(setting.flag, `${plain(description)} (${defaults})`).argParser((raw) => parseValue(setting.value, raw, long));
}
