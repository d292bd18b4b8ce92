import type Database from 'better-sqlite3';

interface Pending<C> {
  run: (batch: C) => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: guarded writes submitted in the same event-loop turn share one `BEGIN IMMEDIATE`
 * transaction, each inside its own savepoint, and one batch context (`newBatch()`, see WriteBatch)
 * whose `flush()` writes what they decided just before the commit. Each write stays atomic (a write
 * that throws rolls back its savepoint alone and rejects alone), writes apply in submission order under
 * the one write lock, and a failed flush or commit rejects every write of the batch, having written
 * none of them. Under concurrent load this turns N commits (a dozen page writes each) into one.
 */
export class GroupCommit<C extends { flush(): void }> {
  private queue: Pending<C>[] = [];
  private scheduled = false;
  private readonly savepoint: (run: () => unknown) => unknown;
  private readonly commit: (
    batch: Pending<C>[],
  ) => Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>;

  constructor(db: Database.Database, newBatch: () => C) {
    this.savepoint = db.transaction((run: () => unknown) => run());
    this.commit = db.transaction((ops: Pending<C>[]) => {
      const context = newBatch();
      // A lone write needs no savepoint: if it throws, the whole transaction rolls back with it.
      const results =
        ops.length === 1
          ? [{ ok: true as const, value: ops[0]!.run(context) }]
          : ops.map((op) => {
              try {
                return { ok: true as const, value: this.savepoint(() => op.run(context)) };
              } catch (error) {
                return { ok: false as const, error };
              }
            });
      context.flush();
      return results;
    }).immediate;
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
    let results: ReturnType<typeof this.commit>;
    try {
      results = this.commit(batch);
    } catch (error) {
      for (const op of batch) op.reject(error);
      return;
    }
    batch.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.value);
      else op.reject(r.error);
    });
  }
}
