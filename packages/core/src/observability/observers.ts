/**
 * Builds the guard's call observers from its options: the app's `onCall` / `onRefused` hooks, then
 * the Prometheus metrics and the OpenTelemetry tracing when asked for.
 */
import type { ResolvedOptions } from '../config.js';
import { SpendGuardError } from '../errors.js';
import type { SpendStorage } from '../storage/storage-contract.js';
import { type CallEvent, CallObservers, type RefusalEvent } from './call-events.js';
import { OtelTracing } from './otel-tracing.js';
import { DISABLED_METRICS, type MetricsEndpoint, PrometheusMetrics } from './prometheus-metrics.js';

export type { CallObservers } from './call-events.js';

/** What the sinks need of the guard (a narrow view, so this module does not import the guard). */
export interface ObservedGuard {
  now(): Date;
  read<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T>;
  stats(): { storageErrors: number; pendingSettlements: number; settlementsDropped: number };
}

const METRICS = new WeakMap<CallObservers, MetricsEndpoint>();

export function createObservers(guard: ObservedGuard, options: ResolvedOptions): CallObservers {
  const observers = new CallObservers(options.logger);
  const { onCall, onRefused } = options;
  if (onCall || onRefused) {
    observers.add({
      onCall: onCall ? (e: CallEvent) => onCall(e) : undefined,
      onRefused: onRefused ? (e: RefusalEvent) => onRefused(e) : undefined,
    });
  }
  if (options.metrics) {
    const metrics = new PrometheusMetrics(
      guard,
      options.logger,
      options.metrics === true ? {} : options.metrics,
    );
    observers.add(metrics);
    METRICS.set(observers, metrics);
  }
  if (options.tracing) {
    observers.add(new OtelTracing(options.logger, options.tracing === true ? {} : options.tracing));
  }
  return observers;
}

/** The guard's `metrics`: the Prometheus sink, or one that says how to turn it on. */
export function metricsOf(observers: CallObservers): MetricsEndpoint {
  return METRICS.get(observers) ?? DISABLED_METRICS;
}

/** The refusal of a call, from the error admission threw and the response it got. */
export function refusalEvent(
  guard: ObservedGuard,
  error: unknown,
  response: { status: number; body: unknown },
  input: { method: string; path: string; body?: unknown },
  apiKeyHash: string | null,
  ctx: {
    key: { keyAlias: string | null; userId: string | null; teamId: string | null };
    user: { userId: string } | null;
    team: { teamId: string; teamAlias: string | null } | null;
  } | null,
): RefusalEvent {
  const code = error instanceof SpendGuardError ? error.code : 'INTERNAL';
  const body = (input.body ?? {}) as Record<string, unknown>;
  const message = (response.body as { error?: { message?: unknown } } | null)?.error?.message;
  const endUser = typeof body.user === 'string' ? body.user : null;
  return {
    reason: code.toLowerCase(),
    status: response.status,
    message: typeof message === 'string' ? message : '',
    scope: error instanceof SpendGuardError ? error.scope : null,
    method: input.method,
    path: input.path,
    requestedModel: typeof body.model === 'string' ? body.model : '',
    apiKeyHash: ctx ? apiKeyHash : null,
    keyAlias: ctx?.key.keyAlias ?? null,
    teamId: ctx?.team?.teamId ?? ctx?.key.teamId ?? null,
    teamAlias: ctx?.team?.teamAlias ?? null,
    userId: ctx?.user?.userId ?? ctx?.key.userId ?? null,
    endUser,
    time: guard.now(),
  };
}
