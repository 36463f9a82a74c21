/**
 * The message mix every upsert scenario sends, so that the bare statement and rowfleet do the same
 * work: versioned updates over a fixed keyspace, mostly newer than what is stored, some stale, some
 * carrying a messageId, each `data` a small object (~150 bytes of JSON).
 */
import type { Message } from '../../src/records/message.ts';

export interface MessageMix {
  /** Distinct record ids; messages cycle through them, so after one pass every write is an update. */
  keyspace: number;
  /** Every n-th message carries an older version than the record holds (a late arrival). */
  staleEvery: number;
  /** Every n-th message carries a (unique) messageId. */
  messageIdEvery: number;
}

export const DEFAULT_MIX: MessageMix = { keyspace: 20_000, staleEvery: 20, messageIdEvery: 4 };

/**
 * Visits the keyspace in a scrambled but collision-free order: n * STRIDE mod keyspace repeats no
 * id within `keyspace` consecutive messages, so a batch never holds one id twice (the bare
 * `ON CONFLICT DO UPDATE` refuses to touch a row twice) and concurrent batches rarely share ids.
 */
const STRIDE = 7_919;

const PLANS = ['free', 'team', 'enterprise'] as const;

export interface MessageStream {
  next(): Message;
  batch(size: number): Message[];
}

/** `tag` makes messageIds unique across streams that write to the same database. */
export function messageStream(tag: string, mix: MessageMix = DEFAULT_MIX): MessageStream {
  if (mix.keyspace % STRIDE === 0) throw new Error(`keyspace ${mix.keyspace} must not be a multiple of ${STRIDE}`);
  let n = 0;
  const next = (): Message => {
    n += 1;
    const key = (n * STRIDE) % mix.keyspace;
    // Lower than the version this id got `2 * keyspace` messages ago, and never used for this id
    // (its versions are all ≡ n mod keyspace), so stale, not a same-version conflict.
    const stale = n % mix.staleEvery === 0 && n > 2 * mix.keyspace;
    const message: Message = {
      id: `record-${key}`,
      version: String(stale ? n - 2 * mix.keyspace - 1 : n),
      data: {
        name: `Customer ${key}`,
        email: `customer-${key}@example.test`,
        plan: PLANS[n % PLANS.length]!,
        balance: (n % 100_000) / 100,
        tags: ['bench', 'upsert'],
        seq: n,
      },
    };
    if (n % mix.messageIdEvery === 0) message.messageId = `${tag}-${n}`;
    return message;
  };
  return { next, batch: (size) => Array.from({ length: size }, next) };
}
