/**
 * A record's key: its kind and its id. `order/17` and `invoice/17` are two records, with their own
 * versions, leases and histories. In memory a key is often needed as one string (a Map key, a
 * pg-boss singletonKey): `kind/id`, unambiguous because a kind never contains `/`.
 */
export { DEFAULT_KIND, KIND_PATTERN } from '../kind.ts';

export interface RecordKey {
  kind: string;
  id: string;
}

/** `kind/id`: one string per record. */
export function keyOf(key: RecordKey): string {
  return `${key.kind}/${key.id}`;
}

/** Before every key in (kind, id) order: where a paged walk over records starts. */
export const FIRST_KEY: RecordKey = { kind: '', id: '' };

/** Columns of keys, for the functions that take `p_kinds text[], p_ids text[]`. */
export function keyColumns(keys: readonly RecordKey[]): { kinds: string[]; ids: string[] } {
  return { kinds: keys.map((k) => k.kind), ids: keys.map((k) => k.id) };
}
