/**
 * OpenTelemetry: a span per guarded call in the GenAI semantic conventions, with its cost and the
 * budget decision as span events, and the `gen_ai.client.token.usage` histogram. Through
 * `@opentelemetry/api` alone (an optional peer, loaded on first use): without an SDK in the app it is
 * a no-op. The span is recorded when the call is settled, with the call's own start and end times.
 */
import type * as Otel from '@opentelemetry/api';
import type { GuardLogger } from '../guard-logger.js';
import type { CallEvent, CallObserver, RefusalEvent } from './call-events.js';

/** Options of the `tracing` option. */
export interface TracingOptions {
  /**
   * The tracer and meter name.
   * @default '@spendguard/core'
   */
  name?: string;
}

/** `gen_ai.operation.name` from the spend log's call type. */
function operationName(callType: string): string {
  if (callType.includes('embedding')) return 'embeddings';
  if (callType.includes('responses')) return 'chat';
  if (callType.includes('image')) return 'generate_content';
  if (callType.includes('text_completion')) return 'text_completion';
  return 'chat';
}

const MAX_QUEUED = 10_000;

interface Loaded {
  api: typeof Otel;
  tracer: Otel.Tracer;
  tokenUsage: Otel.Histogram;
}

export class OtelTracing implements CallObserver {
  readonly name = 'tracing';
  private loaded: Loaded | null = null;
  private queue: Array<() => void> = [];

  constructor(logger: GuardLogger, options: TracingOptions) {
    const name = options.name ?? '@spendguard/core';
    import('@opentelemetry/api').then(
      (mod) => {
        // Native ESM sees the named exports; some bundlers only a `default` (the CJS exports object).
        const api = (
          'trace' in mod && 'SpanKind' in mod ? mod : (mod as unknown as { default: typeof Otel }).default
        ) as typeof Otel;
        const tokenUsage = api.metrics.getMeter(name).createHistogram('gen_ai.client.token.usage', {
          description: 'Measures number of input and output tokens used',
          unit: '{token}',
          advice: {
            explicitBucketBoundaries: [
              1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
            ],
          },
        });
        this.loaded = { api, tracer: api.trace.getTracer(name), tokenUsage };
        for (const apply of this.queue) apply();
        this.queue = [];
      },
      (error: unknown) => {
        this.queue = [];
        logger.error(
          'tracing: true needs the @opentelemetry/api package: npm install @opentelemetry/api',
          error,
        );
      },
    );
  }

  onCall(event: CallEvent): void {
    this.apply(() => this.recordCall(event));
  }

  onRefused(event: RefusalEvent): void {
    this.apply(() => this.recordRefusal(event));
  }

  private apply(fn: () => void): void {
    if (this.loaded) fn();
    else if (this.queue.length < MAX_QUEUED) this.queue.push(fn);
  }

  private recordCall(e: CallEvent): void {
    const { api, tracer, tokenUsage } = this.loaded!;
    const log = e.log;
    const operation = operationName(log.callType);
    const common: Otel.Attributes = {
      'gen_ai.operation.name': operation,
      'gen_ai.request.model': e.requestedModel || log.model,
      'gen_ai.response.model': log.model,
    };
    if (log.provider) common['gen_ai.provider.name'] = log.provider;
    const attributes: Otel.Attributes = {
      ...common,
      'gen_ai.usage.input_tokens': log.promptTokens,
      'gen_ai.usage.output_tokens': log.completionTokens,
      'gen_ai.usage.cost.amount': e.costUsd,
      'gen_ai.usage.cost.currency': 'USD',
      'spendguard.request_id': log.requestId,
      'spendguard.call_type': log.callType,
      'spendguard.usage.estimated': log.estimated,
      'http.response.status_code': log.httpStatus,
    };
    const u = e.usage;
    if (u.cachedPromptTokens) attributes['gen_ai.usage.cache_read.input_tokens'] = u.cachedPromptTokens;
    if (u.cacheWriteTokens) attributes['gen_ai.usage.cache_creation.input_tokens'] = u.cacheWriteTokens;
    if (u.reasoningTokens) attributes['gen_ai.usage.reasoning.output_tokens'] = u.reasoningTokens;
    if (log.teamId) attributes['spendguard.team_id'] = log.teamId;
    if (log.userId) attributes['spendguard.user_id'] = log.userId;
    if (log.endUser) attributes['spendguard.end_user'] = log.endUser;
    attributes['spendguard.api_key_hash'] = log.apiKeyHash;
    if (e.keyAlias) attributes['spendguard.api_key_alias'] = e.keyAlias;
    const span = tracer.startSpan(`${operation} ${e.requestedModel || log.model}`.trim(), {
      kind: api.SpanKind.INTERNAL,
      startTime: log.startTime,
      attributes,
    });
    span.addEvent(
      'spendguard.budget.admitted',
      { 'spendguard.budget.reserved.amount': e.reservedNano / 1e9 },
      log.startTime,
    );
    span.addEvent(
      'spendguard.budget.settled',
      {
        'spendguard.budget.charged.amount': e.costUsd,
        'spendguard.budget.settlement': e.settled ? 'written' : 'kept_for_retry',
      },
      log.endTime,
    );
    if (log.status === 'failure') span.setStatus({ code: api.SpanStatusCode.ERROR });
    span.end(log.endTime);
    tokenUsage.record(log.promptTokens, { ...common, 'gen_ai.token.type': 'input' });
    tokenUsage.record(log.completionTokens, { ...common, 'gen_ai.token.type': 'output' });
  }

  private recordRefusal(e: RefusalEvent): void {
    const { api, tracer } = this.loaded!;
    const attributes: Otel.Attributes = {
      'gen_ai.operation.name': 'chat',
      'http.response.status_code': e.status,
      'error.type': e.reason,
    };
    if (e.requestedModel) attributes['gen_ai.request.model'] = e.requestedModel;
    if (e.apiKeyHash) attributes['spendguard.api_key_hash'] = e.apiKeyHash;
    if (e.teamId) attributes['spendguard.team_id'] = e.teamId;
    const span = tracer.startSpan(`chat ${e.requestedModel}`.trim(), {
      kind: api.SpanKind.INTERNAL,
      startTime: e.time,
      attributes,
    });
    const event: Otel.Attributes = { 'spendguard.refusal.reason': e.reason };
    if (e.scope) {
      event['spendguard.refusal.scope'] = e.scope.kind;
      event['spendguard.refusal.scope_id'] = e.scope.id;
    }
    span.addEvent('spendguard.budget.refused', event, e.time);
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: e.message });
    span.end(e.time);
  }
}
