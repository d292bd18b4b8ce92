import { LRUCache } from 'lru-cache';

export interface LoginThrottleOptions {
  /** Sign-ins one client may have failed (or have in progress) within the window. */
  perClient: number;
  /** Sign-ins all clients together may have failed (or have in progress) within the window. */
  overall: number;
  windowMs: number;
}

/** Most client addresses remembered; past it the oldest are forgotten (the overall limit still holds). */
const MAX_CLIENTS = 10_000;

/**
 * Sliding-window throttling of dashboard sign-ins, per client address and over all clients. An attempt
 * counts from the moment it is let in (so many concurrent attempts cannot all slip past the check
 * before the first failure is recorded) and is forgotten when it succeeds. Kept in the process: each
 * instance behind a load balancer counts alone.
 */
export class LoginThrottle {
  readonly #clients = new LRUCache<string, number[]>({ max: MAX_CLIENTS });
  #all: number[] = [];

  constructor(private readonly o: LoginThrottleOptions) {}

  /**
   * Lets an attempt in (returns 0 and counts it), or says in how many seconds the client may try
   * again (and counts nothing).
   */
  begin(client: string, nowMs: number): number {
    const mine = this.#recent(this.#clients.get(client) ?? [], nowMs);
    this.#all = this.#recent(this.#all, nowMs);
    const wait = Math.max(
      this.#wait(mine, this.o.perClient, nowMs),
      this.#wait(this.#all, this.o.overall, nowMs),
    );
    if (wait > 0) {
      this.#clients.set(client, mine);
      return Math.ceil(wait / 1000);
    }
    mine.push(nowMs);
    this.#all.push(nowMs);
    this.#clients.set(client, mine);
    return 0;
  }

  /**
   * The attempt let in at `startedMs` succeeded: it stops counting, and so do the client's earlier
   * failures (the admin's own typos); they still count in the overall window.
   */
  succeeded(client: string, startedMs: number): void {
    this.#clients.delete(client);
    const i = this.#all.lastIndexOf(startedMs);
    if (i !== -1) this.#all.splice(i, 1);
  }

  #recent(times: number[], nowMs: number): number[] {
    const from = nowMs - this.o.windowMs;
    let i = 0;
    while (i < times.length && times[i]! <= from) i++;
    return i === 0 ? times : times.slice(i);
  }

  /** How long until fewer than `limit` of `times` are in the window (0: now). */
  #wait(times: number[], limit: number, nowMs: number): number {
    if (times.length < limit) return 0;
    return times[times.length - limit]! + this.o.windowMs - nowMs;
  }
}
