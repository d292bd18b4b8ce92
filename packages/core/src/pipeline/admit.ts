// Stage 2, admit: model access, the end user's gate, rate limits, then a reservation of the call's
// worst case on every scope with a budget, in one guarded write (lowering its output cap or waiting
// for calls in flight where that lets it fit). What it returns is the state of an admitted call.
import { LRUCache } from 'lru-cache';
import type { CapacityWaiters } from '../admission/capacity-waiters.js';
import { type Draw, Escrow } from '../admission/escrow.js';
import {
  boundCall,
  boundNano,
  type CallBound,
  outputTokensFitting,
  previousResponseId,
  setOutputCap,
  unboundedSearchField,
  unboundedServerTool,
} from '../admission/worst-case.js';
import type { ResolvedOptions } from '../config.js';
import { SpendGuardError } from '../errors.js';
import { timeOrderedId } from '../ids.js';
import { assertText, INPUT_LIMITS } from '../input-hygiene.js';
import {
  deferredBillingOf,
  formatFromPath,
  modelFromPath,
  type WireFormat,
} from '../metering/wire-formats.js';
import type { ModelPrice } from '../pricing/model-price.js';
import type { PriceBook, WorstCaseRates } from '../pricing/price-book.js';
import type { RateAdmission } from '../rate-limits.js';
import type { BudgetState, PendingCall, ScopeRef } from '../storage/storage-contract.js';
import { GLOBAL_SCOPE_ID, modelScopeId, scopeKey } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import { type TempIncrease, tempIncreaseOf, withoutTempIncrease } from '../temp-budget.js';
import { type CallInput, type CallState, isPlainObject, type KeyContext } from './call-types.js';
import type { EndUserGate, EndUserGates } from './end-users.js';
import {
  assertKeyUsable,
  type Identity,
  type MasterKey,
  modelAllowed,
  readEndUser,
  readTags,
  withKeyTags,
} from './identify.js';
import type { KeyCache } from './key-cache.js';
import type { RateLimiter } from './rate-admission.js';
import { budgetExceeded, type RefusalDetail } from './refusals.js';

/** What admission needs of the guard; `newCall` makes the admitted call of a state. */
export interface AdmissionDeps<Call> {
  options: ResolvedOptions;
  prices: PriceBook;
  gate: Pick<StorageGate, 'call' | 'reserve'>;
  processId: string;
  now(): Date;
  master: MasterKey;
  keys: KeyCache;
  endUsers: EndUserGates;
  rates: RateLimiter;
  capacity: CapacityWaiters;
  /** True when the failure is storage's and the policy says to serve anyway. */
  servesThrough(error: unknown): boolean;
  /** Escrow admission's leases (`null`: off, or not yet: it starts when storage opens). */
  escrow(): Escrow | null;
  /** The admitted call of a state; `draw`: admitted from this process's lease. */
  newCall(state: CallState, draw?: Draw | null): Call;
}

interface CallFacts {
  startTime: Date;
  model: string;
  endUser: string | null;
  body: Record<string, unknown>;
  tags: string[];
}

/** A call on its way to a reservation: what the fast path worked out, for the slow one. */
interface Reserving {
  input: CallInput;
  ctx: KeyContext;
  /** `format`: the wire format of the path (`null` also when the model has no price: not needed). */
  o: CallFacts & {
    rate: RateAdmission | null;
    price: ModelPrice | undefined;
    format: WireFormat | null;
    /** Input and output tokens of the response `previous_response_id` names, when its log was found. */
    previousTurnTokens: number | null;
  };
  scopes: ScopeRef[];
  leaseKey: string;
  requestId: string;
  format: WireFormat | null;
  estimate: { bound: CallBound; rates: WorstCaseRates } | null;
  amountNano: number;
  escrow: Escrow | null;
}

export class Admission<Call> {
  /**
   * How each key's last admission went and what its budgets stood at then (kept under 'allow' only):
   * during an outage only a key last admitted with room is served.
   */
  private readonly lastSeen = new LRUCache<string, { admitted: boolean; states: BudgetState[] }>({
    max: 10_000,
  });

  /** The last model name found storable (`assertText`): a pure check of the string. */
  private modelChecked = '';

  constructor(private readonly deps: AdmissionDeps<Call>) {}

  /**
   * Admits an identified call (its body read), or throws the refusal. A call admitted in memory (from
   * this process's lease, no gate on its end user, no rate limit) comes back as a value, without a
   * promise; any other as a promise. Refusals found before storage is asked are thrown synchronously.
   * `startTime`: the guard's clock when the call arrived (the instant its key was judged usable at).
   */
  admit(input: CallInput, identity: Identity, startTime: Date): Call | Promise<Call> {
    const { deps } = this;
    const deferred = deferredBillingOf(input.method, input.path);
    if (deferred) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `This call starts ${deferred}, which the provider runs and bills after this request has answered, so spendguard could neither hold it to a budget nor record what it costs. Serve it on a route the guard is not mounted on (no budget applies there), or send its requests one by one.`,
      );
    }
    const body = isPlainObject(input.body) ? input.body : {};
    const model = typeof body.model === 'string' ? body.model : (modelFromPath(input.path) ?? '');
    const tags = readTags(body, input.header);
    const endUserRef = readEndUser(body, input.header);
    const endUser = endUserRef?.id ?? null;
    // Both reach storage (a scope id, a spend-log field): refused here if no store can keep them as given.
    if (model && model !== this.modelChecked) {
      assertText(model, 'model', INPUT_LIMITS.nameLength);
      this.modelChecked = model; // calls name one model after another: each checked once in a row
    }
    if (endUserRef) assertText(endUserRef.id, endUserRef.field);

    const { tokenHash } = identity;
    const facts: CallFacts = { startTime, model, endUser, body, tags };
    if (identity.kind === 'master') {
      // The master key has no budget of its own, but its calls are attributed to and enforced against
      // every scope that applies to them: the end user, the tags, the global budget.
      return this.admitAs(input, deps.master.context(tokenHash), facts, false);
    }
    if (identity.kind === 'unresolved') {
      const ctx = identity.ctx;
      return this.unreservedCall(ctx, { ...facts, tags: withKeyTags(tags, ctx) });
    }
    const increase = tempIncreaseOf(identity.ctx.key);
    if (increase && increase.expiresAt <= startTime) {
      return this.endTempIncrease(identity.ctx, increase, tokenHash).then((ctx) =>
        this.admitAs(input, ctx, facts, true),
      );
    }
    return this.admitAs(input, identity.ctx, facts, true);
  }

  /** Admission under the key's context: model access, price, then the gates and the reservation. */
  private admitAs(
    input: CallInput,
    ctx: KeyContext,
    facts: CallFacts,
    virtualKey: boolean,
  ): Call | Promise<Call> {
    const { deps } = this;
    const { model, endUser, body } = facts;
    if (virtualKey) {
      const { key } = ctx;
      if (model && !modelAllowed(model, key.models, ctx.team?.models ?? [], deps.options.modelAliases)) {
        throw new SpendGuardError(
          'MODEL_NOT_ALLOWED',
          `Authentication Error, key not allowed to access model. This key can only access models=${JSON.stringify(key.models.length ? key.models : ctx.team?.models)}. Tried to access ${model}`,
          { param: 'model' },
        );
      }
    }
    const allTags = withKeyTags(facts.tags, ctx);
    const price = model ? deps.prices.resolve(model) : undefined;
    if (model && !price && deps.options.unpricedModels === 'refuse') {
      throw new SpendGuardError(
        'UNPRICED_MODEL',
        `Model '${model}' has no price in the price table, so no budget could bound this call. Price it with the modelPrices option (e.g. modelPrices: { '${model}': { input_cost_per_token: 3e-6, output_cost_per_token: 1.5e-5 } }; 0 is allowed), map it with modelAliases, or set unpricedModels: 'allow' to serve it unpriced.`,
        { param: 'model' },
      );
    }
    const format = price ? this.formatOf(input.path) : null;
    const unbounded =
      price && deps.options.enforcement === 'strict' ? unboundedSearchField(format, model, body) : null;
    if (unbounded) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `This call offers OpenAI's web search tool, which runs (and bills) as many searches as the model likes unless ${unbounded} caps the response's built-in tool calls, so no budget could bound it. Set ${unbounded} to a non-negative integer (e.g. ${unbounded}: 3), or use enforcement 'shrink' or 'soft'.`,
        { param: unbounded },
      );
    }
    const server = price && deps.options.enforcement === 'strict' ? unboundedServerTool(body) : null;
    if (server) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `This call offers ${server.tool}, which the provider runs and bills on its side beyond anything the request caps, so no budget could bound it. Remove ${server.param}, or use enforcement 'shrink' or 'soft' (that part of its cost is then neither bounded nor, unless the provider's usage reports it, recorded).`,
        { param: server.param },
      );
    }
    // A background response runs, and is billed, after its request has answered: its cost never reaches
    // the guard, in any mode.
    if (price && body.background === true && (format === 'openai-responses' || format === null)) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        'This call asks for a background response (background: true), which OpenAI runs and bills after this request has answered, so spendguard could neither hold it to a budget nor record what it cost. Send it without background (stream it for a long run).',
        { param: 'background' },
      );
    }
    const o: Reserving['o'] = {
      startTime: facts.startTime,
      model,
      endUser,
      body,
      tags: allTags,
      rate: null,
      price,
      format,
      previousTurnTokens: null,
    };
    // A turn of a Responses chain is billed its earlier turns as input: bounded by what the guard logged
    // of the response it continues, read first (not found: the model's whole context).
    const previous = price && format !== 'openai-embeddings' ? previousResponseId(body) : null;
    if (previous !== null) {
      return this.previousTurnTokens(previous).then((tokens) => {
        o.previousTurnTokens = tokens;
        return this.reserveOrGate(input, ctx, o);
      });
    }
    return this.reserveOrGate(input, ctx, o);
  }

  private reserveOrGate(input: CallInput, ctx: KeyContext, o: Reserving['o']): Call | Promise<Call> {
    // Nothing can gate or rate-limit this call: no storage call, no promise before the reservation.
    if (!o.endUser && ctx.rateLimits.length === 0) return this.reserveBudget(input, ctx, o);
    return this.admitGated(input, ctx, o);
  }

  /**
   * The tokens of a logged response (its input and output, as the provider reported them), by the
   * provider's response id; `null` when no log names it (made outside the guard, pruned, or not written
   * yet), its usage was estimated, or storage cannot say.
   */
  private async previousTurnTokens(responseId: string): Promise<number | null> {
    try {
      const logs = await this.deps.gate.call('previous response', (s) =>
        s.querySpendLogs({ requestId: responseId, limit: 10 }),
      );
      // The largest of the logs naming it (a route that metered its upstream call logs the answer's id
      // on its own row too); an estimated log counted the text it saw, not what the provider billed.
      let tokens: number | null = null;
      for (const log of logs) {
        if (log.estimated) return null;
        tokens = Math.max(tokens ?? 0, log.promptTokens + log.completionTokens);
      }
      return tokens;
    } catch {
      return null; // the whole context, then: never under the truth
    }
  }

  /** The end user's gate and the rate limits, then the reservation (a call refused here costs nothing). */
  private async admitGated(input: CallInput, ctx: KeyContext, o: Reserving['o']): Promise<Call> {
    const { deps } = this;
    const { endUser, startTime, model } = o;
    // A blocked end user (`/customer/block`) is refused as LiteLLM does, before anything is counted.
    const endUserGate: EndUserGate | null = endUser
      ? await deps.endUsers.get(endUser).catch((error: unknown) => {
          if (!deps.servesThrough(error)) throw error;
          return null; // storage is down under 'allow': served, as an end user not known
        })
      : null;
    if (endUserGate?.blocked) {
      throw new SpendGuardError('BAD_REQUEST', `User blocked from making LLM API Calls. User=${endUser}`);
    }
    // Rate limits before the budget: a call refused here reserves nothing and costs nothing.
    const endUserLimits = endUserGate?.limits ?? null;
    const rate =
      ctx.rateLimits.length > 0 || endUserLimits
        ? await deps.rates.acquire(ctx, model, startTime, endUser, endUserLimits)
        : null; // nothing can limit this call: no storage call, no promise
    try {
      return await this.reserveBudget(input, ctx, { ...o, rate });
    } catch (error) {
      if (rate) deps.rates.release(rate);
      throw error;
    }
  }

  /**
   * The first call after a key's temporary budget increase expired puts its cap back (absolute
   * values, so instances doing it at once agree), then resolves the key again.
   */
  private async endTempIncrease(
    ctx: KeyContext,
    increase: TempIncrease,
    secretHash: string,
  ): Promise<KeyContext> {
    const hash = ctx.key.tokenHash;
    const base = increase.baseMaxBudget === null ? null : Math.round(increase.baseMaxBudget * 1e9);
    await this.deps.gate.call('temporary budget end', (s) =>
      s.updateKey(hash, { metadata: withoutTempIncrease(ctx.key.metadata) }, { maxBudgetNano: base }),
    );
    this.deps.keys.invalidate(hash);
    return (await this.deps.keys.resolve(secretHash)) ?? ctx;
  }

  /**
   * Under `onStorageError: 'allow'`, whether a key seen before may be served while storage is down:
   * usable now (not blocked, not expired), and every budget it spends against had room when its last
   * call was admitted.
   */
  servableWhileDown(ctx: KeyContext, now: Date): boolean {
    try {
      assertKeyUsable(ctx, now);
    } catch {
      return false;
    }
    const seen = this.lastSeen.get(ctx.key.tokenHash);
    if (!seen?.admitted) return false;
    return seen.states.every((s) => s.maxBudgetNano === null || s.spendNano < s.maxBudgetNano);
  }

  /** A call served without a reservation (storage down under 'allow'), attributed as well as known. */
  private unreservedCall(ctx: KeyContext, o: CallFacts): Call {
    const requestId = timeOrderedId();
    return this.deps.newCall({
      requestId,
      startTime: o.startTime,
      model: o.model,
      tags: o.tags,
      endUser: o.endUser,
      body: o.body,
      keyHash: ctx.key.tokenHash,
      ctx,
      reservationId: null,
      reservedNano: 0,
      scopes: callScopes(ctx, o.model, o.endUser, o.tags),
      states: [],
      rate: null,
      outputLowered: null,
      unpriced: o.model !== '' && !this.deps.prices.resolve(o.model),
    });
  }

  /**
   * Reserves the call's worst case: from this process's lease, in memory, when it covers the call (a
   * value, no promise); else a lease is opened or renewed, or the call reserves its own in the store.
   */
  private reserveBudget(input: CallInput, ctx: KeyContext, o: Reserving['o']): Call | Promise<Call> {
    const { deps } = this;
    const { model, endUser, body } = o;
    const { scopes, leaseKey } = this.scopesOf(ctx, model, endUser, o.tags);
    // The reservation is the request's own (one per call): its id is the request id.
    const requestId = timeOrderedId();
    const { format } = o;
    const estimate = o.price
      ? this.boundOf(model, o.price, format, body, input.bodyBytes, false, o.previousTurnTokens)
      : null;
    const amountNano = estimate ? boundNano(estimate.bound, estimate.rates) : 1;
    // Escrow: a busy scope set far from its caps is admitted in memory, against this process's lease.
    const escrow = estimate ? deps.escrow() : null;
    const r: Reserving = { input, ctx, o, scopes, leaseKey, requestId, format, estimate, amountNano, escrow };
    if (escrow) {
      const draw = escrow.take(leaseKey, amountNano);
      if (draw) return this.leased(r, escrow, draw);
    }
    return this.reserveInStore(r);
  }

  /**
   * A call's scopes and their lease key; the common case (no end user, no tags) is built once per key
   * context (a fresh one on every reload of the key) and model, and shared by its calls (never changed).
   */
  private scopesOf(
    ctx: KeyContext,
    model: string,
    endUser: string | null,
    tags: string[],
  ): { scopes: ScopeRef[]; leaseKey: string } {
    if (endUser || tags.length > 0) {
      const scopes = callScopes(ctx, model, endUser, tags);
      return { scopes, leaseKey: Escrow.keyOf(scopes) };
    }
    let byModel = this.scopeSets.get(ctx);
    if (!byModel) {
      byModel = new Map();
      this.scopeSets.set(ctx, byModel);
    }
    let set = byModel.get(model);
    if (!set) {
      const scopes = callScopes(ctx, model, null, tags);
      set = { scopes, leaseKey: Escrow.keyOf(scopes) };
      // A bound per key context: model names come from request bodies.
      if (byModel.size >= 64) byModel.clear();
      byModel.set(model, set);
    }
    return set;
  }

  private readonly scopeSets = new WeakMap<
    KeyContext,
    Map<string, { scopes: ScopeRef[]; leaseKey: string }>
  >();

  private lastPath = '';
  private lastFormat: WireFormat | null = null;

  /** `formatFromPath`, remembered for the last path (a route's calls come one path after another). */
  private formatOf(path: string): WireFormat | null {
    if (path !== this.lastPath) {
      this.lastFormat = formatFromPath(path);
      this.lastPath = path;
    }
    return this.lastFormat;
  }

  /** The admitted call of a reservation (or of a draw on a lease). */
  private newCall(
    r: Reserving,
    reserved: string | null,
    reservedNano: number,
    states: BudgetState[],
    outputLowered: number | null,
    draw: Draw | null = null,
  ): Call {
    const { o, ctx } = r;
    // Built field by field, in CallState's order (an object spread here cost more than the rest of
    // the call's construction).
    return this.deps.newCall(
      {
        requestId: r.requestId,
        startTime: o.startTime,
        model: o.model,
        tags: o.tags,
        endUser: o.endUser,
        body: o.body,
        // Spend is logged under the key's id, whichever of its secrets (new or in grace) was presented.
        keyHash: ctx.key.tokenHash,
        ctx,
        reservationId: reserved,
        reservedNano,
        scopes: r.scopes,
        states,
        rate: o.rate,
        outputLowered,
        unpriced: o.model !== '' && !o.price,
      },
      draw,
    );
  }

  /** A call admitted from this process's lease. */
  private leased(r: Reserving, escrow: Escrow, draw: Draw): Call {
    const states = escrow.statesFor(draw.lease);
    if (this.deps.options.onStorageError === 'allow')
      this.lastSeen.set(r.ctx.key.tokenHash, { admitted: true, states });
    return this.newCall(r, null, r.amountNano, states, null, draw);
  }

  /** The lease could not cover the call: a lease opened or renewed, else a reservation of its own. */
  private async reserveInStore(r: Reserving): Promise<Call> {
    const { deps } = this;
    const { input, ctx, o, scopes, requestId, format, escrow, leaseKey } = r;
    const { startTime, model, endUser, body } = o;
    const tokenHash = ctx.key.tokenHash;
    const allTags = o.tags;
    const reservationId = requestId;
    let { estimate, amountNano } = r;
    const mode = deps.options.enforcement;
    // The TTL counts from the write, not from the call's start: a strict call near a cap may wait up
    // to budgetWaitMs (30 s by default) before its reservation fits, and a reservation written that
    // late must not be swept as abandoned while its call runs.
    const reserve = (amountNano: number) => {
      const now = deps.now();
      return deps.gate.reserve({
        reservationId,
        scopes,
        amountNano,
        now,
        expiresAt: new Date(now.getTime() + deps.options.reservationTtlMs),
        mode,
        processId: deps.processId,
        pending: pendingOf(requestId, body, ctx, model, endUser, allTags, startTime),
      });
    };
    if (escrow) {
      const draw = await escrow.acquire(
        leaseKey,
        scopes,
        amountNano,
        pendingOf(requestId, body, ctx, model, endUser, allTags, startTime),
      );
      if (draw) return this.leased(r, escrow, draw);
    }
    let lowered: number | null = null;
    let refusal: RefusalDetail | null = null;
    let result: Awaited<ReturnType<typeof reserve>>;
    try {
      result = await reserve(amountNano);
      if (!result.ok && estimate && mode === 'strict') {
        // Near a cap: count exactly, then wait for calls in flight or lower the output cap, and
        // refuse only what cannot fit at all.
        const precise = this.boundOf(
          model,
          o.price!,
          format,
          body,
          input.bodyBytes,
          true,
          o.previousTurnTokens,
        );
        estimate = precise;
        const fitted = await this.fitToBudget(precise, reserve);
        result = fitted.result;
        amountNano = fitted.amountNano;
        refusal = fitted.refusal;
        if (fitted.outputTokens !== null && result.ok) {
          lowered = fitted.outputTokens;
          setOutputCap(body, precise.bound.outputField!, lowered);
        }
      }
    } catch (error) {
      if (!deps.servesThrough(error)) throw error;
      if (!this.servableWhileDown(ctx, startTime)) throw error;
      return this.newCall(r, null, 0, [], null);
    }
    const allow = deps.options.onStorageError === 'allow';
    if (!result.ok) {
      if (allow) this.lastSeen.set(tokenHash, { admitted: false, states: [result.refused] });
      throw budgetExceeded(ctx, result.refused, refusal, deps.now());
    }
    if (allow) this.lastSeen.set(tokenHash, { admitted: true, states: result.states });
    if (escrow) escrow.observed(leaseKey, result.states);
    return this.newCall(r, reservationId, amountNano, result.states, lowered);
  }

  /**
   * A call's worst case, or `null` for a call without a priced model (then 1 nano-dollar is reserved,
   * so that a spent budget still refuses it).
   */
  private worstCase(
    model: string,
    format: WireFormat | null,
    body: Record<string, unknown>,
    bodyBytes: number | undefined,
    precise: boolean,
  ): { bound: CallBound; rates: WorstCaseRates } | null {
    const price = model ? this.deps.prices.resolve(model) : undefined;
    return price ? this.boundOf(model, price, format, body, bodyBytes, precise) : null;
  }

  /** `worstCase` of a model whose price was resolved already. */
  private boundOf(
    model: string,
    price: ModelPrice,
    format: WireFormat | null,
    body: Record<string, unknown>,
    bodyBytes: number | undefined,
    precise: boolean,
    previousTurnTokens: number | null = null,
  ): { bound: CallBound; rates: WorstCaseRates } {
    const { prices } = this.deps;
    const bound = boundCall(model, format, body, price, {
      defaultMaxOutputTokens: this.deps.options.defaultMaxOutputTokens,
      precise,
      bodyBytes,
      previousTurnTokens,
    });
    const rates = prices.worstCaseRates(model, {
      promptTokens: bound.inputTokens + bound.audioTokens,
      serviceTier: bound.serviceTier,
      cacheWrites: bound.cacheWrites,
      audioOutput: bound.audioOutput,
    })!;
    return { bound, rates };
  }

  /**
   * Strict mode, after a refusal: reserves the precise worst case if it fits; else, while it would fit
   * once the calls in flight settle, waits for them (up to `budgetWaitMs`); else lowers the output cap
   * to what fits (not below `minOutputTokens`). What comes back refused cannot fit.
   */
  private async fitToBudget(
    estimate: { bound: CallBound; rates: WorstCaseRates },
    reserve: (amountNano: number) => ReturnType<StorageGate['reserve']>,
  ): Promise<{
    result: Awaited<ReturnType<StorageGate['reserve']>>;
    amountNano: number;
    outputTokens: number | null;
    refusal: RefusalDetail | null;
  }> {
    const { bound, rates } = estimate;
    const full = boundNano(bound, rates);
    const floor = this.deps.options.minOutputTokens;
    const canLower = bound.outputField !== null && bound.outputTokens > floor;
    const started = performance.now();
    const deadline = started + this.deps.options.budgetWaitMs;
    let result = await reserve(full);
    let amountNano = full;
    // The output cap only ever comes down (another scope may refuse what the first one took).
    let tokens = bound.outputTokens;
    let waits = 0;
    let misses = 0;
    while (!result.ok && misses < 16) {
      const state = result.refused;
      if (state.maxBudgetNano === null) break;
      const roomIfSettled = state.maxBudgetNano - state.spendNano;
      const roomNow = roomIfSettled - state.reservedNano;
      if (boundNano(bound, rates, tokens) > roomIfSettled) {
        // It can never fit this budget at this cap: lower the cap to what the budget has left.
        if (!canLower) break;
        const fitsSettled = Math.min(tokens, outputTokensFitting(bound, rates, roomIfSettled));
        if (fitsSettled < floor) break;
        const fitsNow = Math.min(tokens, outputTokensFitting(bound, rates, roomNow));
        tokens = fitsNow >= floor ? fitsNow : fitsSettled;
      }
      const want = boundNano(bound, rates, tokens);
      if (want > roomNow) {
        // It fits once calls in flight settle: wait for them (a settlement here wakes it at once;
        // other instances' are polled), then try again.
        if (performance.now() >= deadline) break;
        await this.deps.capacity.wait(scopeKey(state.scope), want - roomNow, waits++, deadline);
      } else {
        misses += 1; // it should have fitted: raced by another call, or another scope refused
      }
      amountNano = want;
      result = await reserve(want);
    }
    const outputTokens = result.ok && tokens < bound.outputTokens ? tokens : null;
    if (result.ok) return { result, amountNano, outputTokens, refusal: null };
    return {
      result,
      amountNano,
      outputTokens: null,
      refusal: {
        worstNano: full,
        floorNano: canLower ? boundNano(bound, rates, floor) : null,
        waitedMs: waits > 0 ? Math.round(performance.now() - started) : 0,
      },
    };
  }

  /** Upper bound of a call's cost in nano-dollars, as admission computes it (never below 1). */
  estimateNano(
    model: string,
    body: Record<string, unknown>,
    bodyBytes: number | undefined,
    precise: boolean,
    path?: string,
  ): number {
    const estimate = this.worstCase(model, formatFromPath(path), body, bodyBytes, precise);
    return estimate ? boundNano(estimate.bound, estimate.rates) : 1;
  }
}

/**
 * Every scope a call spends against: the key's own (key, user, team, member), then the optional
 * ones of this call (the key's budget for this model, the end user, each tag, the global budget).
 * Optional scopes without a budget are skipped by storage.
 */
function callScopes(ctx: KeyContext, model: string, endUser: string | null, tags: string[]): ScopeRef[] {
  const scopes = [...ctx.scopes];
  if (model) scopes.push({ kind: 'model', id: modelScopeId(ctx.key.tokenHash, model) });
  if (endUser) scopes.push({ kind: 'customer', id: endUser });
  for (const tag of tags) scopes.push({ kind: 'tag', id: tag });
  scopes.push({ kind: 'global', id: GLOBAL_SCOPE_ID });
  return scopes;
}

/** What a spend log needs if the call's reservation (or the lease it opens) is charged unsettled. */
function pendingOf(
  requestId: string,
  body: Record<string, unknown>,
  ctx: KeyContext,
  model: string,
  endUser: string | null,
  tags: string[],
  startTime: Date,
): PendingCall {
  return {
    requestId,
    callType: body.stream === true ? 'acompletion_stream' : 'acompletion',
    apiKeyHash: ctx.key.tokenHash,
    model,
    userId: ctx.user?.userId ?? ctx.key.userId,
    teamId: ctx.team?.teamId ?? ctx.key.teamId,
    endUser,
    tags,
    startTime,
  };
}
