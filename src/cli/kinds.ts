/**
 * The `--kind` flags: one kind for the commands about one record (`inspect`, `upsert`), a list
 * for the filters (`requeue`, `delete`, `replay`, `status`). Checked as the API checks a message's
 * kind, so that a typo is a usage error rather than an empty result.
 */
import { Option } from 'commander';
import { parseKindList } from '../config.ts';
import { UsageError } from '../errors.ts';
import { DEFAULT_KIND, KIND_PATTERN, KIND_RULE } from '../kind.ts';

/** `--kind <kind>`: the record's kind, `default` when not given. */
export function kindOption(what = "the record's kind"): Option {
  return new Option('--kind <kind>', `${what} (default: ${DEFAULT_KIND})`).argParser((raw: string) => {
    if (!KIND_PATTERN.test(raw)) throw new UsageError(`--kind "${raw}" is not a kind name (${KIND_RULE})`);
    return raw;
  });
}

/** `--kind a,b` (repeatable): only records of these kinds; every kind when not given. */
export function kindFilterOption(description: string): Option {
  return new Option('--kind <kinds>', `${description} (comma-separated or repeated; default: every kind)`).argParser((raw: string, previous?: string[]) => [
    ...new Set([...(previous ?? []), ...parseKindList(raw, '--kind')]),
  ]);
}
