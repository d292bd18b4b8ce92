/** One op's answer inside a batch: its value, or the error that op alone failed with. */
export type OpOutcome<O> = { ok: true; value: O } | { ok: false; error: unknown };

interface Queued<I, O> {
  input: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

/** How many batches and ops a batcher has sent (for tests and diagnostics). */
export interface BatchStats {
  batches: number;
  ops: number;
  largest: number;
  /** Ops waiting for a batch. */
  queued: number;
  /** Halves sent again because their batch failed on one op's value (see `isolate`). */
  resent: number;
}

/**
 * Micro-batching: calls submitted while this batcher's batch is in flight queue up and go together as
 * the next batch when it returns; calls submitted in the same synchronous turn as the first go with
 * it (the send waits one microtask, never a timer). So a lone call is sent at once, and under load one
 * round trip carries every call that arrived during the previous one, at most `maxBatch` of them.
 *
 * `send` answers each op on its own (an op can fail alone). If `send` itself fails with an error that
 * `isolate` says one op's value may have caused (Postgres refuses the whole statement for a NUL in one
 * op's text), the batch is sent again in halves, down to that op alone, so that only it fails and the
 * others are written; with any other error (the database is unreachable) every op of the batch fails
 * with it. At most `maxInFlight` batches are sent at a time.
 */
export class MicroBatcher<I, O> {
  readonly stats: BatchStats = { batches: 0, ops: 0, largest: 0, queued: 0, resent: 0 };
  #queue: Array<Queued<I, O>> = [];
  #inFlight = 0;
  #scheduled = false;
  #idle: Array<() => void> = [];

  constructor(
    private readonly send: (inputs: I[]) => Promise<Array<OpOutcome<O>>>,
    private readonly maxBatch: number,
    private readonly maxInFlight = 1,
    private readonly isolate: (error: unknown) => boolean = () => false,
  ) {}

  submit(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ input, resolve, reject });
      this.stats.queued = this.#queue.length;
      if (!this.#scheduled && this.#inFlight < this.maxInFlight) {
        this.#scheduled = true;
        queueMicrotask(() => {
          this.#scheduled = false;
          this.#pump();
        });
      }
    });
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.#queue.length === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #pump(): void {
    while (this.#inFlight < this.maxInFlight && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.maxBatch);
      this.stats.queued = this.#queue.length;
      this.#inFlight++;
      this.stats.batches++;
      this.stats.ops += batch.length;
      this.stats.largest = Math.max(this.stats.largest, batch.length);
      // #run never rejects: a failed send rejects the batch's ops instead.
      void this.#run(batch).finally(() => {
        this.#inFlight--;
        this.#pump();
        if (this.#queue.length === 0 && this.#inFlight === 0) {
          for (const resolve of this.#idle.splice(0)) resolve();
        }
      });
    }
  }

  async #run(batch: Array<Queued<I, O>>): Promise<void> {
    let outcomes: Array<OpOutcome<O>>;
    try {
      outcomes = await this.send(batch.map((q) => q.input));
      if (outcomes.length !== batch.length) {
        throw new Error(`a batch of ${batch.length} ops got ${outcomes.length} answers`);
      }
    } catch (error) {
      if (batch.length > 1 && this.isolate(error)) {
        // In order, first half first: each op still applies after those submitted before it.
        const half = Math.ceil(batch.length / 2);
        this.stats.resent += 2;
        await this.#run(batch.slice(0, half));
        await this.#run(batch.slice(half));
        return;
      }
      for (const q of batch) q.reject(error);
      return;
    }
    batch.forEach((q, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) q.resolve(outcome.value);
      else q.reject(outcome.error);
    });
  }
}
