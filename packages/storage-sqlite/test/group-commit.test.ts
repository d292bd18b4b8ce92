import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { GroupCommit } from '../src/group-commit.js';
import { tempStores } from './temp-stores.js';

// Group commit with a write whose value the database refuses only in the batch's flush (a sum it
// contributed), as STRICT tables refuse a fractional nano-dollar: the write at fault fails alone.

const { freshPath } = tempStores('spendguard-group-commit-');

/** A batch context that sums what its writes add and writes the sum at flush, as WriteBatch does. */
class SumBatch {
  total = 0;
  constructor(private readonly db: Database.Database) {}
  add(n: number) {
    this.total += n;
  }
  flush() {
    this.db.prepare('UPDATE sums SET total = total + ?').run(this.total);
  }
}

function setUp() {
  const db = new Database(freshPath());
  db.exec('CREATE TABLE sums (total INTEGER NOT NULL) STRICT; INSERT INTO sums VALUES (0);');
  db.exec('CREATE TABLE notes (note TEXT NOT NULL) STRICT;');
  const total = () => (db.prepare('SELECT total FROM sums').get() as { total: number }).total;
  const notes = () => db.prepare('SELECT count(*) AS n FROM notes').get() as { n: number };
  return { db, total, notes };
}

/** A write that notes itself (its own statement) and adds `n` to the batch's sum. */
const write = (n: number) => (b: SumBatch) => {
  b.add(n);
  return n;
};

describe('GroupCommit', () => {
  it('fails only the write whose contribution the flush cannot store, when told to isolate it', async () => {
    const { db, total } = setUp();
    const isolated = (e: unknown) => (e as { code?: string }).code === 'SQLITE_CONSTRAINT_DATATYPE';
    const group = new GroupCommit(db, () => new SumBatch(db), undefined, isolated);
    // Same turn: one batch. 0.5 makes the sum a REAL, which the STRICT INTEGER column refuses.
    const results = await Promise.allSettled([
      group.submit(write(2)),
      group.submit(write(0.5)),
      group.submit(write(3)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(results[1]?.status === 'rejected' && (results[1].reason as { code: string }).code).toBe(
      'SQLITE_CONSTRAINT_DATATYPE',
    );
    expect(total()).toBe(5);
    db.close();
  });

  it('fails every write of the batch, writing none, on an error it is not told to isolate', async () => {
    const { db, total } = setUp();
    const group = new GroupCommit(db, () => new SumBatch(db));
    const results = await Promise.allSettled([
      group.submit(write(2)),
      group.submit(write(0.5)),
      group.submit(write(3)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(total()).toBe(0);
    db.close();
  });

  it('rolls back a write that throws in its own statement alone, without running the others alone', async () => {
    const { db, total, notes } = setUp();
    let runs = 0;
    const noting = (note: string | null, n: number) => (b: SumBatch) => {
      runs++;
      db.prepare('INSERT INTO notes VALUES (?)').run(note);
      b.add(n);
      return n;
    };
    const group = new GroupCommit(
      db,
      () => new SumBatch(db),
      undefined,
      () => true,
    );
    const results = await Promise.allSettled([
      group.submit(noting('a', 1)),
      group.submit(noting(null, 10)), // NOT NULL: fails in its own savepoint, adds nothing
      group.submit(noting('c', 4)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(total()).toBe(5);
    expect(notes().n).toBe(2);
    expect(runs).toBe(5); // once together (rolled back), once each in a savepoint
    db.close();
  });
});
