/**
 * Observability: the `onCall` / `onRefused` hooks, the Prometheus metrics (scraped over real HTTP
 * after guarded calls and refusals) and the OpenTelemetry spans (the SDK's in-memory exporter).
 *
 * Costs are hand-worked from gpt-4o's prices ($2.5e-6 a prompt token, $1e-5 a completion token) and
 * the simulator's scripted usage: 1000 prompt + 200 completion tokens cost $0.0025 + $0.002 = $0.0045.
 */
import { metrics, trace } from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { CallEvent, GuardLogger, RefusalEvent } from '@spendguard/core';
import type { SimulatedUsage } from '@spendguard/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const USAGE: SimulatedUsage = { prompt_tokens: 1000, completion_tokens: 200 };

async function chat(app: TestApp, key: string, usage: SimulatedUsage = USAGE) {
  app.simulator.scriptNextUsage(usage);
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 300 }),
  });
  await res.arrayBuffer();
  return res.status;
}

/** One sample of the exposition: `name{labels} value`, the labels matched as given (others ignored). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const got = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[2]);
  }
  return undefined;
}

/** Sum of every sample of `name` whose labels include `labels`. */
function total(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** Collects on demand (the SDK's reader without a timer). */
class TestReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const reader = new TestReader();
const meterProvider = new MeterProvider({ readers: [reader] });
beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
  metrics.setGlobalMeterProvider(meterProvider);
});
afterAll(async () => {
  await provider.shutdown();
  await meterProvider.shutdown();
  trace.disable();
  metrics.disable();
});

/** The `gen_ai.client.token.usage` histogram's sum and count for one token type (every guard so far). */
async function tokenUsage(type: 'input' | 'output'): Promise<{ sum: number; count: number }> {
  const { resourceMetrics } = await reader.collect();
  let sum = 0;
  let count = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== 'gen_ai.client.token.usage') continue;
      for (const point of metric.dataPoints) {
        if (point.attributes['gen_ai.token.type'] !== type) continue;
        const v = point.value as { sum: number; count: number };
        sum += v.sum;
        count += v.count;
      }
    }
  }
  return { sum, count };
}

describe.each(ADAPTERS)('observability ($name)', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
    exporter.reset();
  });

  async function setup(extra: Record<string, unknown> = {}) {
    const calls: CallEvent[] = [];
    const refusals: RefusalEvent[] = [];
    const errors: string[] = [];
    const logger: GuardLogger = { warn: () => {}, error: (m) => errors.push(m) };
    app = await startTestApp(framework, {
      guardOptions: {
        metrics: true,
        tracing: true,
        logger,
        onCall: (e) => {
          calls.push(e);
        },
        onRefused: (e) => {
          refusals.push(e);
        },
        ...extra,
      },
    });
    const team = await admin(app, 'POST', '/team/new', { team_alias: 'frontend', max_budget: 10 });
    const a = await admin(app, 'POST', '/key/generate', {
      team_id: team.body.team_id,
      key_alias: 'alpha',
      max_budget: 1,
    });
    // Too small for one call's worst case (300 output tokens alone are $0.003): refused, strict mode.
    const b = await admin(app, 'POST', '/key/generate', { key_alias: 'tiny', max_budget: 0.001 });
    return { app, calls, refusals, errors, teamId: team.body.team_id as string, keyA: a.body, keyB: b.body };
  }

  it('the hooks, the metrics and /spend/logs agree on two calls and two refusals', async () => {
    const { app, calls, refusals, teamId, keyA, keyB } = await setup();
    expect(await chat(app, keyA.key)).toBe(200);
    expect(await chat(app, keyA.key)).toBe(200);
    expect(await chat(app, keyB.key)).toBe(429);
    expect(await chat(app, 'sk-not-a-key')).toBe(401);
    await app.settled();

    expect(calls).toHaveLength(2);
    for (const c of calls) {
      expect(c.costUsd).toBeCloseTo(0.0045, 12);
      expect(c.log.promptTokens).toBe(1000);
      expect(c.log.completionTokens).toBe(200);
      expect(c.keyAlias).toBe('alpha');
      expect(c.teamAlias).toBe('frontend');
      expect(c.settled).toBe(true);
    }
    expect(refusals.map((r) => [r.reason, r.status, r.scope?.kind ?? null])).toEqual([
      ['budget_exceeded', 429, 'key'],
      ['invalid_key', 401, null],
    ]);
    expect(refusals[0]!.apiKeyHash).toBe(keyB.token);

    const logs = await admin(app, 'GET', `/spend/logs?api_key=${keyA.token}`);
    expect(logs.body).toHaveLength(2);
    const logged = logs.body.reduce((s: number, l: { spend: number }) => s + l.spend, 0);
    expect(logged).toBeCloseTo(0.009, 12);

    const res = await fetch(`${app.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    const who = { hashed_api_key: keyA.token, api_key_alias: 'alpha', team: teamId, team_alias: 'frontend' };
    expect(sample(text, 'litellm_spend_metric_total', { ...who, model: 'gpt-4o' })).toBeCloseTo(logged, 12);
    expect(sample(text, 'litellm_requests_metric_total', who)).toBe(2);
    expect(sample(text, 'litellm_input_tokens_metric_total', { ...who, requested_model: 'gpt-4o' })).toBe(
      2000,
    );
    expect(sample(text, 'litellm_output_tokens_metric_total', who)).toBe(400);
    expect(sample(text, 'litellm_total_tokens_metric_total', who)).toBe(2400);
    expect(sample(text, 'litellm_proxy_total_requests_metric_total', { ...who, status_code: '200' })).toBe(2);
    expect(total(text, 'litellm_proxy_total_requests_metric_total')).toBe(4);
    expect(
      sample(text, 'litellm_proxy_failed_requests_metric_total', {
        hashed_api_key: keyB.token,
        api_key_alias: 'tiny',
        exception_status: '429',
        exception_class: 'BudgetExceededError',
        // Key B has no team and no user: LiteLLM's labels read "None" there (str(None)).
        team: 'None',
        team_alias: 'None',
        user: 'None',
      }),
    ).toBe(1);
    expect(total(text, 'litellm_proxy_failed_requests_metric_total', { exception_status: '401' })).toBe(1);
    expect(sample(text, 'spendguard_refusals_total', { reason: 'budget_exceeded', scope: 'key' })).toBe(1);
    expect(sample(text, 'spendguard_refusals_total', { reason: 'invalid_key', scope: '' })).toBe(1);
    // Budget gauges, read from storage at the scrape: 1 - 0.009 left on the key, 10 - 0.009 on the team.
    const keyLabels = { hashed_api_key: keyA.token, api_key_alias: 'alpha' };
    expect(sample(text, 'litellm_remaining_api_key_budget_metric', keyLabels)).toBeCloseTo(0.991, 12);
    expect(sample(text, 'litellm_api_key_max_budget_metric', keyLabels)).toBe(1);
    expect(
      sample(text, 'litellm_remaining_team_budget_metric', { team: teamId, team_alias: 'frontend' }),
    ).toBeCloseTo(9.991, 12);
    expect(sample(text, 'litellm_remaining_api_key_budget_metric', { hashed_api_key: keyB.token })).toBe(
      0.001,
    );
    expect(sample(text, 'litellm_request_total_latency_metric_count', who)).toBe(2);
    expect(sample(text, 'litellm_overhead_latency_metric_count', who)).toBe(2);
    expect(sample(text, 'spendguard_reservations_in_flight', {})).toBe(0);
    expect(sample(text, 'spendguard_storage_errors_total', {})).toBe(0);
    expect(sample(text, 'spendguard_settlement_lag_seconds_count', {})).toBe(2);
    // The end user is not a label unless asked for (cardinality): always "None", as in LiteLLM without
    // enable_end_user_cost_tracking_prometheus_only.
    expect(total(text, 'litellm_requests_metric_total', { end_user: 'None' })).toBe(2);
    expect(text).not.toMatch(/end_user="(?!None")/);
    expect(text).not.toMatch(/(?:team|team_alias|user|api_key_alias|end_user)=""/);

    // One span per call and per refusal, in the GenAI conventions.
    const spans = exporter.getFinishedSpans();
    const ok = spans.filter((s) => s.attributes['gen_ai.usage.input_tokens'] !== undefined);
    expect(ok).toHaveLength(2);
    const span = ok[0]!;
    expect(span.name).toBe('chat gpt-4o');
    expect(span.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-4o',
      'gen_ai.response.model': 'gpt-4o',
      'gen_ai.usage.input_tokens': 1000,
      'gen_ai.usage.output_tokens': 200,
      'gen_ai.usage.cost.currency': 'USD',
    });
    expect(span.attributes['gen_ai.usage.cost.amount']).toBeCloseTo(0.0045, 12);
    expect(span.events.map((e) => e.name)).toEqual([
      'spendguard.budget.admitted',
      'spendguard.budget.settled',
    ]);
    const refused = spans.find((s) => s.events.some((e) => e.name === 'spendguard.budget.refused'));
    expect(refused?.events[0]?.attributes).toMatchObject({
      'spendguard.refusal.reason': 'budget_exceeded',
      'spendguard.refusal.scope': 'key',
    });
  });

  it('cache and reasoning tokens reach the span; tokens reach gen_ai.client.token.usage', async () => {
    const { app, keyA } = await setup();
    const before = { input: await tokenUsage('input'), output: await tokenUsage('output') };
    const usage = { prompt_tokens: 1000, completion_tokens: 200, cached_tokens: 600, reasoning_tokens: 50 };
    expect(await chat(app, keyA.key, usage)).toBe(200);
    await app.settled();
    const span = exporter.getFinishedSpans().find((s) => s.attributes['gen_ai.usage.input_tokens'] === 1000);
    expect(span?.attributes['gen_ai.usage.cache_read.input_tokens']).toBe(600);
    expect(span?.attributes['gen_ai.usage.reasoning.output_tokens']).toBe(50);
    const input = await tokenUsage('input');
    const output = await tokenUsage('output');
    expect([input.sum - before.input.sum, input.count - before.input.count]).toEqual([1000, 1]);
    expect([output.sum - before.output.sum, output.count - before.output.count]).toEqual([200, 1]);
  });

  it('labels stay bounded: past maxLabelSets, calls count under __other__; end_user only when asked', async () => {
    const { app, keyA } = await setup({ metrics: { maxLabelSets: 1, endUserLabel: true } });
    const c = await admin(app, 'POST', '/key/generate', { key_alias: 'gamma', max_budget: 1 });
    const call = async (key: string, user: string) => {
      app!.simulator.scriptNextUsage(USAGE);
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 300,
          user,
        }),
      });
      await res.arrayBuffer();
      return res.status;
    };
    expect(await call(keyA.key, 'u-1')).toBe(200); // the one set allowed: key A x gpt-4o x u-1
    expect(await call(keyA.key, 'u-1')).toBe(200);
    expect(await call(keyA.key, 'u-2')).toBe(200); // a second set: over the bound
    expect(await call(c.body.key, 'u-1')).toBe(200); // a third
    await app.settled();
    const text = await (await fetch(`${app.baseUrl}/metrics`)).text();
    expect(
      sample(text, 'litellm_requests_metric_total', { hashed_api_key: keyA.token, end_user: 'u-1' }),
    ).toBe(2);
    // Two series under __other__ (key A's team, and key C's "None"), one call each.
    expect(
      total(text, 'litellm_requests_metric_total', {
        hashed_api_key: '__other__',
        api_key_alias: 'None',
        end_user: 'None',
      }),
    ).toBe(2);
    expect(total(text, 'litellm_requests_metric_total')).toBe(4);
    expect(text).not.toContain('u-2');
    // Key C is past the bound in the per-call metrics (its budget gauges are bounded apart, at 10,000 scopes).
    expect(total(text, 'litellm_requests_metric_total', { hashed_api_key: c.body.token })).toBe(0);
    expect(
      sample(text, 'litellm_remaining_api_key_budget_metric', { hashed_api_key: c.body.token }),
    ).toBeCloseTo(
      1 - 0.0045, // one call: 1,000 x $2.5e-6 + 200 x $10e-6
      12,
    );
  });

  it('a hook that throws or rejects is logged and never fails the call', async () => {
    const { app, errors, keyA, keyB } = await setup({
      onCall: () => {
        throw new Error('hook bug');
      },
      onRefused: () => Promise.reject(new Error('async hook bug')),
    });
    expect(await chat(app, keyA.key)).toBe(200);
    expect(await chat(app, keyB.key)).toBe(429);
    await app.settled();
    const logs = await admin(app, 'GET', `/spend/logs?api_key=${keyA.token}`);
    expect(logs.body).toHaveLength(1);
    expect(errors.filter((m) => /hook failed/.test(m))).toEqual([
      'onCall hook failed (the call is not affected)',
      'onRefused hook failed (the call is not affected)',
    ]);
  });
});
