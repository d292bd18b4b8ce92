import { AsyncLocalStorage } from 'node:async_hooks';
import type { CapacityWaiters } from '../admission/capacity-waiters.js';
import type { Draw, Escrow } from '../admission/escrow.js';
import { timeOrderedId } from '../ids.js';
import type { CallInput, CallRecord, CallState } from '../pipeline/call-types.js';
import { normalizeUsage, type TokenUsage } from '../pricing/normalize-usage.js';
import type { PriceBook } from '../pricing/price-book.js';
import { scopeKey } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import { countRequestPromptTokens, requestStreamUsage } from './request-body.js';
import type { ResponseTap } from './response-meter.js';
import { countTextTokens } from './token-count.js';
import { openaiWebSearch } from './web-search.js';
import { formatFromPath, modelFromPath, type WireFormat } from './wire-formats.js';

// How one guarded call is metered beyond its own response: the call's context (AsyncLocalStorage, so
// that `guard.fetch` and `track()` find it), its child calls, and the rule that keeps them from being
// counted twice.
//
// THE DOUBLE-COUNT RULE. A guarded request is charged either from its own response (the response
// tap) or from its child calls (`guard.fetch` upstream calls and `track()` reports), never both: once
// one child call was admitted or tracked, the request's own spend-log row is written at $0 with zero
// tokens and `metadata.child_calls` / `metadata.metered_by`, whatever its response says, and each child
// is its own row (`metadata.parent_request_id`) with the request's key, user, team, end-user and tags.
// The request's own reservation is released at the first child, which reserves its own worst case.

/** What the meter needs of a guarded call (`GuardedCall` in `pipeline/guarded-call.ts`). */
export interface MeteredCall {
  readonly state: CallState;
  /** Admitted from this process's budget lease (escrow) rather than a reservation of its own. */
  escrowDraw: Draw | null;
  readonly tap: ResponseTap;
  readonly meter: CallMeter;
  readonly requestId: string;
  finish(options?: { aborted?: boolean; urgent?: boolean }): Promise<CallRecord>;
  track(usage: unknown, options: TrackOptions): Promise<CallRecord>;
  /**
   * Set once the call's body is complete, when the lease it was admitted from covers its spend, so that
   * it needs no commit before its last byte (see `GuardedCall.beforeLastByte`).
   */
  readonly leaseCovered: boolean;
}

/** What the meter needs of the guard. */
export interface MeterHost {
  now(): Date;
  prices: Pick<PriceBook, 'resolve'>;
  gate: Pick<StorageGate, 'call'>;
  capacity: Pick<CapacityWaiters, 'freedOn'>;
  /** Whether calls commit their settlement before their last byte (`settleBeforeLastByte`). */
  readonly settlesBeforeLastByte: boolean;
  /** Escrow admission's leases, when on. */
  readonly escrow: Pick<Escrow, 'returned'> | null;
}

/**
 * Makes a child call of a call's own kind. Typed as a method (whose parameters TypeScript checks
 * bivariantly), so that the guarded call's spawner, which takes its own wider guard type, fits.
 */
type SpawnChild = { spawn(state: CallState, guard: MeterHost): MeteredCall }['spawn'];

const context = new AsyncLocalStorage<MeteredCall>();

const noHeader: CallInput['header'] = () => undefined;

/**
 * Whether routes run in their call's AsyncLocalStorage context (which `guard.fetch` and `track()` need).
 * Off until something needs it (`guard.fetch` is read, or the `callContext` option): on Node 20 an
 * AsyncLocalStorage in use turns on promise hooks for every promise of the process, which cost the
 * example route about 200 µs of CPU per request (`pnpm bench`), paid by apps that never use it.
 * On for one guard, on for the process (the context is the module's).
 */
let contextOn = false;

/** Turns the call context on, from the next guarded request on. */
export function useCallContext(): void {
  contextOn = true;
}

/** The guarded call whose route is running (inside `GuardedCall.run`), if any. */
export function currentCall(): MeteredCall | undefined {
  return contextOn ? context.getStore() : undefined;
}

/** Why no guarded call was found here: for `track()`'s error and `guard.fetch`'s warning. */
export function noCallHint(): string {
  return contextOn
    ? 'run it from a route behind spendGuard(); a route that was already running when the call context was turned on, by the first read of guard.fetch, runs without it'
    : 'the call context is off: pass `callContext: true` to spendGuard(), or read guard.fetch before serving (e.g. `new OpenAI({ fetch: guard.fetch })` at start-up)';
}

/** Options of `track()`. */
export interface TrackOptions {
  /**
   * The model the usage was spent on, priced from the table.
   * @example { model: 'gpt-4o' }
   */
  model: string;
}

/**
 * Records usage the route got from a provider itself (not through `guard.fetch`), for the guarded
 * request being handled: its own spend-log row, linked to the request, with the request's key, user,
 * team, end-user and tags. `usage` is a provider's usage object in any shape (OpenAI chat or
 * Responses, Anthropic, Gemini...) or a `TokenUsage`. The request's own response is then not charged
 * (see the double-count rule). Throws outside a guarded request.
 * @example await track(completion.usage, { model: completion.model })
 */
export function track(usage: unknown, options: TrackOptions): Promise<CallRecord> {
  const call = currentCall();
  if (!call) {
    throw new Error(
      `spendguard track(): no guarded request is being handled here (${noCallHint()}); or use the call itself: res.locals.spendguard.track(...) / c.get("spendguard").track(...)`,
    );
  }
  return call.track(usage, options);
}

const CALL_TYPES: Record<WireFormat, string> = {
  'openai-chat': 'acompletion',
  'openai-responses': 'aresponses',
  'openai-embeddings': 'aembedding',
  'anthropic-messages': 'anthropic_messages',
  gemini: 'agenerate_content',
};

// The wire format of each request path seen (without its query, which says nothing of the format and
// may carry a key), read (split, trim, suffixes, a regex) up to three times a call otherwise. Bounded:
// paths come from requests; past the cap, formats are read uncached.
const MAX_CACHED_PATHS = 1000;
const pathFormats = new Map<string, WireFormat | null>();

/** `formatFromPath`, remembered per path. */
export function pathFormat(path: string): WireFormat | null {
  const query = path.indexOf('?');
  const bare = query < 0 ? path : path.slice(0, query);
  const cached = pathFormats.get(bare);
  if (cached !== undefined) return cached;
  const format = formatFromPath(bare);
  if (pathFormats.size < MAX_CACHED_PATHS) pathFormats.set(bare, format);
  return format;
}

/** What the meter makes of a call when it is priced. */
export interface MeteredUsage {
  model: string;
  usage: TokenUsage;
  estimated: boolean;
}

/** The metering side of one guarded call (one per call, created with it). */
export class CallMeter {
  /** Reads a header of the request (the key is presented again for each child call). */
  header: CallInput['header'] = noHeader;
  path = '';
  /** The wire format the request path points at (`pathFormat`), read once at `prepare`. */
  private format: WireFormat | null = null;
  /** The request body as the guard rewrote it (JSON), or `null` when it is unchanged. */
  rewrittenBody: string | null = null;
  /** For a child call: the guarded request it belongs to. */
  parentRequestId: string | null = null;
  private reported: { model: string; usage: TokenUsage } | null = null;
  private trackedCalls = 0;
  private childCostNano = 0;
  private parent: CallMeter | null = null;
  private partial = false;
  private released = false;

  constructor(
    private readonly call: MeteredCall,
    private readonly guard: MeterHost,
    private readonly spawn: SpawnChild,
  ) {}

  /**
   * Once admitted: remembers the request, tells the tap which format to expect, and asks a streamed
   * chat completion for its usage (the body is rewritten in place; the route must see it).
   */
  prepare(input: CallInput): void {
    this.header = input.header;
    this.path = input.path;
    const format = pathFormat(input.path);
    this.format = format;
    const hide = requestStreamUsage(format, input.body);
    // A streamed chat completion asked for its usage, or an output cap lowered to fit a budget.
    if (hide || this.call.state.outputLowered !== null) this.rewrittenBody = JSON.stringify(input.body);
    const searches = openaiWebSearch(format, this.call.state.model, this.call.state.body) !== null;
    this.call.tap.hint({ format, hideUsageChunk: hide, searches });
  }

  /** Runs `fn` (the route) in this call's context, when the context is on (see `useCallContext`). */
  run<T>(fn: () => T): T {
    return contextOn ? context.run(this.call, fn) : fn();
  }

  /** Links an admitted upstream call (`guard.fetch`) to this request. */
  adopt(child: MeteredCall): void {
    this.fetched ??= [];
    this.fetched.push(child);
    this.link(child.meter, child.state);
  }

  /** The upstream calls adopted (`guard.fetch`, the call's own `fetch`). */
  private fetched: MeteredCall[] | null = null;

  /** How many upstream calls this request made. */
  private get upstreamCalls(): number {
    return this.fetched?.length ?? 0;
  }

  /**
   * Whether this request's spend is all covered by leases: its own reservation was given up at its
   * first upstream call (it is charged $0), nothing was `track()`ed (those are written at once and
   * waited for), and every upstream call it made was admitted from a lease that covers it. Its own $0
   * row then needs no commit before its last byte, as a leased call's does not.
   */
  childrenLeaseCovered(): boolean {
    if (!this.released || this.trackedCalls > 0 || this.fetched === null) return false;
    for (const child of this.fetched) if (!child.leaseCovered) return false;
    return true;
  }

  /** The settlements of what the route `track()`ed, for `GuardedCall.beforeLastByte` (made at the first). */
  private tracked: Promise<unknown>[] | null = null;

  /** Resolves once every `track()` so far is settled (written, or kept for retry). */
  trackedSettled(): Promise<unknown> {
    return Promise.allSettled(this.tracked ?? []);
  }

  /** See {@link track}. */
  track(usage: unknown, options: TrackOptions): Promise<CallRecord> {
    const done = this.trackNow(usage, options);
    this.tracked ??= [];
    this.tracked.push(done);
    return done;
  }

  private async trackNow(usage: unknown, options: TrackOptions): Promise<CallRecord> {
    if (!options || typeof options.model !== 'string' || options.model === '') {
      throw new TypeError(
        "spendguard track(usage, { model }): `model` must be the model's name, e.g. 'gpt-4o'",
      );
    }
    const state = this.call.state;
    const child = this.spawn(
      {
        ...state,
        requestId: timeOrderedId(),
        startTime: this.guard.now(),
        model: options.model,
        body: {},
        reservationId: null,
        reservedNano: 0,
        states: [],
        rate: null,
        outputLowered: null,
        unpriced: !this.guard.prices.resolve(options.model),
      },
      this.guard,
    );
    child.meter.reported = { model: options.model, usage: normalizeUsage(usage) };
    this.trackedCalls += 1;
    this.link(child.meter, child.state);
    await this.releaseOwnReservation();
    // Where responses wait for their settlements, this one is written at once too.
    return child.finish({ urgent: this.guard.settlesBeforeLastByte });
  }

  private link(child: CallMeter, childState: CallState): void {
    child.parentRequestId = this.call.requestId;
    child.parent = this;
    childState.tags = this.call.state.tags;
    childState.endUser = this.call.state.endUser ?? childState.endUser;
  }

  /**
   * Drops this request's own reservation (once): a request metered by its child calls is charged $0,
   * and each child reserves its own worst case. Called before the first child is admitted.
   */
  async releaseOwnReservation(): Promise<void> {
    const draw = this.call.escrowDraw;
    if (draw && !this.released) {
      // Admitted from this process's lease: its worst case goes back to the lease.
      this.released = true;
      this.call.escrowDraw = null;
      this.guard.escrow?.returned(draw);
      return;
    }
    const id = this.call.state.reservationId;
    if (this.released || !id) return;
    this.released = true;
    try {
      const state = this.call.state;
      if (await this.guard.gate.call('release', (storage) => storage.release(id))) {
        this.guard.capacity.freedOn(state.scopes.map(scopeKey), state.reservedNano);
      }
    } catch {
      // Settling the request releases it anyway; only headroom is lost meanwhile.
    }
  }

  /** Whether this request's own reservation was dropped (at its first child call). */
  get reservationReleased(): boolean {
    return this.released;
  }

  /** Called once the call is priced: a child call adds its cost to its request's. */
  priced(costNano: number): void {
    if (this.parent) this.parent.childCostNano += costNano;
  }

  /** What the response cost header says: the call's own cost plus its child calls' priced so far. */
  responseCostNano(ownNano: number): number {
    return ownNano + this.childCostNano;
  }

  /**
   * Usage, model and estimate flag of the call, by the double-count rule, with the OpenAI web searches
   * it ran. Loads tiktoken only to estimate.
   */
  resolve(): MeteredUsage {
    const metered = this.resolveTokens();
    if (this.reported || this.upstreamCalls + this.trackedCalls > 0) return metered;
    const tap = this.call.tap;
    if (tap.status >= 400) return metered;
    const search = openaiWebSearch(this.format, metered.model, this.call.state.body);
    if (!search) return metered;
    // Responses reports each search as a `web_search_call` item; a chat search model searches once a
    // call and says so only through its url_citation annotations (LiteLLM's sign), so it is counted
    // from the request, as OpenAI bills it.
    const searches = search.tool === 'chat' ? 1 : tap.observe().webSearchCalls;
    const usage: TokenUsage = { ...metered.usage, webSearchTool: search.tool };
    if (searches > (usage.webSearchRequests ?? 0)) usage.webSearchRequests = searches;
    if (search.size && !usage.searchContextSize) usage.searchContextSize = search.size;
    return { ...metered, usage };
  }

  private resolveTokens(): MeteredUsage {
    const state = this.call.state;
    if (this.reported) return { model: this.reported.model, usage: this.reported.usage, estimated: false };
    const tap = this.call.tap;
    const observed = tap.observe();
    const model = observed.model ?? (state.model || modelFromPath(this.path) || '');
    if (this.upstreamCalls + this.trackedCalls > 0) {
      return { model, usage: { promptTokens: 0, completionTokens: 0 }, estimated: false };
    }
    let usage = observed.usage;
    if (usage && !observed.usageFinal) {
      // The input side was reported (Anthropic message_start, a Gemini chunk); count what was delivered.
      this.partial = true;
      const counted = countTextTokens(model || 'gpt-4o', observed.completionText);
      return {
        model,
        usage: { ...usage, completionTokens: Math.max(usage.completionTokens, counted) },
        estimated: true,
      };
    }
    if (!usage && tap.status < 400 && (observed.completionText || tap.isStream)) {
      // No usage reported: count locally and say so (the only place, with admission near a cap, that
      // tiktoken loads).
      const counting = model || 'gpt-4o';
      usage = {
        promptTokens: countRequestPromptTokens(counting, state.body, observed.format),
        completionTokens: countTextTokens(counting, observed.completionText),
      };
      return { model, usage, estimated: true };
    }
    return { model, usage: usage ?? { promptTokens: 0, completionTokens: 0 }, estimated: false };
  }

  /** LiteLLM-style call type: `acompletion`, `aresponses`, `aembedding`, `anthropic_messages`, ... `_stream`. */
  callType(): string {
    if (this.reported) return 'track';
    const format = this.call.tap.observe().format ?? this.format ?? 'openai-chat';
    return CALL_TYPES[format] + (this.call.tap.isStream ? '_stream' : '');
  }

  /** What the spend log's metadata says about how the call was metered. */
  metadata(): Record<string, unknown> {
    const meta: Record<string, unknown> = {};
    if (this.parentRequestId) meta.parent_request_id = this.parentRequestId;
    const children = this.upstreamCalls + this.trackedCalls;
    if (children > 0) {
      meta.child_calls = children;
      meta.metered_by =
        this.upstreamCalls > 0 && this.trackedCalls > 0
          ? 'guard.fetch+track'
          : this.upstreamCalls > 0
            ? 'guard.fetch'
            : 'track';
    }
    if (this.partial) meta.usage_partial = true;
    return meta;
  }
}
