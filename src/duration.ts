/**
 * Durations as people write them, for every setting that takes one (flags, ROWFLEET_* variables,
 * `requeue --since`). Below every module that reads settings, so config.ts depends on nothing above it.
 */

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `500ms`, `3s`, `2m`, `1h`, `30d`. The unit is required: a bare `30` once meant 30 ms, and
 * `--timeout 30` then timed handlers out after 30 ms where the person meant 30 seconds.
 */
export function parseDuration(raw: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(raw);
  if (match === null) return undefined;
  const value = Number(match[1]) * UNITS[match[2]!]!;
  return Number.isFinite(value) ? Math.round(value) : undefined;
}

/**
 * What a person is told about a duration that does not parse, after its name (`--lease needs a
 * unit: ...`): a bare number is named as such.
 */
export function durationProblem(raw: string): string {
  const n = raw.trim();
  if (/^\d+(\.\d+)?$/.test(n)) return `needs a unit: "${n}" could be ${n}ms or ${n}s; write it as ${n}s, ${n}ms, ${n}m or ${n}h`;
  return `must be a duration with a unit (ms, s, m, h or d) like 500ms, 30s, 5m or 1h, got "${raw}"`;
}
