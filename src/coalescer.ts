/**
 * Sends items that arrive together in one call: at most `maxInFlight` calls run at once; items
 * that arrive meanwhile queue, and the next call to start takes the whole queue (up to
 * `maxBatch`), in arrival order. No timer: an idle process sends an item at once (with `gather`,
 * at the end of the current turn of the event loop), a busy one sends fewer, larger calls. Used for
 * single HTTP upserts and for worker completions.
 */
export interface CoalescerOptions<In, Out> {
  maxInFlight: number;
  maxBatch: number;
  /** One call for many items; returns one output per item, in order. */
  send(items: In[]): Promise<Out[]>;
  /** Whether a failed call should be retried item by item, so that one bad item fails alone. */
  isolate?(err: unknown): boolean;
  /**
   * Let the current turn of the event loop finish before a call starts, so that items submitted
   * together (a claimed batch's completions) share it instead of the first going alone.
   */
  gather?: boolean;
  /**
   * Items with the same key keep their arrival order across calls: an item whose key is in a call
   * still in flight waits for it (two calls in flight run in either order on the database).
   */
  key?(item: In): string;
}

interface Pending<In, Out> {
  item: In;
  resolve(out: Out): void;
  reject(err: unknown): void;
}

export class Coalescer<In, Out> {
  readonly #options: CoalescerOptions<In, Out>;
  readonly #queue: Pending<In, Out>[] = [];
  #inFlight = 0;
  #gathering = false;
  /** Keys in calls in flight, with how many of their items: only with `key`. */
  readonly #busy = new Map<string, number>();

  constructor(options: CoalescerOptions<In, Out>) {
    this.#options = options;
  }

  submit(item: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#drain();
    });
  }

  #drain(): void {
    if (this.#gathering) return;
    if (this.#options.gather === true && this.#inFlight === 0 && this.#queue.length > 0) {
      this.#gathering = true;
      setImmediate(() => {
        this.#gathering = false;
        this.#start();
      });
      return;
    }
    this.#start();
  }

  #start(): void {
    while (this.#inFlight < this.#options.maxInFlight && this.#queue.length > 0) {
      const batch = this.#take();
      if (batch.length === 0) return;
      this.#inFlight += 1;
      void this.#send(batch).finally(() => {
        this.#inFlight -= 1;
        this.#release(batch);
        this.#drain();
      });
    }
  }

  /** The next call's items, in arrival order: all of the queue's first `maxBatch` whose key is free. */
  #take(): Pending<In, Out>[] {
    const key = this.#options.key;
    if (key === undefined || this.#inFlight === 0) return this.#claim(this.#queue.splice(0, this.#options.maxBatch));
    const batch: Pending<In, Out>[] = [];
    const rest: Pending<In, Out>[] = [];
    // A key passed over once stays passed over in this scan, so its items keep their order.
    const waiting = new Set<string>();
    for (const p of this.#queue) {
      const k = key(p.item);
      if (batch.length < this.#options.maxBatch && !waiting.has(k) && !this.#busy.has(k)) batch.push(p);
      else {
        waiting.add(k);
        rest.push(p);
      }
    }
    this.#queue.splice(0, this.#queue.length, ...rest);
    return this.#claim(batch);
  }

  #claim(batch: Pending<In, Out>[]): Pending<In, Out>[] {
    const key = this.#options.key;
    if (key !== undefined) for (const p of batch) this.#busy.set(key(p.item), (this.#busy.get(key(p.item)) ?? 0) + 1);
    return batch;
  }

  #release(batch: Pending<In, Out>[]): void {
    const key = this.#options.key;
    if (key === undefined) return;
    for (const p of batch) {
      const k = key(p.item);
      const n = this.#busy.get(k)! - 1;
      if (n === 0) this.#busy.delete(k);
      else this.#busy.set(k, n);
    }
  }

  async #send(batch: Pending<In, Out>[]): Promise<void> {
    try {
      const outs = await this.#options.send(batch.map((p) => p.item));
      batch.forEach((p, i) => p.resolve(outs[i]!));
    } catch (err) {
      if (batch.length === 1 || !(this.#options.isolate?.(err) ?? false)) {
        for (const p of batch) p.reject(err);
        return;
      }
      // One call each: keys in parallel, one key's items in order.
      const groups = new Map<string, Pending<In, Out>[]>();
      batch.forEach((p, i) => {
        const k = this.#options.key?.(p.item) ?? String(i);
        const group = groups.get(k);
        if (group === undefined) groups.set(k, [p]);
        else group.push(p);
      });
      const alone = async (group: Pending<In, Out>[]) => {
        for (const p of group) await this.#options.send([p.item]).then(([out]) => p.resolve(out!), p.reject);
      };
      await Promise.all([...groups.values()].map(alone));
    }
  }
}
