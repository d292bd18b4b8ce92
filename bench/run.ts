/**
 * `pnpm bench`: guarded vs unguarded in the same run, alternating rounds, medians and ratios.
 *
 * 1. `http`: the Express example's own /v1/chat/completions route (which calls the simulated provider
 *    over HTTP and streams its answer back), guarded by spendGuard() on SQLite vs the same app with
 *    no guard. autocannon, 64 connections, alternating rounds.
 * 2. `pg`: the same route guarded on one Postgres database, with 1 and with 4 guarded instances vs
 *    as many unguarded instances (the 64 connections split over them); the 4 instances all spending
 *    one key (the hottest case: every call locks the same counter rows), then a key each. Postgres: DATABASE_URL, else
 *    postgres://postgres@127.0.0.1:5432/test, else a throwaway server (see tests/multi-instance); the
 *    bench creates its own database there and drops it after.
 * 3. `core`: the core pipeline on SQLite: identify + reserve + meter a JSON response + price + settle,
 *    in process; BENCH_CORE_DB=<file> runs it on an existing store (e.g. one `pnpm seed` filled).
 *
 * 4. `dashboard` (bench/dashboard.ts): the dashboard's Spend, Budgets and Keys requests over 1,000,000 seeded
 *    calls on SQLite and Postgres, median and p95 against 100 ms. Seeds once (a few minutes), then reuses.
 *
 * 0. `route`, `route-pg`, `route-fetch` (bench/route-server.ts): the guard's own cost, as added µs per request
 *    (from the server's main-thread CPU and from req/s) and ratios, on a route that answers a fixed chat
 *    completion itself (no upstream; Express and Hono on SQLite; Express on one Postgres), and on routes
 *    that call the simulated provider themselves through the call's handle and through guard.fetch.
 *
 * 5. `observe` (bench/observe.ts): the core pipeline with `metrics` and `tracing` off vs on, alternating.
 * 6. `store` (bench/store-path.ts): the storage write path per call, SQLite vs the in-memory store, alternating.
 *
 * BENCH_ONLY=route,route-fetch,route-pg,http,hono,pg,core,metering,observe,store,dashboard (any of them) picks parts; BENCH_ROUNDS, BENCH_SECONDS, BENCH_CONNECTIONS,
 * BENCH_PG_ROUNDS, BENCH_REQUESTS (a fixed number of requests per round instead of BENCH_SECONDS) tune them. Defaults take about 3 minutes on 2 cores, after `pnpm build` (the packages are
 * measured as built; see FROM_SOURCE).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSpendGuard } from '@spendguard/core';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import autocannon from 'autocannon';
import { createDatabase, sharedPostgres } from '../tests/multi-instance/test/postgres.js';
import { dashboardBench, dashboardTable } from './dashboard.js';
import { bodyBytes, chatResponse, mainThreadCpuUs, median, reqBody } from './fixture.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const PG_ROUNDS = Number(process.env.BENCH_PG_ROUNDS ?? 3);
// BENCH_REQUESTS: each round sends this many requests instead of running BENCH_SECONDS, so that a
// loaded machine still gives every round the same sample of requests.
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 0);
const PARTS = new Set(
  (process.env.BENCH_ONLY ?? 'route,route-fetch,route-pg,http,hono,pg,core,metering,observe,store,dashboard')
    .split(',')
    .map((p) => p.trim()),
);
const here = import.meta.dirname;
// The children run as this process does: `pnpm bench` measures the built packages (dist, what an app
// installs); `node --conditions=spendguard-source --import tsx bench/run.ts` measures the TypeScript
// sources through tsx instead (its helpers cost the guard a few µs more per request).
const FROM_SOURCE = process.execArgv.includes('--conditions=spendguard-source');
const execArgv = FROM_SOURCE ? ['--conditions=spendguard-source', '--import', 'tsx'] : ['--import', 'tsx'];

function start(script: string, env: Record<string, string>): Promise<{ child: ChildProcess; msg: any }> {
  const child = fork(join(here, script), { execArgv, env: { ...process.env, ...env }, stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('message', (msg) => resolve({ child, msg }));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

function rss(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (m: any) => resolve(m.rss));
    child.send('rss');
  });
}

const BODY = JSON.stringify({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'Write one short sentence about budgets.' }],
  max_tokens: 16,
});

interface Summary {
  rps: number;
  p50: number;
  p99: number;
  /** CPU time the servers' main threads spent per request, µs (Linux: /proc), else NaN. */
  cpu: number;
}

/** A team, a user and a key with budgets far above what the bench spends, made through `guardedUrl`. */
async function benchKey(guardedUrl: string, suffix = ''): Promise<string> {
  const adminPost = async (path: string, body: unknown) => {
    const res = await fetch(`${guardedUrl}${path}`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-bench-master' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<any>;
  };
  await adminPost('/team/new', { team_id: `bench-team${suffix}`, max_budget: 1_000_000 });
  await adminPost('/user/new', {
    user_id: `bench-user${suffix}`,
    team_id: `bench-team${suffix}`,
    max_budget: 1_000_000,
  });
  const { key } = await adminPost('/key/generate', { user_id: `bench-user${suffix}`, max_budget: 1_000_000 });
  return key;
}

/**
 * One load: CONNECTIONS connections split evenly over `urls` for SECONDS (one autocannon per
 * instance, at once): the req/s of all instances added up; latency percentiles of the worst one.
 * `keys`: one for all instances, one per instance, or none (unguarded).
 */
async function load(
  name: string,
  urls: string[],
  keys: string | string[] | null,
  pids: number[] = [],
  amount = REQUESTS,
): Promise<Summary> {
  const cpuBefore = pids.map(mainThreadCpuUs);
  const results = await Promise.all(
    urls.map((url, i) => {
      const key = Array.isArray(keys) ? keys[i] : keys;
      return autocannon({
        url: `${url}/v1/chat/completions`,
        method: 'POST',
        connections: Math.max(1, Math.round(CONNECTIONS / urls.length)),
        ...(amount > 0 ? { amount: Math.round(amount / urls.length) } : { duration: SECONDS }),
        timeout: 30, // seconds: a loaded machine's slow answer is slow, not an error
        headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
        body: BODY,
      });
    }),
  );
  for (const r of results) {
    if (r.non2xx > 0 || r.errors > 0)
      throw new Error(`${name}: ${r.non2xx} non-2xx, ${r.errors} errors (${r.timeouts} timeouts)`);
  }
  const cpuUs = pids.reduce((sum, pid, i) => sum + mainThreadCpuUs(pid) - cpuBefore[i]!, 0);
  const requests = results.reduce((sum, r) => sum + r.requests.total, 0);
  return {
    // A round of BENCH_REQUESTS lasts a second or two: its rate from its count and duration, not
    // from autocannon's per-second samples.
    rps: results.reduce(
      (sum, r) => sum + (amount > 0 ? r.requests.total / r.duration : r.requests.average),
      0,
    ),
    p50: Math.max(...results.map((r) => r.latency.p50)),
    p99: Math.max(...results.map((r) => r.latency.p99)),
    cpu: pids.length > 0 ? cpuUs / requests : Number.NaN,
  };
}

/**
 * Guarded vs unguarded, alternating which goes first, after a warm-up of each (at least 10,000
 * requests with BENCH_REQUESTS: Express's rounds kept getting cheaper for the first ~10,000 as V8
 * optimised its code); medians.
 */
async function compare(
  label: string,
  rounds: number,
  guarded: string[],
  unguarded: string[],
  key: string | string[],
  pids: { guarded: number[]; unguarded: number[] } = { guarded: [], unguarded: [] },
): Promise<{ G: Summary; U: Summary; pairedCpu: number }> {
  const warmUp = REQUESTS > 0 ? Math.max(REQUESTS, 10_000) : 0;
  await load('guarded warm-up', guarded, key, [], warmUp);
  await load('unguarded warm-up', unguarded, null, [], warmUp);
  const results = { guarded: [] as Summary[], unguarded: [] as Summary[] };
  for (let i = 0; i < rounds; i++) {
    const both: Array<['guarded' | 'unguarded', string[], string | string[] | null]> = [
      ['unguarded', unguarded, null],
      ['guarded', guarded, key],
    ];
    for (const [name, urls, auth] of i % 2 === 0 ? both : both.reverse()) {
      const r = await load(name, urls, auth, pids[name]);
      results[name].push(r);
      const cpu = Number.isNaN(r.cpu) ? '' : `  main thread ${r.cpu.toFixed(0)} µs/req`;
      process.stdout.write(
        `  ${label} round ${i + 1} ${name.padEnd(9)} ${r.rps.toFixed(0)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms${cpu}\n`,
      );
    }
  }
  const summary = (rs: Summary[]): Summary => ({
    rps: median(rs.map((r) => r.rps)),
    p50: median(rs.map((r) => r.p50)),
    p99: median(rs.map((r) => r.p99)),
    cpu: median(rs.map((r) => r.cpu)),
  });
  return {
    G: summary(results.guarded),
    U: summary(results.unguarded),
    // The median of each round's guarded minus unguarded CPU: the two run back to back, so a round
    // the whole machine ran slow in moves both (a median of each alone mixes slow and fast rounds).
    pairedCpu: median(results.guarded.map((g, i) => g.cpu - results.unguarded[i]!.cpu)),
  };
}

async function httpBench(framework: 'express' | 'hono' = 'express') {
  const sim = await start('simulator-server.ts', {});
  const providerUrl = sim.msg.url as string;
  const env = { LLM_BASE_URL: providerUrl, BENCH_FRAMEWORK: framework };
  const guarded = await start('example-server.ts', { ...env, DATABASE_URL: '' });
  const bare = await start('example-server.ts', { ...env, BENCH_UNGUARDED: '1' });
  const g = `http://127.0.0.1:${guarded.msg.port}`;
  const u = `http://127.0.0.1:${bare.msg.port}`;
  try {
    const key = await benchKey(g);
    const { G, U } = await compare(`${framework} sqlite`, ROUNDS, [g], [u], key, {
      guarded: [guarded.child.pid!],
      unguarded: [bare.child.pid!],
    });
    const [rssG, rssU] = [await rss(guarded.child), await rss(bare.child)];
    return { G, U, rssG, rssU };
  } finally {
    for (const c of [sim.child, guarded.child, bare.child]) c.kill();
  }
}

/**
 * The guard's own cost on a route with no upstream (or one that calls its provider itself): the same
 * app, bare and guarded, in two processes; BENCH_ROUTE picks the route (bench/route-server.ts).
 */
async function routeBench(
  framework: 'express' | 'hono',
  route: 'fixed' | 'handle' | 'ambient',
  storage: { databaseUrl?: string } = {},
) {
  const sim = route === 'fixed' ? null : await start('simulator-server.ts', {});
  const env = {
    BENCH_FRAMEWORK: framework,
    BENCH_ROUTE: route,
    LLM_BASE_URL: (sim?.msg.url as string | undefined) ?? '',
    DATABASE_URL: storage.databaseUrl ?? '',
  };
  const guarded = await start('route-server.ts', env);
  const bare = await start('route-server.ts', { ...env, BENCH_UNGUARDED: '1', DATABASE_URL: '' });
  const g = `http://127.0.0.1:${guarded.msg.port}`;
  const u = `http://127.0.0.1:${bare.msg.port}`;
  const label = `${framework} ${route}${storage.databaseUrl ? ' postgres' : ' sqlite'}`;
  try {
    const key = await benchKey(g);
    const r = await compare(label, ROUNDS, [g], [u], key, {
      guarded: [guarded.child.pid!],
      unguarded: [bare.child.pid!],
    });
    return { label, ...r };
  } finally {
    for (const c of [sim?.child, guarded.child, bare.child]) c?.kill();
  }
}

async function routePgBench() {
  const server = await sharedPostgres();
  const db = await createDatabase(server);
  try {
    // BENCH_PG_FRAMEWORK=hono: the same route on Hono (Express by default).
    const framework = process.env.BENCH_PG_FRAMEWORK === 'hono' ? 'hono' : 'express';
    return await routeBench(framework, 'fixed', { databaseUrl: db.url });
  } finally {
    await db.drop();
    await server.close();
  }
}

async function pgBench() {
  const server = await sharedPostgres();
  const db = await createDatabase(server);
  const children: ChildProcess[] = [];
  try {
    const sim = await start('simulator-server.ts', {});
    children.push(sim.child);
    const providerUrl = sim.msg.url as string;
    const startAll = (env: Record<string, string>) =>
      Promise.all(
        Array.from({ length: 4 }, async () => {
          const p = await start('example-server.ts', { LLM_BASE_URL: providerUrl, ...env });
          children.push(p.child);
          return `http://127.0.0.1:${p.msg.port}`;
        }),
      );
    const guarded = await startAll({ DATABASE_URL: db.url, SPENDGUARD_DB: '' });
    const unguarded = await startAll({ BENCH_UNGUARDED: '1', DATABASE_URL: '' });
    const key = await benchKey(guarded[0]!);
    const one = await compare('postgres x1', PG_ROUNDS, guarded.slice(0, 1), unguarded.slice(0, 1), key);
    const four = await compare('postgres x4', PG_ROUNDS, guarded, unguarded, key);
    // The same with a key (and user and team) per instance: no counter row shared between instances.
    const keys = await Promise.all(guarded.map((url, i) => benchKey(url, `-${i}`)));
    const spread = await compare('postgres x4, key per instance', PG_ROUNDS, guarded, unguarded, keys);
    return { one, four, spread, kind: server.kind };
  } finally {
    for (const c of children) c.kill();
    await Promise.all(
      children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)),
    );
    await db.drop();
    await server.close();
  }
}

/** Bytes this process has handed to write(2) so far (Linux: /proc/self/io `wchar`), else NaN. */
function bytesWritten(): number {
  try {
    return Number(/wchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
  } catch {
    return Number.NaN;
  }
}

async function pipelineBench() {
  // BENCH_CORE_DB: an existing store (e.g. one `pnpm seed` filled with 1,000,000 calls) instead of an
  // empty file; the bench adds its own team, user and key to it.
  const path =
    process.env.BENCH_CORE_DB ?? join(mkdtempSync(join(tmpdir(), 'spendguard-bench-core-')), 'core.db');
  const guard = createSpendGuard({ storage: sqliteStorage({ path }), masterKey: 'sk-bench-master' });
  const run = `bench-${Date.now()}`;
  const adminCall = async (path: string, body: unknown) => {
    const r = await guard.management.handle({
      method: 'POST',
      path,
      query: new URLSearchParams(),
      header: (n) => (n === 'authorization' ? 'Bearer sk-bench-master' : undefined),
      body: JSON.stringify(body),
    });
    return r!.body as any;
  };
  await adminCall('/team/new', { team_id: run, max_budget: 1_000_000 });
  await adminCall('/user/new', { user_id: run, team_id: run, max_budget: 1_000_000 });
  const { key } = await adminCall('/key/generate', { user_id: run, max_budget: 1_000_000 });
  const response = chatResponse(3600);

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
    const call = out.call;
    call.tap.begin(200, 'application/json');
    call.tap.write(response);
    call.costHeaders();
    call.tap.drain();
    void call.finish(); // as the adapters do: the settlement is written off the request's path
  };
  for (let i = 0; i < 2000; i++) await once();
  await guard.flush();
  // One request at a time (each admitted after the previous one's response is done), every settlement
  // written (flush) before the clock stops: the time one request costs.
  const sequential: number[] = [];
  for (let b = 0; b < 20; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 300; i++) await once();
    await guard.flush();
    sequential.push(Number(process.hrtime.bigint() - t0) / 1000 / 300);
  }
  // 64 requests in flight, as under the HTTP load: the CPU time each request costs the server. The
  // bytes written (the WAL, and the checkpoint thread copying it into the database) move far less
  // from run to run than time does.
  const concurrent: number[] = [];
  const written0 = bytesWritten();
  for (let b = 0; b < 20; b++) {
    const t0 = process.hrtime.bigint();
    for (let w = 0; w < 5; w++) await Promise.all(Array.from({ length: 64 }, once));
    await guard.flush();
    concurrent.push(Number(process.hrtime.bigint() - t0) / 1000 / 320);
  }
  const writtenPerRequest = (bytesWritten() - written0) / (20 * 320);
  await guard.close();
  return {
    sequential: median(sequential),
    concurrent: median(concurrent),
    writtenPerRequest,
    jsonBytes: response.byteLength,
  };
}

console.log(
  `spendguard bench: ${cpus().length} x ${cpus()[0]?.model}, Node ${process.version}, packages ${FROM_SOURCE ? 'from TypeScript sources (tsx)' : 'as built (dist)'}`,
);
console.log(
  `HTTP: Express example route, autocannon c=${CONNECTIONS}, ${ROUNDS} (SQLite) / ${PG_ROUNDS} (Postgres) alternating rounds of ${SECONDS}s`,
);
// The guard's own cost: added µs per request and ratios, on the no-upstream route and on routes that
// call their provider themselves (through the call's handle, and through the ambient guard.fetch).
const routes: Array<Awaited<ReturnType<typeof routeBench>>> = [];
if (PARTS.has('route')) {
  routes.push(await routeBench('express', 'fixed'), await routeBench('hono', 'fixed'));
}
if (PARTS.has('route-pg')) routes.push(await routePgBench());
if (PARTS.has('route-fetch')) {
  for (const framework of ['express', 'hono'] as const) {
    for (const route of ['handle', 'ambient'] as const) routes.push(await routeBench(framework, route));
  }
}
const http = PARTS.has('http') ? await httpBench('express') : null;
const hono = PARTS.has('hono') ? await httpBench('hono') : null;
const pgResult = PARTS.has('pg') ? await pgBench() : null;
if (PARTS.has('core')) console.log('Core pipeline on SQLite (identify, reserve, meter, price, settle):');
const core = PARTS.has('core') ? await pipelineBench() : null;
// Metering alone (tap + parse + usage + price), per 4 KB JSON body and per SSE chunk: bench/metering.ts.
const metering = PARTS.has('metering')
  ? await new Promise<string>((resolve, reject) => {
      const child = fork(join(here, 'metering.ts'), {
        execArgv,
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      });
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
      });
      child.once('exit', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`metering bench exited ${code}`)),
      );
    })
  : null;
// Metrics and tracing on vs off, per guarded call: bench/observe.ts.
const observe = PARTS.has('observe')
  ? await new Promise<string>((resolve, reject) => {
      const child = fork(join(here, 'observe.ts'), { execArgv, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
      });
      child.once('exit', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`observe bench exited ${code}`)),
      );
    })
  : null;
// The storage write path per call, SQLite vs in-memory: bench/store-path.ts.
const store = PARTS.has('store')
  ? await new Promise<string>((resolve, reject) => {
      const child = fork(join(here, 'store-path.ts'), {
        execArgv,
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      });
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
      });
      child.once('exit', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`store-path bench exited ${code}`)),
      );
    })
  : null;
const dashboard = PARTS.has('dashboard') ? await dashboardBench() : null;

console.log('\n| measure | unguarded | guarded | guarded/unguarded |');
console.log('|---|---|---|---|');
const rows = (label: string, r: { G: Summary; U: Summary }) => {
  // With BENCH_REQUESTS a round's rate is its count over autocannon's whole seconds (see the route table).
  if (REQUESTS === 0)
    console.log(
      `| ${label} req/s (median) | ${r.U.rps.toFixed(0)} | ${r.G.rps.toFixed(0)} | ${(r.G.rps / r.U.rps).toFixed(2)} |`,
    );
  console.log(
    `| ${label} p50 latency ms | ${r.U.p50} | ${r.G.p50} | +${(r.G.p50 - r.U.p50).toFixed(1)} ms |`,
  );
  console.log(
    `| ${label} p99 latency ms | ${r.U.p99} | ${r.G.p99} | +${(r.G.p99 - r.U.p99).toFixed(1)} ms |`,
  );
  if (!Number.isNaN(r.G.cpu))
    console.log(
      `| ${label} server main-thread CPU µs/request | ${r.U.cpu.toFixed(0)} | ${r.G.cpu.toFixed(0)} | +${(r.G.cpu - r.U.cpu).toFixed(0)} µs (x${(r.U.cpu / r.G.cpu).toFixed(2)}) |`,
    );
};
for (const r of routes) rows(`${r.label}:`, r);
if (http) {
  rows('SQLite, 1 instance:', http);
  console.log(
    `| server RSS after run | ${(http.rssU / 2 ** 20).toFixed(0)} MiB | ${(http.rssG / 2 ** 20).toFixed(0)} MiB | +${((http.rssG - http.rssU) / 2 ** 20).toFixed(0)} MiB |`,
  );
}
if (hono) rows('Hono, SQLite, 1 instance:', hono);
if (pgResult) {
  rows('Postgres, 1 instance:', pgResult.one);
  rows('Postgres, 4 instances, one key:', pgResult.four);
  rows('Postgres, 4 instances, a key each:', pgResult.spread);
}
if (core) {
  console.log(
    `| core pipeline on SQLite, ${core.jsonBytes} B JSON response, 1 in flight | | ${core.sequential.toFixed(1)} µs/request | |`,
  );
  console.log(
    `| core pipeline on SQLite, ${core.jsonBytes} B JSON response, 64 in flight | | ${core.concurrent.toFixed(1)} µs/request | |`,
  );
  console.log(
    `| the same, bytes written per request (WAL and checkpoints, /proc/self/io) | | ${core.writtenPerRequest.toFixed(0)} B | |`,
  );
}
if (http && REQUESTS === 0)
  console.log(
    `\nreq/s ratio guarded/unguarded, SQLite: ${(http.G.rps / http.U.rps).toFixed(2)} (target >= 0.8)`,
  );
if (hono && REQUESTS === 0)
  console.log(
    `req/s ratio guarded/unguarded, Hono on SQLite: ${(hono.G.rps / hono.U.rps).toFixed(2)} (target >= 0.5)`,
  );
if (pgResult && REQUESTS === 0) {
  for (const [label, r] of [
    ['1 instance', pgResult.one],
    ['4 instances, one key', pgResult.four],
    ['4 instances, a key each', pgResult.spread],
  ] as const) {
    console.log(
      `req/s ratio guarded/unguarded, Postgres (${pgResult.kind}), ${label}: ${(r.G.rps / r.U.rps).toFixed(2)} (target >= 0.6)`,
    );
  }
}
if (routes.length > 0) {
  // The columns of bench/README.md's tables. Issue 19's targets: added CPU <= 15 µs per request on
  // SQLite, <= 25 µs on one Postgres instance, added p99 <= 1 ms.
  const signed = (n: number, digits: number) => `${n >= 0 ? '+' : ''}${n.toFixed(digits)}`;
  console.log(
    '\n| route (bench/route-server.ts) | bare CPU µs/req | guarded CPU µs/req | added (CPU) | added (CPU, paired rounds) | added (from req/s) | req/s bare / guarded = ratio | p99 ms bare / guarded | added p99 ms |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of routes) {
    // With BENCH_REQUESTS autocannon ends each round on its next 1-second tick, whatever the server's
    // speed: the rounds' rates are all about BENCH_REQUESTS a second, so the req/s columns say nothing.
    const fromRate =
      REQUESTS > 0
        ? 'n/a (BENCH_REQUESTS) | n/a (BENCH_REQUESTS)'
        : `${signed(1e6 / r.G.rps - 1e6 / r.U.rps, 1)} µs | ${r.U.rps.toFixed(0)} / ${r.G.rps.toFixed(0)} = ${(r.G.rps / r.U.rps).toFixed(2)}`;
    console.log(
      `| ${r.label} | ${r.U.cpu.toFixed(0)} | ${r.G.cpu.toFixed(0)} | ${signed(r.G.cpu - r.U.cpu, 1)} µs | ${signed(r.pairedCpu, 1)} µs | ${fromRate} | ${r.U.p99} / ${r.G.p99} | ${signed(r.G.p99 - r.U.p99, 1)} |`,
    );
  }
  console.log(
    'targets (issue 19): added CPU <= 15 µs/request on SQLite, <= 25 µs on Postgres (one instance); added p99 <= 1 ms',
  );
}
if (core)
  console.log(
    `core pipeline: ${core.concurrent.toFixed(1)} µs/request at 64 in flight, ${core.sequential.toFixed(1)} µs one at a time (target <= 50)`,
  );
if (metering) console.log(`\nMetering (bench/metering.ts):\n${metering.trim()}`);
if (observe) console.log(`\nObservability (bench/observe.ts):\n${observe.trim()}`);
if (store) console.log(`\nStorage write path (bench/store-path.ts):\n${store.trim()}`);
if (dashboard) console.log(`\nDashboard queries (bench/dashboard.ts):\n${dashboardTable(dashboard)}`);
