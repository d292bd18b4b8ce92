// One admitted call, from admission to settlement: stage 4 (meter, through its `CallMeter` and
// response tap), then price, settle and record, each from its own module.
import type { CapacityWaiters } from '../admission/capacity-waiters.js';
import type { Draw, Escrow } from '../admission/escrow.js';
import { ResponseTap } from '../metering/response-meter.js';
import { CallMeter, type TrackOptions } from '../metering/track.js';
import { createCallFetch, type FetchHost } from '../metering/upstream-fetch.js';
import type { CallObservers } from '../observability/call-events.js';
import type { PriceBook } from '../pricing/price-book.js';
import { type RateAdmission, rateLimitHeaders } from '../rate-limits.js';
import { abandonedChargeScopes } from '../storage/budget-rules.js';
import { type BudgetState, type ScopeRef, scopeKey } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import type { CallRecord, CallState, GuardResponse, KeyContext } from './call-types.js';
import { type PricedRecord, priceCall } from './price.js';
import { recordSettled } from './record.js';
import { spendLogOf } from './settle.js';
import { usdText } from './usd-text.js';

/** What a guarded call needs of the guard that admitted it. */
export interface CallHost extends FetchHost {
  options: { maxMeteredBodyBytes: number };
  prices: Pick<PriceBook, 'cost' | 'resolve'>;
  observers: Pick<CallObservers, 'active' | 'settled'>;
  gate: Pick<StorageGate, 'call' | 'settle'>;
  capacity: Pick<CapacityWaiters, 'freedOn'>;
  now(): Date;
  /** Whether calls commit their settlement before their last byte (`settleBeforeLastByte`). */
  readonly settlesBeforeLastByte: boolean;
  /** Keeps a settlement promise alive until `close()`. */
  track<T>(p: Promise<T>): Promise<T>;
  settleRateLimits(rate: RateAdmission, tokens: number): Promise<void>;
  /** Settlements that could not be written at once (kept and retried by the gate). */
  settleFailures: number;
  /** Escrow admission's leases, when on. */
  readonly escrow: Pick<Escrow, 'settled' | 'returned'> | null;
}

export type AdmitOutcome = { ok: true; call: GuardedCall } | { ok: false; response: GuardResponse };

/**
 * One admitted call, from admission to settlement. The adapter sets `responseHeaders` before the
 * route runs, feeds what the route writes to `tap`, adds `costHeaders()` when the body is complete
 * before headers go out, and calls `finish()` exactly once when the response is done or cut.
 */
export class GuardedCall {
  readonly tap: ResponseTap;
  /** Context, child calls (`guard.fetch`, `track()`), wire format and estimates: see `metering/track.ts`. */
  readonly meter: CallMeter;
  /** Headers for the response, known at admission. */
  readonly responseHeaders: Record<string, string>;
  private finished: Promise<CallRecord> | null = null;
  private priced: { record: PricedRecord } | null = null;
  /** Admitted in memory from this process's lease (escrow) rather than by a reservation of its own. */
  escrowDraw: Draw | null = null;

  constructor(
    private readonly guard: CallHost,
    readonly state: CallState,
  ) {
    this.tap = new ResponseTap(guard.options.maxMeteredBodyBytes);
    this.meter = new CallMeter(this, guard, spawnChildCall);
    this.responseHeaders = { 'x-litellm-call-id': state.requestId };
    let keyState: BudgetState | undefined;
    let tightest: number | null = null;
    for (const s of state.states) {
      if (keyState === undefined && s.scope.kind === 'key') keyState = s;
      if (s.maxBudgetNano === null) continue;
      const left = s.maxBudgetNano - s.spendNano - s.reservedNano;
      if (tightest === null || left < tightest) tightest = left;
    }
    if (keyState) {
      this.responseHeaders['x-litellm-key-spend'] = usdText(keyState.spendNano);
      if (keyState.maxBudgetNano !== null) {
        this.responseHeaders['x-litellm-key-max-budget'] = usdText(keyState.maxBudgetNano);
      }
    }
    if (tightest !== null)
      this.responseHeaders['x-spendguard-budget-remaining'] = usdText(Math.max(0, tightest));
    if (state.rate) Object.assign(this.responseHeaders, rateLimitHeaders(state.rate.states, state.startTime));
    if (state.outputLowered !== null) {
      this.responseHeaders['x-spendguard-output-tokens-lowered'] = String(state.outputLowered);
    }
    if (state.unpriced) this.responseHeaders['x-spendguard-unpriced-model'] = state.model;
  }

  get requestId(): string {
    return this.state.requestId;
  }
  get key(): KeyContext | null {
    return this.state.ctx;
  }

  /**
   * The request body as the guard rewrote it (JSON text; e.g. a streamed chat completion asked for
   * its usage), or `null` when unchanged. The adapter makes the route see this one.
   */
  get rewrittenBody(): string | null {
    return this.meter.rewrittenBody;
  }

  /** Runs the route in this call's context, so that `guard.fetch` and `track()` attribute to it. */
  run<T>(fn: () => T): T {
    return this.meter.run(fn);
  }

  private ownFetch: typeof globalThis.fetch | null = null;
  /**
   * This call's own `fetch`, for the provider SDK the route calls: each upstream call is admitted
   * against the budgets first and metered as its own row of this call, as `guard.fetch` does, but
   * with no AsyncLocalStorage context to find the call (which costs every promise of the process).
   * @example new OpenAI({ apiKey, fetch: res.locals.spendguard.fetch })
   */
  get fetch(): typeof globalThis.fetch {
    this.ownFetch ??= createCallFetch(this.guard, this);
    return this.ownFetch;
  }

  /**
   * Records usage the route got from a provider itself: its own spend-log row linked to this call
   * (usage in any provider's shape, or a `TokenUsage`); this call's response is then not charged.
   * @example await res.locals.spendguard.track(completion.usage, { model: completion.model })
   */
  track(usage: unknown, options: TrackOptions): Promise<CallRecord> {
    return this.meter.track(usage, options);
  }

  /** Prices what the tap observed (once); call when the body is complete. */
  /** The scopes a settlement charges: those reserved, then those only counted (`countedOnly`). */
  private chargedScopes(): ScopeRef[] {
    const extra = this.state.ctx?.countedOnly ?? [];
    return extra.length === 0 ? this.state.scopes : [...this.state.scopes, ...extra];
  }

  private price(): { record: PricedRecord } {
    if (this.priced) return this.priced;
    const record = priceCall(this.guard.prices, this.meter.resolve(), this.state.requestId, this.state.tags);
    this.meter.priced(record.costNano); // a child call adds its cost to its request's cost header
    this.priced = { record };
    return this.priced;
  }

  /**
   * `x-litellm-response-cost` for a complete, non-streamed body whose headers are not sent yet: the
   * call's own cost, plus that of its child calls (`guard.fetch`, `track()`) priced so far.
   */
  costHeaders(): Record<string, string> {
    if (this.state.unpriced) return {}; // no price: no cost to claim
    return {
      'x-litellm-response-cost': usdText(this.meter.responseCostNano(this.price().record.costNano)),
    };
  }

  /**
   * Steps 4 to 6: meter, price, settle (add the actual cost to every scope, release the
   * reservation, write the spend log). Idempotent; the adapter calls it when the response finished
   * or the connection closed.
   */
  finish(options: { aborted?: boolean; urgent?: boolean } = {}): Promise<CallRecord> {
    this.finished ??= this.guard.track(this.settle(options.aborted ?? false, options.urgent ?? false));
    return this.finished;
  }

  /**
   * For the adapter, once the body is complete and before its last bytes are sent: where calls commit
   * their settlement first (`settleBeforeLastByte`), finishes the call at once (no batching delay) and
   * resolves when its spend, and that of what it `track()`ed, is written (or kept for retry); else
   * `null`, and the adapter sends the last bytes and calls `finish()` as usual.
   */
  beforeLastByte(): Promise<void> | null {
    if (!this.guard.settlesBeforeLastByte) return null;
    // Admitted from this process's lease (and nothing `track()`ed or fetched, which would have given
    // its draw back): the lease already holds its worst case in the store, and a dead process's lease
    // is charged whole, so its spend is covered without a commit of its own; it is written with the
    // others within `settleBatchMs` (docs/crash-recovery.md).
    // Not when it charges a scope the lease's crash charge would miss (see `crashChargeCovers`), nor
    // when its cost, once known (a held JSON body is priced by now), passes the worst case the lease
    // holds for it.
    const draw = this.escrowDraw;
    if (
      draw &&
      crashChargeCovers(draw, this.state.ctx?.countedOnly) &&
      (this.priced === null || this.priced.record.costNano <= draw.amountNano)
    ) {
      this.leaseCovered = true;
      return null;
    }
    // A route that called its provider through `guard.fetch` (or the call's own `fetch`): the request
    // is charged $0 and each upstream call is its own row; when every one of them was admitted from a
    // lease that covers it, the request is a leased call like any other: written with the next batch.
    if (this.meter.childrenLeaseCovered()) return null;
    void this.finish({ urgent: true }).catch(() => {});
    return Promise.all([this.spendWritten, this.meter.trackedSettled()]).then(
      () => {},
      () => {},
    );
  }

  /** See `MeteredCall.leaseCovered`. */
  leaseCovered = false;

  /** How long admission took, in ms, when observers listen (`null`: a child call, or none listen). */
  admissionMs: number | null = null;

  /** The spend write of `settle()`, set as soon as it is handed to storage. */
  private spendWritten: Promise<boolean> | null = null;

  private async settle(aborted: boolean, urgent: boolean): Promise<CallRecord> {
    const { record } = this.price();
    const httpStatus = this.tap.status;
    const status: CallRecord['status'] = httpStatus >= 400 ? 'failure' : 'success';
    const endTime = this.guard.now();
    const log = spendLogOf({
      state: this.state,
      meter: this.meter,
      record,
      prices: this.guard.prices,
      httpStatus,
      status,
      endTime,
      aborted,
      responseId: this.tap.observe().responseId,
    });
    // Costing at most what it holds, on the scopes it reserved, the settlement can only lower what the
    // next reservation is judged against, which then need not wait for it (see StorageGate.reserve).
    const held =
      this.state.reservationId === null || this.meter.reservationReleased ? 0 : this.state.reservedNano;
    // Admitted from a lease: the lease holds its worst case in the store on the scopes it reserved, so
    // its settlement too lowers nothing a reservation is judged against (unless it costs more, or
    // charges scopes the lease does not hold).
    const covered =
      this.escrowDraw && (this.state.ctx?.countedOnly.length ?? 0) === 0 ? this.escrowDraw.amountNano : held;
    this.spendWritten = this.guard.gate.settle(
      {
        reservationId: this.state.reservationId ?? `none-${this.state.requestId}`,
        scopes: this.chargedScopes(),
        costNano: record.costNano,
        now: endTime,
        log,
      },
      record.costNano > covered,
      urgent,
    );
    if (this.escrowDraw) {
      // Its worst case is free in the lease again at once; its cost counts against the lease.
      this.guard.escrow?.settled(this.escrowDraw, record.costNano, this.spendWritten);
      this.escrowDraw = null;
    }
    const handed = this.guard.observers.active ? performance.now() : 0;
    const written = await this.spendWritten;
    if (this.guard.observers.active) {
      recordSettled(this.guard.observers, this.state, {
        log,
        record,
        written,
        reservedNano: held,
        admissionMs: this.admissionMs,
        settleMs: performance.now() - handed,
      });
    }
    if (!written)
      this.guard.settleFailures += 1; // kept and retried by the gate, never dropped silently
    else if (held > record.costNano) {
      // What the reservation held beyond the cost is free again: calls waiting for it may go.
      this.guard.capacity.freedOn(this.state.scopes.map(scopeKey), held - record.costNano);
    }
    if (this.state.rate) {
      await this.guard.settleRateLimits(
        this.state.rate,
        record.usage.promptTokens + record.usage.completionTokens,
      );
    }
    return {
      requestId: record.requestId,
      model: record.model,
      costUsd: record.costUsd,
      costNano: record.costNano,
      usage: record.usage,
      estimated: record.estimated,
      status,
      httpStatus,
      tags: record.tags,
    };
  }
}

/**
 * Whether charging a dead process's lease charges every scope a call drawn from it charges: the scopes
 * the lease holds, and the scopes the call only counts (`countedOnly`: a team key's user, whose budget
 * the call is not held to). The stores charge an abandoned lease on `abandonedChargeScopes` (its scopes,
 * and the user its attribution names), at what it held: a team key's user is covered, the user's own
 * budget windows are not, and a call counting those still commits before its last byte.
 */
function crashChargeCovers(draw: Draw, countedOnly: readonly ScopeRef[] | undefined): boolean {
  if (!countedOnly || countedOnly.length === 0) return true;
  const charged = abandonedChargeScopes(draw.lease.scopes, draw.lease.pending);
  return countedOnly.every((s) => charged.some((c) => c.kind === s.kind && c.id === s.id));
}

/** A child call (`guard.fetch`, `track()`) of a guarded call: one function for every call. */
function spawnChildCall(this: void, state: CallState, guard: CallHost): GuardedCall {
  return new GuardedCall(guard, state);
}
