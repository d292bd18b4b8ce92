import { SpendGuardError, StorageConflictError } from '../errors.js';
import type { GuardLogger } from '../guard-logger.js';
import type {
  ReserveInput,
  ReserveResult,
  SettleInput,
  SettleResult,
  SpendStorage,
} from './storage-contract.js';

export interface StorageGateOptions {
  timeoutMs: number;
  maxPendingSettlements: number;
  /** How long a settlement waits for others to be written with (see `settleBatchMs`). */
  settleBatchMs: number;
  logger: GuardLogger;
  /**
   * Called after each settlement is written (at once or on a retry), with the counters it left:
   * what alerts and other sinks watch. Must not block; whatever it throws is logged.
   */
  onSettled?: (input: SettleInput, result: SettleResult) => void;
}

/** Counters of the storage failure path, for metrics (`guard.stats()`). */
export interface StorageGateStats {
  /** Storage calls that failed or timed out. */
  storageErrors: number;
  /** Settlements waiting to be written again (storage was down when their call finished). */
  pendingSettlements: number;
  /** Settlements written late, after at least one failed attempt. */
  settlementsRecovered: number;
  /** Settlements dropped because the pending queue was full (each also logged). */
  settlementsDropped: number;
  /**
   * Settlements the store refused for a value they carry (`SpendStorage.isInputError`), each logged and
   * never retried (it could never succeed): its reservation is charged at its estimate after the TTL.
   */
  settlementsRefused: number;
}

/** Settlements handed to storage together at most (one transaction on SQLite). */
const MAX_SETTLE_BATCH = 256;

/**
 * Everything the guard asks of storage goes through here: each call is bounded by a timeout and
 * any failure becomes a `STORAGE_UNAVAILABLE` error (never a silent pass), a reservation that
 * answers after its timeout is released, and a settlement that cannot be written is kept (bounded)
 * and retried with backoff until storage answers again, so a served call's spend is not lost while
 * the process lives.
 */
export class StorageGate {
  readonly stats: StorageGateStats = {
    storageErrors: 0,
    pendingSettlements: 0,
    settlementsRecovered: 0,
    settlementsDropped: 0,
    settlementsRefused: 0,
  };
  private pending: SettleInput[] = [];
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = 100;
  private draining: Promise<void> | null = null;
  private batch: Waiting[] = [];
  private batchTimer: NodeJS.Timeout | null = null;
  /** Whether a settlement waiting in `batch` may raise what a reservation is judged against. */
  private batchMayRaise = false;
  /** Settlements handed to storage and not yet answered. */
  private readonly writing = new Set<Promise<unknown>>();

  /** Calls in flight, oldest first: each call's deadline, watched by one timer for them all. */
  private readonly watched = new DeadlineList();
  private watchTimer: NodeJS.Timeout | null = null;

  /**
   * @param open the opened storage (it rejects while storage cannot open)
   * @param opened the storage once it is open, so that a call does not wait a promise turn for it
   */
  constructor(
    private readonly open: () => Promise<SpendStorage>,
    private readonly options: StorageGateOptions,
    private readonly opened: () => SpendStorage | null = () => null,
  ) {}

  /** Runs one storage call under the timeout; failures become `STORAGE_UNAVAILABLE`. */
  async call<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T> {
    const work = this.start(fn);
    try {
      return await this.within(what, work);
    } catch (error) {
      work.catch(() => {}); // it may still fail later; that is already reported
      throw this.failure(error);
    }
  }

  /** What a storage call's failure is to the guard: `STORAGE_UNAVAILABLE`, unless it is an answer. */
  private failure(error: unknown): unknown {
    // The guard's own refusals and id conflicts are answers, not storage failures.
    if (error instanceof SpendGuardError || error instanceof StorageConflictError) return error;
    // So is a value the store refused: the caller's fault, a 400, never an outage.
    if (this.opened()?.isInputError?.(error)) return inputRefused(error);
    this.stats.storageErrors++;
    return new SpendGuardError('STORAGE_UNAVAILABLE', 'spendguard could not reach its storage; try again', {
      cause: error,
    });
  }

  private start<T>(fn: (storage: SpendStorage) => Promise<T>): Promise<T> {
    const storage = this.opened();
    if (!storage) return this.open().then(fn);
    try {
      return fn(storage);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * `work`, or a rejection once `timeoutMs` has passed without its answer. Every call has the same
   * timeout, so deadlines come in the order calls start: one timer, set for the oldest call in
   * flight, watches them all (a timer per call cost more than the rest of the call's bookkeeping).
   */
  private within<T>(what: string, work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = this.watched.push(Date.now() + this.options.timeoutMs, () =>
        reject(new Error(`storage did not answer ${what} within ${this.options.timeoutMs} ms`)),
      );
      this.watchTimer ??= this.armWatch();
      work.then(
        (value) => {
          this.unwatch(entry);
          resolve(value);
        },
        (error: unknown) => {
          this.unwatch(entry);
          reject(error);
        },
      );
    });
  }

  private unwatch(entry: Deadline): void {
    this.watched.remove(entry);
    if (this.watched.empty && this.watchTimer) {
      clearTimeout(this.watchTimer);
      this.watchTimer = null;
    }
  }

  private armWatch(): NodeJS.Timeout | null {
    const first = this.watched.first;
    if (!first) return null;
    return setTimeout(
      () => {
        this.watchTimer = null;
        const now = Date.now();
        for (let due = this.watched.first; due && due.at <= now; due = this.watched.first) {
          this.watched.remove(due);
          due.expire();
        }
        this.watchTimer = this.armWatch();
      },
      Math.max(0, first.at - Date.now()),
    );
  }

  /**
   * A reservation under the timeout; one that lands after it was given up on is released.
   *
   * No call is judged without the calls already finished, yet a reservation does not wait for them to
   * be written: a finished call's settlement that costs at most what it reserved, on the scopes it
   * reserved, can only lower what a `strict` or `shrink` judgement counts (spend + reserved), so a
   * reservation that fits against the counters as written fits after those settlements too, and one
   * that does not fit is judged again once they are written. A settlement that may raise the count
   * (it costs more than it reserved, or reserved nothing), and every settlement in `soft` mode (which
   * counts spend alone), is written first, in the same turn (so in the same transaction on SQLite).
   * One at a time on SQLite this takes the spend log's pages out of every admission's commit.
   */
  async reserve(input: ReserveInput): Promise<ReserveResult> {
    if (this.batch.length > 0 && (this.batchMayRaise || input.mode === 'soft')) this.writeBatch();
    const unwritten = this.batch.length > 0 || this.writing.size > 0;
    const result = await this.reserveNow(input);
    if (result.ok || !unwritten) return result;
    await this.written();
    return this.reserveNow(input);
  }

  private async reserveNow(input: ReserveInput): Promise<ReserveResult> {
    let gaveUp = false;
    const work = this.start((s) => s.reserve(input));
    try {
      return await this.call('reserve', () => work);
    } catch (error) {
      gaveUp = true;
      throw error;
    } finally {
      if (gaveUp) {
        // Only a reservation that did land late needs releasing; a failed one is already reported.
        work.then(
          (r) =>
            r.ok &&
            this.open()
              .then((s) => s.release(input.reservationId))
              .catch((e: unknown) =>
                this.options.logger.error(
                  `could not release abandoned reservation ${input.reservationId}`,
                  e,
                ),
              ),
          () => {},
        );
      }
    }
  }

  /**
   * Writes a settlement, with the others that finish within `settleBatchMs` (all handed to storage in
   * one event-loop turn, which writes them in one transaction); when storage fails it is queued and
   * retried, and this resolves `false` (the spend is not lost, only late). `mayRaise`: false only when
   * the settlement costs at most what its call reserved, on the scopes it reserved (see `reserve`).
   * `urgent`: a response waits for it, so it and the settlements waiting are handed to storage now.
   */
  settle(input: SettleInput, mayRaise = true, urgent = false): Promise<boolean> {
    if (this.options.settleBatchMs <= 0) return this.write(input);
    return new Promise((resolve) => {
      this.batch.push({ input, resolve, answered: false });
      if (mayRaise) this.batchMayRaise = true;
      // Urgent (a response waits on it): now, with whatever else waits (one transaction on SQLite).
      if (urgent || this.batch.length >= MAX_SETTLE_BATCH) this.writeBatch();
      else this.batchTimer ??= setTimeout(() => this.writeBatch(), this.options.settleBatchMs);
    });
  }

  /** Hands every waiting settlement to storage now (`flush()`, `close()`, a full batch, the timer). */
  writeBatch(): void {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    this.batchMayRaise = false;
    const writing = this.writeAll(batch);
    this.writing.add(writing);
    void writing.then(() => this.writing.delete(writing));
  }

  /**
   * A batch handed to storage in this turn (once open). Its settlements start together, so one deadline
   * watches them all (a timer, promise and closures per settlement were the largest allocation of a
   * guarded call); each is answered alone, as it is written or fails.
   */
  private writeAll(batch: Waiting[]): Promise<void> {
    return new Promise<void>((done) => {
      let left = batch.length;
      const answer = (item: Waiting, error: unknown, result: SettleResult | null) => {
        if (item.answered) return;
        item.answered = true;
        if (result) this.settled(item.input, result);
        else this.failed(item.input, this.failure(error));
        item.resolve(result !== null);
        if (--left > 0) return;
        this.unwatch(deadline);
        done();
      };
      const deadline = this.watched.push(Date.now() + this.options.timeoutMs, () => {
        const late = new Error(`storage did not answer settle within ${this.options.timeoutMs} ms`);
        for (const item of batch) answer(item, late, null);
      });
      this.watchTimer ??= this.armWatch();
      for (const item of batch) {
        this.start((s) => s.settle(item.input)).then(
          (result) => answer(item, null, result),
          (error: unknown) => answer(item, error, null),
        );
      }
    });
  }

  /** Resolves once every settlement handed to this gate so far has been written (or queued to retry). */
  private async written(): Promise<void> {
    this.writeBatch();
    await Promise.all([...this.writing]);
  }

  private async write(input: SettleInput): Promise<boolean> {
    let result: SettleResult;
    try {
      result = await this.call('settle', (s) => s.settle(input));
    } catch (error) {
      this.failed(input, error);
      return false;
    }
    this.settled(input, result);
    return true;
  }

  /** A settlement storage did not write: refused for a value it carries (never retried), or queued. */
  private failed(input: SettleInput, error: unknown): void {
    if (isInputRefusal(error)) this.refused(input, error);
    else this.enqueue(input, error);
  }

  /** A settlement the store refused for a value it carries: logged, counted, never retried. */
  private refused(input: SettleInput, error: SpendGuardError): void {
    this.stats.settlementsRefused++;
    this.options.logger.error(
      `the store refused the spend of request ${input.log.requestId} ($${input.costNano / 1e9}) for a value it carries; not retried: its reservation will be charged at its estimate after the TTL`,
      error.cause ?? error,
    );
  }

  private settled(input: SettleInput, result: SettleResult): void {
    if (!result.applied || !this.options.onSettled) return;
    try {
      this.options.onSettled(input, result);
    } catch (error) {
      this.options.logger.error(`after settling request ${input.log.requestId}`, error);
    }
  }

  private enqueue(input: SettleInput, error: unknown): void {
    if (this.pending.length >= this.options.maxPendingSettlements) {
      const dropped = this.pending.shift()!;
      this.stats.settlementsDropped++;
      this.options.logger.error(
        `pending settlement queue full (${this.options.maxPendingSettlements}): dropped request ${dropped.log.requestId} ($${dropped.costNano / 1e9}); its reservation will be charged at its estimate after the TTL`,
      );
    }
    this.pending.push(input);
    this.stats.pendingSettlements = this.pending.length;
    if (this.pending.length === 1) {
      this.options.logger.error(
        `could not record the spend of request ${input.log.requestId}; keeping it and retrying (spendguard pending settlements: 1)`,
        (error as { cause?: unknown }).cause ?? error,
      );
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.pending.length === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.drain();
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  /**
   * Writes the pending settlements. The oldest goes first, alone, so that while storage is down one
   * call finds that out, not every pending one; if it fails it goes to the back of the queue, so that a
   * settlement that keeps failing never blocks those behind it. Once it is written, the others follow,
   * a batch at a time (the store writes a batch together, and each settlement fails alone).
   */
  drain(): Promise<void> {
    this.draining ??= (async () => {
      const head = this.pending[0];
      if (!head) return;
      if (!(await this.retry(head))) {
        this.pending = [...this.pending.filter((p) => p !== head), head];
        this.backOff();
        return;
      }
      this.forget(new Set([head]));
      let allWritten = true;
      for (let from = 0; from < this.pending.length; ) {
        const batch = this.pending.slice(from, from + MAX_SETTLE_BATCH);
        const answered = await Promise.all(batch.map((p) => this.retry(p)));
        const done = new Set(batch.filter((_, i) => answered[i]));
        this.forget(done);
        from += batch.length - done.size;
        if (done.size < batch.length) allWritten = false;
        if (done.size === 0) break; // storage went away again: wait for the next round
      }
      if (allWritten) this.retryDelayMs = 100;
      else this.backOff();
      if (this.pending.length === 0)
        this.options.logger.warn('storage is back: every pending settlement is written');
    })().finally(() => {
      this.draining = null;
      this.scheduleRetry();
    });
    return this.draining;
  }

  /** One pending settlement again: true when storage answered it (written, or refused for its data). */
  private async retry(input: SettleInput): Promise<boolean> {
    try {
      this.settled(input, await this.call('settle', (s) => s.settle(input)));
      this.stats.settlementsRecovered++;
    } catch (error) {
      if (!isInputRefusal(error)) return false;
      this.refused(input, error);
    }
    return true;
  }

  private forget(done: ReadonlySet<SettleInput>): void {
    if (done.size === 0) return;
    this.pending = this.pending.filter((p) => !done.has(p));
    this.stats.pendingSettlements = this.pending.length;
  }

  private backOff(): void {
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, 5_000);
  }

  /** On shutdown: keeps trying the pending settlements for up to `deadlineMs`. */
  async flush(deadlineMs: number): Promise<void> {
    this.writeBatch();
    const end = Date.now() + deadlineMs;
    while (this.pending.length > 0 && Date.now() < end) {
      await this.drain();
      if (this.pending.length > 0)
        await new Promise((r) => setTimeout(r, Math.min(this.retryDelayMs, end - Date.now())));
    }
    if (this.pending.length > 0) {
      this.options.logger.error(
        `shutting down with ${this.pending.length} settlements unwritten; their reservations will be charged at their estimates after the TTL`,
      );
    }
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}

/** The 400 for a call whose value the store refused; the store's own words, for whoever reads it. */
function inputRefused(error: unknown): SpendGuardError {
  let root = error;
  while (root instanceof Error && root.cause instanceof Error) root = root.cause;
  const detail = (root instanceof Error ? root.message : String(root)).split('\n')[0]!.slice(0, 200);
  return new SpendGuardError(
    'BAD_REQUEST',
    `Invalid request: storage refused a value of this request (${detail})`,
    { cause: error },
  );
}

function isInputRefusal(error: unknown): error is SpendGuardError {
  return error instanceof SpendGuardError && error.code === 'BAD_REQUEST';
}

/** A settlement waiting in a batch, answered once (`answered`) whether written, failed or timed out. */
interface Waiting {
  input: SettleInput;
  resolve: (written: boolean) => void;
  answered: boolean;
}

interface Deadline {
  at: number;
  expire: () => void;
  prev: Deadline | null;
  next: Deadline | null;
}

/** A doubly linked list of deadlines in the order they were added: O(1) to add, remove and peek. */
class DeadlineList {
  first: Deadline | null = null;
  private last: Deadline | null = null;

  get empty(): boolean {
    return this.first === null;
  }

  push(at: number, expire: () => void): Deadline {
    const entry: Deadline = { at, expire, prev: this.last, next: null };
    if (this.last) this.last.next = entry;
    else this.first = entry;
    this.last = entry;
    return entry;
  }

  /** Removes an entry; removing one already removed does nothing. */
  remove(entry: Deadline): void {
    if (entry.prev) entry.prev.next = entry.next;
    else if (this.first === entry) this.first = entry.next;
    else return; // not in the list
    if (entry.next) entry.next.prev = entry.prev;
    else this.last = entry.prev;
    entry.prev = entry.next = null;
  }
}
