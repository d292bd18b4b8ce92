import type Database from 'better-sqlite3';

interface Pending<C> {
  run: (batch: C) => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Told how each transaction ended (what it wrote may be cached only once it committed). */
export interface CommitOutcome {
  committed(): void;
  rolledBack(): void;
}

type Commit<C> = (batch: Pending<C>[]) => Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>;

/**
 * Group commit: guarded writes submitted in the same event-loop turn share one `BEGIN IMMEDIATE`
 * transaction and one batch context (`newBatch()`, see WriteBatch) whose `flush()` writes what they
 * decided just before the commit. Each write stays atomic: when one throws, the transaction is rolled
 * back and the batch run again with each write in its own savepoint, so that the failing write rolls
 * back alone and rejects alone (a write may therefore run twice: it must depend on the database and its
 * input only). Writes apply in submission order under the one write lock. Should the batch still fail
 * as a whole with an error `isolate` blames on a value (its flush writes a sum one write contributed),
 * each write is run once more in a transaction of its own, so that only the write at fault fails; with
 * any other error (the database is locked, the disk full) every write of the batch fails with it,
 * having written nothing. Under concurrent load this turns N commits (a dozen page writes each) into one.
 */
export class GroupCommit<C extends { flush(): void }> {
  private queue: Pending<C>[] = [];
  private scheduled = false;
  private readonly savepoint: (run: () => unknown) => unknown;
  private readonly commitAll: Commit<C>;
  private readonly commitEach: Commit<C>;

  constructor(
    db: Database.Database,
    newBatch: () => C,
    private readonly outcome: CommitOutcome = { committed() {}, rolledBack() {} },
    private readonly isolate: (error: unknown) => boolean = () => false,
  ) {
    this.savepoint = db.transaction((run: () => unknown) => run());
    // The common case first: every write of the batch succeeds, so none needs a savepoint of its own
    // (two statements more per write). A write that throws rolls the whole transaction back, and the
    // batch is then run again with a savepoint around each write.
    const commit = (ops: Pending<C>[], savepoints: boolean) => {
      const context = newBatch();
      const results = ops.map((op) => {
        if (!savepoints) return { ok: true as const, value: op.run(context) };
        try {
          return { ok: true as const, value: this.savepoint(() => op.run(context)) };
        } catch (error) {
          return { ok: false as const, error };
        }
      });
      context.flush();
      return results;
    };
    this.commitAll = db.transaction((ops: Pending<C>[]) => commit(ops, false)).immediate;
    this.commitEach = db.transaction((ops: Pending<C>[]) => commit(ops, true)).immediate;
  }

  /** One write in a transaction of its own (the last resort of a batch that failed as a whole). */
  private commitAlone(op: Pending<C>): { ok: true; value: unknown } | { ok: false; error: unknown } {
    try {
      const [result] = this.commitAll([op]);
      this.outcome.committed();
      return result!;
    } catch (error) {
      this.outcome.rolledBack();
      return { ok: false, error };
    }
  }

  submit<T>(run: (batch: C) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    let results: ReturnType<Commit<C>>;
    try {
      results = this.commitAll(batch);
      this.outcome.committed();
    } catch (error) {
      this.outcome.rolledBack();
      if (batch.length === 1) return void batch[0]!.reject(error);
      try {
        results = this.commitEach(batch);
        this.outcome.committed();
      } catch (again) {
        this.outcome.rolledBack();
        if (!this.isolate(again)) {
          for (const op of batch) op.reject(again);
          return;
        }
        results = batch.map((op) => this.commitAlone(op));
      }
    }
    batch.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.value);
      else op.reject(r.error);
    });
  }
}
