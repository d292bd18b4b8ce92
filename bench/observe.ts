/**
 * The cost of observability per guarded call (`BENCH_ONLY=observe`): the core pipeline (identify,
 * reserve, meter a JSON response, price, settle) with `metrics` and `tracing` off vs on, in process on
 * the in-memory store (so storage's noise does not drown a few µs), alternating rounds, medians.
 * Tracing is measured through `@opentelemetry/api` with no SDK registered (what an app without one
 * pays) and, when `@opentelemetry/sdk-trace-base` resolves, also with an SDK recording every span.
 * Prints one Markdown table.
 */
import { createSpendGuard, MemoryStorage, type SpendGuard } from '@spendguard/core';
import { bodyBytes, chatResponse, median, reqBody } from './fixture.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5) * 2;
const CALLS = 3000;

const response = chatResponse(600);

async function setup(observe: boolean): Promise<{ guard: SpendGuard; once: () => Promise<void> }> {
  const guard = createSpendGuard({
    storage: new MemoryStorage(),
    masterKey: 'sk-bench-master',
    metrics: observe,
    tracing: observe,
  });
  const admin = async (path: string, body: unknown) =>
    (await guard.management.handle({
      method: 'POST',
      path,
      query: new URLSearchParams(),
      header: (n) => (n === 'authorization' ? 'Bearer sk-bench-master' : undefined),
      body: JSON.stringify(body),
    }))!.body as any;
  await admin('/team/new', { team_id: 'bench', max_budget: 1_000_000 });
  await admin('/user/new', { user_id: 'bench', team_id: 'bench', max_budget: 1_000_000 });
  const { key } = await admin('/key/generate', { user_id: 'bench', max_budget: 1_000_000 });
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  const input = {
    method: 'POST',
    path: '/chat/completions',
    header: (n: string) => headers[n],
    body: reqBody,
    bodyBytes,
  };
  const once = async () => {
    const out = await guard.admit(input);
    if (!out.ok) throw new Error(JSON.stringify(out.response.body));
    out.call.tap.begin(200, 'application/json');
    out.call.tap.write(response);
    out.call.costHeaders();
    out.call.tap.drain();
    void out.call.finish();
  };
  if (observe) await guard.metrics.registry(); // prom-client loaded before the clock runs
  return { guard, once };
}

/** µs per call, 64 in flight, every settlement (and its events) done before the clock stops. */
async function measure(once: () => Promise<void>, guard: SpendGuard): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS / 64; i++) await Promise.all(Array.from({ length: 64 }, once));
  await guard.flush();
  return Number(process.hrtime.bigint() - t0) / 1000 / (Math.floor(CALLS / 64) * 64);
}

async function compare(label: string): Promise<string> {
  const off = await setup(false);
  const on = await setup(true);
  for (let i = 0; i < 3; i++) {
    await measure(off.once, off.guard);
    await measure(on.once, on.guard);
  }
  const offs: number[] = [];
  const ons: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    offs.push(await measure(off.once, off.guard));
    ons.push(await measure(on.once, on.guard));
  }
  const scrape = process.hrtime.bigint();
  const body = (await on.guard.metrics.scrape()).body;
  const scrapeMs = Number(process.hrtime.bigint() - scrape) / 1e6;
  await off.guard.close();
  await on.guard.close();
  const a = median(offs);
  const b = median(ons);
  return `| ${label} | ${a.toFixed(1)} µs | ${b.toFixed(1)} µs | +${(b - a).toFixed(1)} µs (x${(b / a).toFixed(2)}) | ${scrapeMs.toFixed(1)} ms, ${(body.length / 1024).toFixed(0)} KiB |`;
}

console.log(
  '| core pipeline, in-memory store, 64 in flight | off | metrics + tracing on | cost | one scrape |',
);
console.log('|---|---|---|---|---|');
console.log(await compare('OpenTelemetry API, no SDK'));
let sdk: typeof import('@opentelemetry/sdk-trace-base') | null = null;
try {
  sdk = await import('@opentelemetry/sdk-trace-base');
} catch {}
if (sdk) {
  const { trace } = await import('@opentelemetry/api');
  const exporter = new sdk.InMemorySpanExporter();
  trace.setGlobalTracerProvider(
    new sdk.BasicTracerProvider({ spanProcessors: [new sdk.SimpleSpanProcessor(exporter)] }),
  );
  // Spans are kept in memory: drop them between rounds so memory does not grow through the run.
  const timer = setInterval(() => exporter.reset(), 50);
  console.log(await compare('OpenTelemetry SDK, every span recorded (in memory)'));
  clearInterval(timer);
}
