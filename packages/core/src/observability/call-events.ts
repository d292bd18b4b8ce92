/**
 * The guard's narrow event point: what a call did, told to the app's hooks (`onCall`, `onRefused`) and
 * to the built-in sinks (Prometheus, OpenTelemetry). The guard calls `admitted`, `settled` and
 * `refused`; a sink that throws (or rejects) is logged and never fails the call.
 */
import type { GuardLogger } from '../guard-logger.js';
import type { TokenUsage } from '../pricing/normalize-usage.js';
import type { SpendLogRecord } from '../storage/storage-contract.js';

/** One settled call: its spend-log row as written, and who made it. */
export interface CallEvent {
  /** The spend-log row (cost in nano-dollars as `spendNano`, tokens, model, team, user, end user, tags). */
  log: SpendLogRecord;
  /** The cost in USD (`log.spendNano / 1e9`). */
  costUsd: number;
  /** The usage as metered, with cache and reasoning tokens where the provider reported them. */
  usage: TokenUsage;
  /** The model the request asked for (`log.model` is the one that answered). */
  requestedModel: string;
  keyAlias: string | null;
  teamAlias: string | null;
  /** False when storage could not take the settlement yet: it is kept and retried (never dropped silently). */
  settled: boolean;
  /** What admission reserved on the call's budgets, in nano-dollars (0: none). */
  reservedNano: number;
  /** How long admission took (key lookup, limits, reservation), in ms; `null` for a child call. */
  admissionMs: number | null;
  /** From the response's end to the settlement written (or kept for retry), in ms. */
  settleMs: number;
}

/** Why a call was refused before the route ran. */
export interface RefusalEvent {
  /** The error code in lower case: `budget_exceeded`, `rate_limited`, `invalid_key`, `storage_unavailable`, ... */
  reason: string;
  /** The HTTP status answered. */
  status: number;
  message: string;
  /** The budget or rate-limit scope that refused, when one did (`key`, `user`, `team`, `member`, `model`, `customer`, `tag`, `global`). */
  scope: { kind: string; id: string } | null;
  method: string;
  path: string;
  /** The model asked for, when the body was read. */
  requestedModel: string;
  /** Who called, when the key was resolved. */
  apiKeyHash: string | null;
  keyAlias: string | null;
  teamId: string | null;
  teamAlias: string | null;
  userId: string | null;
  endUser: string | null;
  /** On the guard's clock. */
  time: Date;
}

/** A sink of call events. Every method is optional; each may return a promise (not awaited). */
export interface CallObserver {
  /** Names the sink in the log line when it fails (the app's hooks: none). */
  readonly name?: string;
  /** A call admitted (its route is about to run). */
  admitted?(): void;
  onCall?(event: CallEvent): unknown;
  onRefused?(event: RefusalEvent): unknown;
}

/** Fans events out to the sinks; a sink's error is logged, never thrown. */
export class CallObservers {
  private readonly sinks: CallObserver[] = [];

  constructor(private readonly logger: GuardLogger) {}

  add(sink: CallObserver): void {
    this.sinks.push(sink);
  }

  get active(): boolean {
    return this.sinks.length > 0;
  }

  admitted(): void {
    for (const sink of this.sinks) this.run(sink, 'admitted', () => sink.admitted?.());
  }

  settled(event: CallEvent): void {
    for (const sink of this.sinks) this.run(sink, 'onCall', () => sink.onCall?.(event));
  }

  refused(event: RefusalEvent): void {
    for (const sink of this.sinks) this.run(sink, 'onRefused', () => sink.onRefused?.(event));
  }

  private run(sink: CallObserver, hook: string, fn: () => unknown): void {
    const what = sink.name ? `${sink.name} (${hook})` : `${hook} hook`;
    try {
      const out = fn();
      if (out && typeof (out as Promise<unknown>).then === 'function') {
        (out as Promise<unknown>).then(undefined, (error: unknown) => this.fail(what, error));
      }
    } catch (error) {
      this.fail(what, error);
    }
  }

  private fail(what: string, error: unknown): void {
    this.logger.error(`${what} failed (the call is not affected)`, error);
  }
}
