/**
 * Escrow admission: a process holds leases (slices of a scope set's remaining budget, each reserved in
 * the store as one reservation by `SpendStorage.setLease`) and admits calls against them in memory.
 *
 * What keeps it exact:
 * - The store admits a lease only if it fits every capped scope, as a reservation of its size would;
 *   the process then admits a call only while what its lease holds covers every call it admitted and
 *   every cost it settled since the lease was written. So the store's `spend + reserved` always covers
 *   every call in flight, on every instance, and the sum never passes a cap.
 * - Near a cap (the room left, with this lease given back, is under `nearCapCalls` worst cases) there
 *   is no lease: calls go back to a reservation each, exact to the last nano-dollar, and a lease still
 *   held is shrunk to what its calls in flight need.
 * - A lease admits calls for `leaseMs` after the write that granted it was sent, and is written again
 *   (renewed) before then; a renewal reads the counters as they are, so a budget lowered, or a counter
 *   deleted, stops admissions from memory within `leaseMs`.
 * - A lease is a reservation for every other operation: a crashed holder's lease is charged at what it
 *   holds by the TTL or dead-process sweep, never under-counting spend.
 *
 * A scope set gets a lease only once it sees `minCalls` calls within one `leaseMs` window: a store write
 * per lease only pays off for scopes called often, and the calls of a quiet scope keep their own
 * reservations.
 */
import type {
  BudgetState,
  LeaseInput,
  LeaseResult,
  PendingCall,
  ScopeRef,
} from '../storage/storage-contract.js';

export interface EscrowOptions {
  /** Names the leases (`lease:<processId>:<n>`) and the holder the dead-process sweep charges. */
  processId: string;
  /** The guard's clock, in ms. */
  now: () => number;
  /** `setLease` through the storage gate. */
  write: (input: LeaseInput) => Promise<LeaseResult>;
  /** How long a lease admits calls from memory after the write that granted it was sent. */
  leaseMs: number;
  /** A lease's expiry in the store: charged at what it holds if not written again by then. */
  storeTtlMs: number;
  /** Calls on one scope set within `leaseMs` before it is worth a lease. */
  minCalls: number;
  /**
   * No lease while the room left (this lease given back) is under this many worst cases; a lease takes
   * at most `1 / leaseShare` of that room.
   */
  nearCapCalls: number;
  /** A lease takes at most this fraction's inverse of the room left (room / leaseShare). */
  leaseShare: number;
  /** Called when a lease write fails (storage trouble): the calls fall back to reservations. */
  onError: (error: unknown) => void;
}

/**
 * The guard's settings. A lease only where the room left is at least 8,192 worst cases (a $100 budget
 * of gpt-4o calls at a $0.04 worst case is near its cap by this measure, and keeps a reservation per
 * call, exact to the nano-dollar and charged call by call if its process dies); a lease then takes at
 * most a sixteenth of the room, so 16 instances may each hold one.
 */
export const ESCROW_DEFAULTS = {
  leaseMs: 1_000,
  minCalls: 8,
  nearCapCalls: 8_192,
  leaseShare: 16,
} as const;

/** One call admitted from a lease: returned to it by `settled` or `returned`. */
export interface Draw {
  readonly lease: Lease;
  readonly amountNano: number;
}

/** The process's lease on one scope set. */
export class Lease {
  readonly id: string;
  readonly key: string;
  readonly scopes: ScopeRef[];
  /** What the store holds on the lease, as the last successful write left it. */
  held = 0;
  /** Costs settled (handed to storage) against `held` since it was written. */
  spent = 0;
  /** Of those, the ones not yet known written to the store. */
  unwritten = 0;
  /** Worst cases of the calls in flight admitted from it. */
  drawn = 0;
  /** Admits from memory until this time (guard clock, ms); 0: not granted. */
  validUntil = 0;
  /** No admissions (near a cap, refused, or revoked); shrunk to its calls in flight, then closed. */
  closing = false;
  /** A closing lease was shrunk to its calls in flight once already. */
  shrunk = false;
  /** The counters as the last write answered, for the calls' headers. */
  states: BudgetState[] = [];
  /** `statesFor`'s answer, copied from `states` once per write and updated in place per call. */
  view: BudgetState[] = [];
  /** The `states` that `view` was copied from. */
  viewOf: BudgetState[] | null = null;
  /** Attribution for the spend log if the lease is charged unreturned. */
  pending: PendingCall | undefined;
  /** The write in flight, if any. */
  writing: Promise<void> | null = null;
  lastDrawAt = 0;

  constructor(id: string, key: string, scopes: ScopeRef[]) {
    this.id = id;
    this.key = key;
    this.scopes = scopes;
  }

  get available(): number {
    return this.held - this.spent - this.drawn;
  }
}

/** Calls seen on a scope set in the current and previous windows (to decide whether to lease). */
interface Traffic {
  windowStart: number;
  calls: number;
  previous: number;
  /** Worst cases seen in the current and previous windows, to size the lease. */
  nano: number;
  previousNano: number;
  /** No lease on this scope set before this time (it was near a cap). */
  noLeaseUntil: number;
  /** The counters as a call's own reservation last found them: a lease is sized from them. */
  states: BudgetState[] | null;
}

export class Escrow {
  private readonly leases = new Map<string, Lease>();
  private readonly traffic = new Map<string, Traffic>();
  private serial = 0;
  private closed = false;

  constructor(private readonly options: EscrowOptions) {}

  /** The scope-set key of a call's scopes (their order is the guard's, fixed per key). */
  static keyOf(scopes: readonly ScopeRef[]): string {
    let key = '';
    for (const s of scopes) key += `${s.kind}\u0000${s.id}\u0001`;
    return key;
  }

  /**
   * Admits a call of worst case `amountNano` from this process's lease on `key`, in memory; `null`
   * when it cannot (no lease, lease expired, or too little left): then `acquire` may get one, else the
   * call takes a reservation of its own. Renews the lease in the background when half its time is up.
   */
  take(key: string, amountNano: number): Draw | null {
    const lease = this.leases.get(key);
    if (!lease || lease.closing) return null;
    const now = this.options.now();
    if (now >= lease.validUntil || lease.available < amountNano) return null;
    lease.drawn += amountNano;
    lease.lastDrawAt = now;
    this.count(key, amountNano, now);
    // Past half its time: renewed in the background (this call included in what it must cover).
    if (now >= lease.validUntil - this.options.leaseMs / 2 && !lease.writing)
      void this.renew(lease, amountNano);
    return { lease, amountNano };
  }

  /**
   * After `take` said no: counts the call, and when its scope set is busy and not near a cap, opens or
   * renews the lease (one store write, shared by the calls waiting for it), then tries `take` again.
   * `null`: the call takes a reservation of its own (and the count is kept for the next one).
   */
  async acquire(
    key: string,
    scopes: ScopeRef[],
    amountNano: number,
    pending: PendingCall | undefined,
  ): Promise<Draw | null> {
    if (this.closed) return null;
    const now = this.options.now();
    let lease = this.leases.get(key);
    if (!lease) {
      const seen = this.count(key, amountNano, now);
      const t = this.traffic.get(key)!;
      // Never blind: only once a reservation of its own showed how much room the scope set has.
      if (seen < this.options.minCalls || now < t.noLeaseUntil || t.states === null) return null;
      const room = this.roomWithout(t.states, 0);
      if (room !== null && room < amountNano * this.options.nearCapCalls) return null;
      lease = new Lease(`lease:${this.options.processId}:${++this.serial}`, key, scopes);
      lease.pending = pending && { ...pending, requestId: lease.id, callType: 'lease' };
      lease.states = t.states;
      this.leases.set(key, lease);
    } else {
      this.count(key, amountNano, now);
    }
    if (lease.closing) return null;
    if (lease.writing) await lease.writing;
    else if (now >= lease.validUntil || lease.available < amountNano) await this.renew(lease, amountNano);
    if (lease.closing || this.options.now() >= lease.validUntil || lease.available < amountNano) return null;
    lease.drawn += amountNano;
    lease.lastDrawAt = this.options.now();
    return { lease, amountNano };
  }

  /** A call's own reservation on `key` answered these counters: what the next lease is sized from. */
  observed(key: string, states: BudgetState[]): void {
    const t = this.traffic.get(key);
    if (t) t.states = states;
  }

  /**
   * A call admitted from a lease settled for `costNano` (handed to storage): its worst case is free
   * again at once. `written` resolves true once the settlement is in the store.
   */
  settled(draw: Draw, costNano: number, written: Promise<boolean>): void {
    const { lease } = draw;
    lease.drawn -= draw.amountNano;
    lease.spent += costNano;
    lease.unwritten += costNano;
    void written.then((ok) => {
      // Not written: kept and retried by the gate, so still unwritten, and the lease takes no more calls.
      if (ok) lease.unwritten -= costNano;
      else lease.closing = true;
      this.tidy(lease);
    });
  }

  /** A call admitted from a lease that will not settle against it (released, abandoned): all back. */
  returned(draw: Draw): void {
    draw.lease.drawn -= draw.amountNano;
    this.tidy(draw.lease);
  }

  /**
   * The counters a call admitted from `lease` sees, as a reservation of its own would have shown them
   * on this instance: the lease's unused part taken out of `reserved`, and the costs settled since the
   * lease was written added to `spend`. One array per lease, updated in place on every call (not a
   * copy per call): read it at once; the next call admitted from the lease brings it up to date.
   */
  statesFor(lease: Lease): BudgetState[] {
    const { states } = lease;
    if (lease.viewOf !== states) {
      lease.view = states.map((s) => ({ ...s }));
      lease.viewOf = states;
    }
    const view = lease.view;
    for (let i = 0; i < states.length; i++) {
      const s = states[i]!;
      const v = view[i]!;
      v.spendNano = s.spendNano + lease.spent;
      v.reservedNano = Math.max(0, s.reservedNano - lease.held + lease.drawn);
    }
    return view;
  }

  /** Gives back every lease's unused part (idle ones closed); for `flush`, the timer and `close`. */
  async returnIdle(olderThanMs = 0): Promise<void> {
    const now = this.options.now();
    const writes: Promise<void>[] = [];
    for (const lease of this.leases.values()) {
      if (now - lease.lastDrawAt < olderThanMs) continue;
      lease.closing = true;
      writes.push(this.shrinkToCover(lease));
    }
    await Promise.all(writes);
  }

  /** Gives every lease back and admits nothing more from memory. */
  async close(): Promise<void> {
    this.closed = true;
    await this.returnIdle();
  }

  /** Leases open (for tests and stats). */
  get size(): number {
    return this.leases.size;
  }

  leaseOf(key: string): Lease | undefined {
    return this.leases.get(key);
  }

  /** Counts a call on its scope set; returns the calls seen in the current and previous window. */
  private count(key: string, amountNano: number, now: number): number {
    let t = this.traffic.get(key);
    if (!t) {
      if (this.traffic.size >= 10_000) this.traffic.clear(); // a bound, not an LRU: counts restart
      t = {
        windowStart: now,
        calls: 0,
        previous: 0,
        nano: 0,
        previousNano: 0,
        noLeaseUntil: 0,
        states: null,
      };
      this.traffic.set(key, t);
    }
    const elapsed = now - t.windowStart;
    if (elapsed >= this.options.leaseMs) {
      const oneBack = elapsed < 2 * this.options.leaseMs;
      t.previous = oneBack ? t.calls : 0;
      t.previousNano = oneBack ? t.nano : 0;
      t.calls = 0;
      t.nano = 0;
      t.windowStart = now;
    }
    t.calls += 1;
    t.nano += amountNano;
    return Math.max(t.calls, t.previous);
  }

  /** The size a lease asks for: two windows of its scope set's worst cases, at least `minCalls` calls. */
  private wanted(lease: Lease, amountNano: number): number {
    const t = this.traffic.get(lease.key);
    const perWindow = t ? Math.max(t.nano, t.previousNano) : 0;
    return Math.max(perWindow * 2, amountNano * this.options.minCalls);
  }

  /**
   * The room left on the tightest capped scope with this lease given back (`null`: no cap), from
   * counters as a write answered them.
   */
  private roomWithout(states: BudgetState[], heldThen: number): number | null {
    let room: number | null = null;
    for (const s of states) {
      if (s.maxBudgetNano === null) continue;
      const left = s.maxBudgetNano - s.spendNano - s.reservedNano + heldThen;
      if (room === null || left < room) room = left;
    }
    return room;
  }

  /** One write: the lease resized to its calls in flight and unwritten costs plus what it wants. */
  private renew(lease: Lease, amountNano: number): Promise<void> {
    const sentAt = this.options.now();
    const spentThen = lease.spent;
    const unwrittenThen = lease.unwritten;
    const cover = lease.drawn + unwrittenThen;
    let fresh = this.wanted(lease, amountNano);
    const room = lease.states.length > 0 ? this.roomWithout(lease.states, lease.held) : null;
    if (room !== null) fresh = Math.min(fresh, Math.floor((room - cover) / this.options.leaseShare));
    if (room !== null && room - cover < amountNano * this.options.nearCapCalls) {
      this.nearCap(lease, sentAt);
      return this.shrinkToCover(lease);
    }
    const target = cover + Math.max(0, fresh);
    const write = this.options
      .write(this.input(lease, target, sentAt))
      .then(
        (result) => {
          if (!result.ok) {
            // It did not fit: near the cap, or the budget was lowered. Calls reserve their own now.
            this.nearCap(lease, sentAt);
            return;
          }
          lease.held = target;
          // The costs settled while the write was on its way count against the new amount; those
          // unwritten when it was sent are inside it (`cover`).
          lease.spent = lease.spent - spentThen + unwrittenThen;
          lease.states = result.states;
          const roomNow = this.roomWithout(result.states, target);
          if (roomNow !== null && roomNow - cover < amountNano * this.options.nearCapCalls) {
            this.nearCap(lease, sentAt); // e.g. a lowered budget: admits nothing more; shrunk below
            return;
          }
          lease.validUntil = sentAt + this.options.leaseMs;
        },
        (error: unknown) => {
          lease.closing = true;
          this.options.onError(error);
        },
      )
      .finally(() => {
        lease.writing = null;
        this.tidy(lease);
      });
    lease.writing = write;
    return write;
  }

  /** A closing lease: shrunk to what its calls in flight and unwritten costs need; closed at 0. */
  private shrinkToCover(lease: Lease): Promise<void> {
    if (lease.writing) return lease.writing.then(() => this.shrinkToCover(lease));
    const target = lease.drawn + lease.unwritten;
    if (target === lease.held && lease.spent === lease.unwritten) {
      // The store already holds exactly that.
      if (target === 0) this.forget(lease);
      return Promise.resolve();
    }
    const sentAt = this.options.now();
    const spentThen = lease.spent;
    const unwrittenThen = lease.unwritten;
    const write = this.options
      .write(this.input(lease, target, sentAt))
      .then(
        () => {
          // A shrink is never refused.
          lease.held = target;
          lease.spent = lease.spent - spentThen + unwrittenThen;
        },
        (error: unknown) => this.options.onError(error),
      )
      .finally(() => {
        lease.writing = null;
        if (lease.held === 0 && lease.drawn === 0 && lease.unwritten === 0) this.forget(lease);
      });
    lease.writing = write;
    return write;
  }

  private input(lease: Lease, amountNano: number, at: number): LeaseInput {
    return {
      leaseId: lease.id,
      scopes: lease.scopes,
      amountNano,
      now: new Date(at),
      expiresAt: new Date(at + this.options.storeTtlMs),
      mode: 'strict',
      pending: lease.pending,
      processId: this.options.processId,
    };
  }

  /** A closing lease: shrunk to its calls in flight, then to its unwritten costs, then closed. */
  private tidy(lease: Lease): void {
    if (!lease.closing || lease.writing) return;
    // Once when it starts closing (down to its calls in flight), and once they have all settled.
    if (lease.drawn > 0 && lease.shrunk) return;
    lease.shrunk = true;
    void this.shrinkToCover(lease);
  }

  /** Near a cap: the lease admits nothing more, and its scope set takes none for a while. */
  private nearCap(lease: Lease, at: number): void {
    lease.closing = true;
    const t = this.traffic.get(lease.key);
    if (t) t.noLeaseUntil = at + this.options.leaseMs;
  }

  private forget(lease: Lease): void {
    if (this.leases.get(lease.key) === lease) this.leases.delete(lease.key);
  }
}
