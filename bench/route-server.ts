// One app in its own process for `pnpm bench`'s guard-cost rows: POST /v1/chat/completions on Express
// or Hono (BENCH_FRAMEWORK), guarded by spendGuard() or not (BENCH_UNGUARDED=1), answering by
// BENCH_ROUTE:
//   fixed    a fixed chat completion written by the app itself: no upstream, so the guard's own cost shows
//   handle   the route calls its provider (LLM_BASE_URL) itself through the call's own handle
//            (res.locals.spendguard.fetch / c.get('spendguard').fetch); unguarded: plain fetch
//   ambient  the same through guard.fetch, found from the AsyncLocalStorage call context
// Storage: Postgres when DATABASE_URL is set, else a SQLite file of its own.
// BENCH_RESPONSE_IDS=unique: the fixed answer carries a fresh id each time, as a provider's does (the
// spend log indexes it: random keys cost the store more than the default's one repeated id).
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { SpendGuardOptions } from '@spendguard/core';
import { spendGuard as expressGuard } from '@spendguard/express';
import { spendGuard as honoGuard, type SpendGuardEnv } from '@spendguard/hono';
import { pgStorage } from '@spendguard/storage-pg';
import express from 'express';
import { Hono } from 'hono';

const unguarded = process.env.BENCH_UNGUARDED === '1';
const route = process.env.BENCH_ROUTE ?? 'fixed';
const providerBase = process.env.LLM_BASE_URL ?? '';
const databaseUrl = process.env.DATABASE_URL || undefined;
const options: SpendGuardOptions = {
  masterKey: 'sk-bench-master',
  dashboard: { password: 'a-bench-dashboard-password' },
  storage: databaseUrl
    ? pgStorage({ connectionString: databaseUrl })
    : (await import('@spendguard/storage-sqlite')).sqliteStorage({
        path: join(mkdtempSync(join(tmpdir(), 'spendguard-bench-route-')), 'bench.db'),
      }),
};

/** What the `fixed` route answers: a chat completion with its usage, as a provider would. */
const FIXED_BODY = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'gpt-4o-mini-2024-07-18',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Budgets keep spending honest.' },
      finish_reason: 'stop',
    },
  ],
  usage: { prompt_tokens: 14, completion_tokens: 6, total_tokens: 20 },
});
const [FIXED_HEAD, FIXED_TAIL] = FIXED_BODY.split('chatcmpl-bench') as [string, string];
const uniqueIds = process.env.BENCH_RESPONSE_IDS === 'unique';
/** The fixed answer; with unique ids, a fresh 24-character id (as OpenAI's chatcmpl-... ids) each time. */
const fixed = (): string =>
  uniqueIds ? `${FIXED_HEAD}chatcmpl-${randomBytes(12).toString('hex')}${FIXED_TAIL}` : FIXED_BODY;

const upstream = (body: unknown, f: typeof fetch) =>
  f(`${providerBase}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-provider' },
    body: JSON.stringify(body),
  });

const ready = (port: number) => process.send?.({ port });
let guardForClose: { storage(): Promise<unknown> } | null = null;

if (process.env.BENCH_FRAMEWORK === 'hono') {
  const app = new Hono<SpendGuardEnv>();
  const guard = unguarded ? null : honoGuard(options);
  const ambient = guard && route === 'ambient' ? guard.guard.fetch : fetch;
  if (guard) {
    app.route('/', guard.admin);
    app.use('/v1/*', guard);
    guardForClose = guard.guard;
  }
  app.post('/v1/chat/completions', async (c) => {
    const body = await c.req.json();
    if (route === 'fixed') return c.body(fixed(), 200, { 'content-type': 'application/json' });
    const f = route === 'handle' && guard ? c.get('spendguard').fetch : ambient;
    const r = await upstream(body, f);
    return new Response(r.body, { status: r.status, headers: { 'content-type': 'application/json' } });
  });
  await guardForClose?.storage();
  serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => ready(info.port));
} else {
  const app = express();
  const guard = unguarded ? null : expressGuard(options);
  const ambient = guard && route === 'ambient' ? guard.guard.fetch : fetch;
  if (guard) {
    app.use(guard.admin);
    app.use('/v1', guard);
    guardForClose = guard.guard;
  }
  app.post('/v1/chat/completions', express.json(), async (req, res) => {
    if (route === 'fixed') return void res.type('application/json').send(fixed());
    const f = route === 'handle' && guard ? res.locals.spendguard.fetch : ambient;
    const r = await upstream(req.body, f);
    res
      .status(r.status)
      .type('application/json')
      .send(Buffer.from(await r.arrayBuffer()));
  });
  await guardForClose?.storage();
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address();
    ready(typeof address === 'object' && address ? address.port : 0);
  });
}
process.on('message', (m) => {
  if (m === 'rss') process.send?.({ rss: process.memoryUsage().rss });
  if (m === 'alloc-start' || m === 'alloc-stop') void allocationSampling(m);
});

/**
 * For bench/alloc-route.ts: V8's sampling heap profiler over the requests between `alloc-start` and
 * `alloc-stop`, counting objects collected since too (the garbage a request leaves is what it costs), the
 * sampled bytes summed by function (`name file:line`), sent back as `{ alloc }`.
 */
let sampling: import('node:inspector/promises').Session | null = null;
async function allocationSampling(m: 'alloc-start' | 'alloc-stop'): Promise<void> {
  if (m === 'alloc-start') {
    const { Session } = await import('node:inspector/promises');
    sampling = new Session();
    sampling.connect();
    await sampling.post('HeapProfiler.startSampling', {
      samplingInterval: 512,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    } as never);
    process.send?.({ allocStarted: true });
    return;
  }
  const { profile } = await sampling!.post('HeapProfiler.stopSampling');
  sampling!.disconnect();
  const alloc: Record<string, number> = {};
  type Node = (typeof profile)['head'];
  const walk = (n: Node) => {
    const f = n.callFrame;
    const where = `${f.functionName || '(anonymous)'} ${f.url.replace(/^file:\/\/.*?\/(packages|node_modules|bench)\//, '$1/')}:${f.lineNumber + 1}`;
    alloc[where] = (alloc[where] ?? 0) + n.selfSize;
    for (const c of n.children) walk(c);
  };
  walk(profile.head);
  process.send?.({ alloc });
}
// A clean exit on Ctrl-C, so that `node --cpu-prof` writes the server's profile.
process.once('SIGINT', () => process.exit(0));
