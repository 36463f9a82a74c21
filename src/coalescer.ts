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
      const batch = this.#queue.splice(0, this.#options.maxBatch);
      this.#inFlight += 1;
      void this.#send(batch).finally(() => {
        this.#inFlight -= 1;
        this.#drain();
      });
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
      await Promise.all(batch.map((p) => this.#options.send([p.item]).then(([out]) => p.resolve(out!), p.reject)));
    }
  }
}
