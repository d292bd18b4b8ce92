// Calls that would fit a budget once the calls in flight settle wait here instead of being refused.
// A settlement written by this process wakes the waiters of the scopes it freed, as soon as enough was
// freed for them; settlements of other processes sharing the store are seen by polling (backing off).

/** First poll after this; each later one waits twice as long, up to `MAX_POLL_MS`. */
const FIRST_POLL_MS = 10;
const MAX_POLL_MS = 250;

interface Waiter {
  scopeKey: string;
  /** What the scope must free before a retry can succeed. */
  needNano: number;
  /** What this process freed on the scope since the waiter started. */
  freedNano: number;
  wake: () => void;
}

export class CapacityWaiters {
  private readonly waiting = new Set<Waiter>();

  /** How many calls are waiting for capacity now. */
  get size(): number {
    return this.waiting.size;
  }

  /** Records that settlements or releases on these scopes freed `nano` each, and wakes who can go. */
  freedOn(scopeKeys: Iterable<string>, nano: number): void {
    if (!(nano > 0) || this.waiting.size === 0) return;
    const touched = new Set(scopeKeys);
    for (const w of this.waiting) {
      if (!touched.has(w.scopeKey)) continue;
      w.freedNano += nano;
      if (w.freedNano >= w.needNano) w.wake();
    }
  }

  /**
   * Resolves when `needNano` was freed on the scope by this process, when a poll is due (another
   * process may have freed it: the `attempt`-th poll backs off), or at `deadline` (ms on the
   * `performance.now()` clock), whichever comes first. The caller then tries again.
   */
  wait(scopeKey: string, needNano: number, attempt: number, deadline: number): Promise<void> {
    const pollMs = Math.min(MAX_POLL_MS, FIRST_POLL_MS * 2 ** Math.min(attempt, 8));
    const ms = Math.max(0, Math.min(pollMs, deadline - performance.now()));
    return new Promise((resolve) => {
      const waiter: Waiter = {
        scopeKey,
        needNano,
        freedNano: 0,
        wake: () => {
          clearTimeout(timer);
          this.waiting.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      this.waiting.add(waiter);
    });
  }
}
