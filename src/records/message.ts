/**
 * What a message is, and the checks that keep bad input out of the database (invariant I6).
 * Every rejection names the field: `items[3].version must be a positive integer`. The HTTP API,
 * the library and the CLI all validate through here, so they refuse exactly the same things.
 */

import { DEFAULT_KIND, KIND_PATTERN, KIND_RULE } from '../kind.ts';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** A validated message. `version` is the decimal text of a bigint (Postgres `bigint`). */
export interface Message {
  /** The record's kind (`default` when absent; parseMessage always sets it): with `id`, its key. */
  kind?: string;
  id: string;
  data: JsonObject;
  version?: string;
  messageId?: string;
  /** -1000..1000; higher runs first among due records. Absent: 0. */
  priority?: number;
  /** Not processed before this instant (ISO-8601, normalized to UTC); absent or past: at once. */
  runAt?: string;
}

/** What callers pass in: versions may be numbers, decimal strings or bigints. */
export interface MessageInput {
  /** `^[a-z][a-z0-9_.-]{0,62}$`; `default` when absent. */
  kind?: string | null;
  id: string;
  data: object;
  version?: number | string | bigint | null;
  messageId?: string | null;
  priority?: number | null;
  /** An ISO-8601 timestamp with a time zone (`2026-12-01T12:00:00Z`), or a Date. */
  runAt?: string | Date | null;
}

export interface MessageLimits {
  /** Deepest nesting of objects and arrays in `data` (`{}` is depth 1). */
  maxDepth: number;
  /** Most messages in one batch. */
  maxBatch: number;
}

export const MAX_ID_LENGTH = 256;
export const MAX_MESSAGE_ID_LENGTH = 256;
const MAX_BIGINT = 9223372036854775807n;
const MESSAGE_FIELDS = new Set(['kind', 'id', 'data', 'version', 'messageId', 'priority', 'runAt']);
export const MIN_PRIORITY = -1000;
export const MAX_PRIORITY = 1000;

/** A message that cannot be accepted; `field` is its path in the request (`items[2].data.name`). */
export class MessageError extends Error {
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`${field} ${problem}`);
    this.name = 'MessageError';
    this.field = field;
  }
}

export function parseMessage(input: unknown, limits: Pick<MessageLimits, 'maxDepth'>, path = ''): Message {
  const at = (field: string) => (path === '' ? field : `${path}.${field}`);
  if (!isPlainObject(input)) throw new MessageError(path === '' ? 'body' : path, 'must be a JSON object');
  for (const key of Object.keys(input)) {
    if (!MESSAGE_FIELDS.has(key)) {
      throw new MessageError(at(key), 'is not a known field (expected kind, id, data, version, messageId, priority, runAt)');
    }
  }

  const id = input.id;
  if (id === undefined || id === null) throw new MessageError(at('id'), 'is required');
  if (typeof id !== 'string') throw new MessageError(at('id'), 'must be a string');
  checkText(id, at('id'), MAX_ID_LENGTH);

  const data = input.data;
  if (data === undefined) throw new MessageError(at('data'), 'is required');
  if (!isPlainObject(data)) throw new MessageError(at('data'), 'must be a JSON object');
  checkJson(data, at('data'), limits.maxDepth);

  const message: Message = { kind: parseKind(input.kind, at('kind')) ?? DEFAULT_KIND, id, data: data as JsonObject };
  const version = parseVersion(input.version, at('version'));
  if (version !== undefined) message.version = version;

  const messageId = input.messageId;
  if (messageId !== undefined && messageId !== null) {
    if (typeof messageId !== 'string') throw new MessageError(at('messageId'), 'must be a string');
    checkText(messageId, at('messageId'), MAX_MESSAGE_ID_LENGTH);
    message.messageId = messageId;
  }

  const priority = parsePriority(input.priority, at('priority'));
  if (priority !== undefined) message.priority = priority;
  const runAt = parseRunAt(input.runAt, at('runAt'));
  if (runAt !== undefined) message.runAt = runAt;
  return message;
}

/** A kind's name (`order`, `billing.invoice`); undefined when absent. */
export function parseKind(raw: unknown, field = 'kind'): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'string' || !KIND_PATTERN.test(raw)) {
    throw new MessageError(
      field,
      `must be a kind name: ${KIND_RULE}, got ${JSON.stringify(raw)}`,
    );
  }
  return raw;
}

/** An integer from -1000 to 1000; undefined when absent. */
export function parsePriority(raw: unknown, field = 'priority'): number | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < MIN_PRIORITY || raw > MAX_PRIORITY) {
    throw new MessageError(field, `must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/**
 * An ISO-8601 date and time with a time zone (Z or ±hh:mm), or a Date, as UTC ISO text;
 * undefined when absent. A time without a zone is refused: it would depend on the server's.
 */
export function parseRunAt(raw: unknown, field = 'runAt'): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  const problem = 'must be an ISO-8601 timestamp with a time zone, like 2026-12-01T12:00:00Z';
  let ms: number;
  if (raw instanceof Date) ms = raw.getTime();
  else if (typeof raw === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i.test(raw)) ms = Date.parse(raw);
  else throw new MessageError(field, `${problem}, got ${JSON.stringify(raw)}`);
  if (!Number.isFinite(ms)) throw new MessageError(field, `${problem}, got ${JSON.stringify(raw instanceof Date ? 'Invalid Date' : raw)}`);
  return new Date(ms).toISOString();
}

/**
 * A body of POST /upsert: one message, or `{"items": [...]}`. `idempotencyKey` (the header) sets
 * the messageId of a single message.
 */
export function parseUpsertBody(
  body: unknown,
  limits: MessageLimits,
  idempotencyKey?: string,
): { batch: false; messages: [Message] } | { batch: true; messages: Message[] } {
  if (!isPlainObject(body)) throw new MessageError('body', 'must be a JSON object');
  if ('items' in body) {
    for (const key of Object.keys(body)) {
      if (key !== 'items') throw new MessageError(key, 'is not allowed beside items (a batch is {"items": [...]})');
    }
    if (idempotencyKey !== undefined) {
      throw new MessageError('Idempotency-Key', 'applies to a single message; give each batch item its own messageId');
    }
    return { batch: true, messages: parseBatch(body.items, limits) };
  }
  const message = parseMessage(body, limits);
  if (idempotencyKey !== undefined) {
    checkText(idempotencyKey, 'Idempotency-Key', MAX_MESSAGE_ID_LENGTH);
    if (message.messageId !== undefined && message.messageId !== idempotencyKey) {
      throw new MessageError('Idempotency-Key', 'differs from the body\'s messageId; send one or make them equal');
    }
    message.messageId = idempotencyKey;
  }
  return { batch: false, messages: [message] };
}

export function parseBatch(items: unknown, limits: MessageLimits): Message[] {
  if (!Array.isArray(items)) throw new MessageError('items', 'must be an array of messages');
  if (items.length === 0) throw new MessageError('items', 'must hold at least one message');
  if (items.length > limits.maxBatch) {
    throw new MessageError('items', `holds ${items.length} messages; at most ${limits.maxBatch} are allowed in one request`);
  }
  return items.map((item, i) => parseMessage(item, limits, `items[${i}]`));
}

/** A positive bigint as decimal text; undefined when absent. */
export function parseVersion(raw: unknown, field = 'version'): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  const problem = 'must be a positive integer (a number, or a decimal string for values above 2^53)';
  let value: bigint;
  if (typeof raw === 'number') {
    if (!Number.isSafeInteger(raw)) throw new MessageError(field, `${problem}; ${raw} is not a safe integer`);
    value = BigInt(raw);
  } else if (typeof raw === 'string') {
    if (!/^[0-9]{1,19}$/.test(raw)) throw new MessageError(field, problem);
    value = BigInt(raw);
  } else if (typeof raw === 'bigint') {
    value = raw;
  } else {
    throw new MessageError(field, problem);
  }
  if (value < 1n) throw new MessageError(field, `${problem}; got ${value}`);
  if (value > MAX_BIGINT) throw new MessageError(field, `must be at most ${MAX_BIGINT}`);
  return value.toString();
}

/** Versions leave rowfleet as numbers when exact, as decimal strings when above 2^53. */
export function presentVersion(text: string): number | string {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Postgres text and jsonb cannot hold U+0000, and jsonb refuses unpaired UTF-16 surrogates
 * (`"\ud800"` parses in JavaScript): both would fail inside the database, so refuse them here.
 */
function checkText(text: string, field: string, maxLength: number): void {
  if (text.length === 0) throw new MessageError(field, 'must not be empty');
  if (text.includes('\u0000')) throw new MessageError(field, 'must not contain the NUL character (\\u0000)');
  if (!text.isWellFormed()) throw new MessageError(field, 'must not contain unpaired UTF-16 surrogates');
  // Counted in characters (code points), as Postgres counts them.
  if (text.length > maxLength && [...text].length > maxLength) {
    throw new MessageError(field, `must be at most ${maxLength} characters`);
  }
}

function checkString(text: string, field: string): void {
  if (text.includes('\u0000')) throw new MessageError(field, 'must not contain the NUL character (\\u0000)');
  if (!text.isWellFormed()) throw new MessageError(field, 'must not contain unpaired UTF-16 surrogates');
}

/**
 * Walks `data` without recursion (a hostile body cannot blow the stack), checking depth, strings
 * and keys, and that every value is JSON (library callers can pass anything).
 */
function checkJson(root: object, rootField: string, maxDepth: number): void {
  const stack: Array<{ value: unknown; field: string; depth: number }> = [{ value: root, field: rootField, depth: 1 }];
  while (stack.length > 0) {
    const { value, field, depth } = stack.pop()!;
    if (typeof value === 'string') {
      checkString(value, field);
      continue;
    }
    if (value === null || typeof value === 'boolean') continue;
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new MessageError(field, 'must be a finite number');
      continue;
    }
    if (typeof value !== 'object') throw new MessageError(field, `is a ${typeof value}, which JSON cannot hold`);
    if (depth > maxDepth) throw new MessageError(rootField, `is nested deeper than ${maxDepth} levels`);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push({ value: value[i], field: `${field}[${i}]`, depth: depth + 1 });
      continue;
    }
    if (!isPlainObject(value)) throw new MessageError(field, 'must be plain JSON (an object, array, string, number, boolean or null)');
    for (const [key, child] of Object.entries(value)) {
      checkString(key, `${field} key ${JSON.stringify(key.slice(0, 40))}`);
      stack.push({ value: child, field: `${field}.${key}`, depth: depth + 1 });
    }
  }
}
