/**
 * `pnpm bench`: guarded vs unguarded in the same run, alternating rounds, medians and ratios.
 *
 * 1. HTTP: the Express example's own /v1/chat/completions route (which calls the simulated provider
 *    over HTTP and streams its answer back), guarded by spendGuard() on SQLite vs the same app with
 *    no guard. autocannon, 64 connections, alternating rounds.
 * 2. Core pipeline on SQLite: identify + reserve + meter a JSON response + price + settle, in process.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSpendGuard } from '@spendguard/core';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import autocannon from 'autocannon';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const here = import.meta.dirname;
const execArgv = ['--conditions=spendguard-source', '--import', 'tsx'];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

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

async function httpBench() {
  const sim = await start('simulator-server.ts', {});
  const providerUrl = sim.msg.url as string;
  const guarded = await start('example-server.ts', { LLM_BASE_URL: providerUrl });
  const bare = await start('example-server.ts', { LLM_BASE_URL: providerUrl, BENCH_UNGUARDED: '1' });
  const g = `http://127.0.0.1:${guarded.msg.port}`;
  const u = `http://127.0.0.1:${bare.msg.port}`;

  const adminPost = async (path: string, body: unknown) => {
    const res = await fetch(`${g}${path}`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-bench-master' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<any>;
  };
  await adminPost('/team/new', { team_id: 'bench-team', max_budget: 1_000_000 });
  await adminPost('/user/new', { user_id: 'bench-user', team_id: 'bench-team', max_budget: 1_000_000 });
  const { key } = await adminPost('/key/generate', { user_id: 'bench-user', max_budget: 1_000_000 });

  const body = JSON.stringify({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Write one short sentence about budgets.' }],
    max_tokens: 16,
  });
  const run = (url: string, auth: boolean) =>
    autocannon({
      url: `${url}/v1/chat/completions`,
      method: 'POST',
      connections: CONNECTIONS,
      duration: SECONDS,
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${key}` } : {}) },
      body,
    });

  // Warm both (JIT, tokenizer in the simulator, SQLite pages).
  await run(g, true);
  await run(u, false);
  const results = { guarded: [] as autocannon.Result[], unguarded: [] as autocannon.Result[] };
  for (let i = 0; i < ROUNDS; i++) {
    const order: Array<['guarded' | 'unguarded', string, boolean]> =
      i % 2 === 0
        ? [
            ['unguarded', u, false],
            ['guarded', g, true],
          ]
        : [
            ['guarded', g, true],
            ['unguarded', u, false],
          ];
    for (const [name, url, auth] of order) {
      const r = await run(url, auth);
      if (r.non2xx > 0 || r.errors > 0) throw new Error(`${name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
      results[name].push(r);
      process.stdout.write(
        `  round ${i + 1} ${name.padEnd(9)} ${r.requests.average.toFixed(0)} req/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms\n`,
      );
    }
  }
  const summary = (rs: autocannon.Result[]) => ({
    rps: median(rs.map((r) => r.requests.average)),
    p50: median(rs.map((r) => r.latency.p50)),
    p99: median(rs.map((r) => r.latency.p99)),
  });
  const G = summary(results.guarded);
  const U = summary(results.unguarded);
  const [rssG, rssU] = [await rss(guarded.child), await rss(bare.child)];
  for (const c of [sim.child, guarded.child, bare.child]) c.kill();
  return { G, U, rssG, rssU };
}

async function pipelineBench() {
  const dir = mkdtempSync(join(tmpdir(), 'spendguard-bench-core-'));
  const guard = createSpendGuard({
    storage: sqliteStorage({ path: join(dir, 'core.db') }),
    masterKey: 'sk-bench-master',
  });
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
  await adminCall('/team/new', { team_id: 't', max_budget: 1_000_000 });
  await adminCall('/user/new', { user_id: 'u', team_id: 't', max_budget: 1_000_000 });
  const { key } = await adminCall('/key/generate', { user_id: 'u', max_budget: 1_000_000 });
  const reqBody = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hello there' }],
    max_tokens: 16,
  };
  const bodyBytes = Buffer.byteLength(JSON.stringify(reqBody));
  const response = Buffer.from(
    JSON.stringify({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [
        { index: 0, message: { role: 'assistant', content: 'x'.repeat(3600) }, finish_reason: 'stop' },
      ],
      usage: {
        prompt_tokens: 11,
        completion_tokens: 16,
        total_tokens: 27,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    }),
  );
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
    await call.finish();
  };
  for (let i = 0; i < 2000; i++) await once();
  // One request at a time: the latency one request adds.
  const sequential: number[] = [];
  for (let b = 0; b < 20; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 300; i++) await once();
    sequential.push(Number(process.hrtime.bigint() - t0) / 1000 / 300);
  }
  // 64 requests in flight, as under the HTTP load: the CPU time each request costs the server.
  const concurrent: number[] = [];
  for (let b = 0; b < 20; b++) {
    const t0 = process.hrtime.bigint();
    for (let w = 0; w < 5; w++) await Promise.all(Array.from({ length: 64 }, once));
    concurrent.push(Number(process.hrtime.bigint() - t0) / 1000 / 320);
  }
  await guard.close();
  return { sequential: median(sequential), concurrent: median(concurrent), jsonBytes: response.byteLength };
}

console.log(`spendguard bench: ${cpus().length} x ${cpus()[0]?.model}, Node ${process.version}`);
console.log(
  `HTTP: Express example route, autocannon c=${CONNECTIONS}, ${ROUNDS} alternating rounds of ${SECONDS}s`,
);
const only = process.env.BENCH_ONLY; // 'http' or 'core' to run one part
const http = only === 'core' ? null : await httpBench();
console.log('Core pipeline on SQLite (identify, reserve, meter, price, settle):');
const core = only === 'http' ? null : await pipelineBench();

console.log('\n| measure | unguarded | guarded | guarded/unguarded |');
console.log('|---|---|---|---|');
if (http) {
  const ratio = http.G.rps / http.U.rps;
  console.log(
    `| req/s (median) | ${http.U.rps.toFixed(0)} | ${http.G.rps.toFixed(0)} | ${ratio.toFixed(2)} |`,
  );
  console.log(
    `| p50 latency ms | ${http.U.p50} | ${http.G.p50} | +${(http.G.p50 - http.U.p50).toFixed(1)} ms |`,
  );
  console.log(
    `| p99 latency ms | ${http.U.p99} | ${http.G.p99} | +${(http.G.p99 - http.U.p99).toFixed(1)} ms |`,
  );
  console.log(
    `| server RSS after run | ${(http.rssU / 2 ** 20).toFixed(0)} MiB | ${(http.rssG / 2 ** 20).toFixed(0)} MiB | +${((http.rssG - http.rssU) / 2 ** 20).toFixed(0)} MiB |`,
  );
}
if (core) {
  console.log(
    `| core pipeline on SQLite, ${core.jsonBytes} B JSON response, 1 in flight | | ${core.sequential.toFixed(1)} µs/request | |`,
  );
  console.log(
    `| core pipeline on SQLite, ${core.jsonBytes} B JSON response, 64 in flight | | ${core.concurrent.toFixed(1)} µs/request | |`,
  );
}
if (http)
  console.log(`\nreq/s ratio guarded/unguarded: ${(http.G.rps / http.U.rps).toFixed(2)} (target >= 0.8)`);
if (core)
  console.log(
    `core pipeline: ${core.concurrent.toFixed(1)} µs/request at 64 in flight, ${core.sequential.toFixed(1)} µs one at a time (target <= 50)`,
  );
