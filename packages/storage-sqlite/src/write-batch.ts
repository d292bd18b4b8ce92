import { applyDueReset, type BudgetState, type RollupRow, type ScopeRef } from '@spendguard/core/storage';

/** A budget row in raw (array) mode: cheaper than an object on the hot path. */
export type BudgetRow = [
  maxBudgetNano: number | null,
  budgetDuration: string | null,
  budgetResetAt: number | null,
  spendNano: number,
  reservedNano: number,
  softBudgetNano: number | null,
];

/** A rollup upsert's parameters: the dimensions, then the sums. */
export type RollupParams = [
  day: string,
  teamId: string,
  userId: string,
  apiKeyHash: string,
  model: string,
  provider: string,
  endUser: string,
  requests: number,
  failedRequests: number,
  spendNano: number,
  promptTokens: number,
  completionTokens: number,
];

/** The statements a batch reads counters with and writes its sums through. */
export interface BatchStatements {
  selectBudget: { get(kind: string, id: string): BudgetRow | undefined };
  writeBudget: {
    run(spend: number, reserved: number, resetAt: number | null, kind: string, id: string): unknown;
  };
  upsertDaily: { run(...params: RollupParams): unknown };
  upsertTag: { run(tag: string, ...params: RollupParams): unknown };
}

/**
 * The counters and rollups of one group-commit transaction. The reserves and settles of the batch
 * run one after another, in submission order, against the counter states kept here (each counter row
 * read once, under the write lock the transaction holds), exactly as if each had read and written the
 * row itself; `flush()` then writes each changed counter row once, and each rollup row once with the
 * sums of every settle that fell in it. So 64 concurrent requests on one key, user and team cost 3
 * counter writes and one rollup upsert per group instead of 64 times as many.
 *
 * An operation records its changes here only after its own statements (reservation and spend-log
 * rows) have succeeded, so an operation that fails leaves nothing behind, here or in its savepoint.
 */
export class WriteBatch {
  readonly #s: BatchStatements;
  /** Counter rows by scope kind, then id (no key string to build and hash per read). */
  readonly #budgets = new Map<string, Map<string, Counter>>();
  readonly #dirty: Counter[] = [];
  readonly #daily = new Map<string, RollupParams>();
  readonly #tags = new Map<string, [string, ...RollupParams]>();

  constructor(s: BatchStatements) {
    this.#s = s;
  }

  #counter(scope: ScopeRef): Counter {
    let ofKind = this.#budgets.get(scope.kind);
    if (!ofKind) {
      ofKind = new Map();
      this.#budgets.set(scope.kind, ofKind);
    }
    let counter = ofKind.get(scope.id);
    if (!counter) {
      const row = this.#s.selectBudget.get(scope.kind, scope.id);
      counter = { state: row ? toState(scope, row) : null, dirty: false };
      ofKind.set(scope.id, counter);
    }
    return counter;
  }

  /** A scope's counter as of `now` (a due period reset applied), or null when it has no counter row. */
  read(scope: ScopeRef, now: Date): BudgetState | null {
    const { state } = this.#counter(scope);
    return state && applyDueReset(state, now);
  }

  /** Counter states that operations decided; written by `flush()`. */
  write(states: readonly BudgetState[]): void {
    for (const state of states) {
      const counter = this.#counter(state.scope);
      counter.state = state;
      if (!counter.dirty) {
        counter.dirty = true;
        this.#dirty.push(counter);
      }
    }
  }

  /** One settled call into the daily rollup and, once per tag, the tag rollup. */
  rollup(r: RollupRow, tags: readonly string[]): void {
    const key = `${r.day}\u0000${r.teamId}\u0000${r.userId}\u0000${r.apiKeyHash}\u0000${r.model}\u0000${r.provider}\u0000${r.endUser}`;
    let daily = this.#daily.get(key);
    if (!daily) {
      daily = [r.day, r.teamId, r.userId, r.apiKeyHash, r.model, r.provider, r.endUser, 0, 0, 0, 0, 0];
      this.#daily.set(key, daily);
    }
    add(daily, 7, r);
    for (const tag of tags) {
      const tagKey = `${tag}\u0000${key}`;
      let row = this.#tags.get(tagKey);
      if (!row) {
        row = [tag, r.day, r.teamId, r.userId, r.apiKeyHash, r.model, r.provider, r.endUser, 0, 0, 0, 0, 0];
        this.#tags.set(tagKey, row);
      }
      add(row, 8, r);
    }
  }

  /** Writes every changed counter row and every rollup sum, then forgets them. */
  flush(): void {
    for (const { state } of this.#dirty) {
      if (!state) continue;
      this.#s.writeBudget.run(
        state.spendNano,
        state.reservedNano,
        state.budgetResetAt?.getTime() ?? null,
        state.scope.kind,
        state.scope.id,
      );
    }
    for (const params of this.#daily.values()) this.#s.upsertDaily.run(...params);
    for (const [tag, ...params] of this.#tags.values()) this.#s.upsertTag.run(tag, ...params);
    this.#budgets.clear();
    this.#dirty.length = 0;
    this.#daily.clear();
    this.#tags.clear();
  }
}

/** A counter row as the batch last read or decided it; `dirty` once it must be written. */
interface Counter {
  state: BudgetState | null;
  dirty: boolean;
}

/** Adds one settled call to a rollup row's five sums, from `at`: requests, failed, spend, tokens. */
function add(row: unknown[], at: number, r: RollupRow): void {
  const n = row as number[];
  n[at] = n[at]! + r.requests;
  n[at + 1] = n[at + 1]! + r.failedRequests;
  n[at + 2] = n[at + 2]! + r.spendNano;
  n[at + 3] = n[at + 3]! + r.promptTokens;
  n[at + 4] = n[at + 4]! + r.completionTokens;
}

export function toState(scope: ScopeRef, row: BudgetRow): BudgetState {
  const [maxBudgetNano, budgetDuration, resetAt, spendNano, reservedNano, softBudgetNano] = row;
  return {
    scope: { kind: scope.kind, id: scope.id },
    maxBudgetNano,
    budgetDuration,
    budgetResetAt: resetAt === null ? null : new Date(resetAt),
    spendNano,
    reservedNano,
    softBudgetNano,
  };
}
