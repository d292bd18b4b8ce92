/**
 * The storage write path per call (`BENCH_ONLY=store`, or alone: `node --conditions=spendguard-source
 * --import tsx bench/store-path.ts`): the core pipeline as an adapter drives it on SQLite (admit, tap a
 * JSON response, wait for `beforeLastByte()` as the adapters do before the last byte, then `finish()`),
 * on one key with a large budget (so calls are admitted from an escrow lease), against the same pipeline
 * on the in-memory store. The difference is what the SQLite store costs per call. Rounds alternate
 * between the two guards in one process; the figure is the process's CPU time per call (user + system,
 * every thread: the WAL checkpointer too), which moves far less than wall time on a shared machine.
 * `in flight` is how many calls run at once (1: each call's settlement commits alone, as an HTTP
 * request arriving on its own does).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSpendGuard, MemoryStorage, type SpendGuard, type SpendGuardOptions } from '@spendguard/core';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import { bodyBytes, chatResponse, median, reqBody } from './fixture.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const CALLS = Number(process.env.BENCH_STORE_CALLS ?? 2000);

const response = chatResponse(600);

interface Subject {
  guard: SpendGuard;
  once: () => Promise<void>;
}

async function setup(options: Omit<SpendGuardOptions, 'masterKey'>): Promise<Subject> {
  const guard = createSpendGuard({ masterKey: 'sk-bench-master', ...options });
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
  const { key } = await admin('/key/generate', { user_id: 'bench', team_id: 'bench', max_budget: 1_000_000 });
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
    // As the adapters do: wait for the settlement where it goes before the last byte, then finish.
    const before = call.beforeLastByte();
    if (before) await before;
    void call.finish();
  };
  return { guard, once };
}

/** CPU µs (whole process) and wall µs per call, `inFlight` calls at a time, all settled at the end. */
async function measure(s: Subject, inFlight: number): Promise<{ cpu: number; wall: number }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const loop = async () => {
    for (let i = 0; i < CALLS / inFlight; i++) await s.once();
  };
  await Promise.all(Array.from({ length: inFlight }, loop));
  await s.guard.flush();
  const wall = Number(process.hrtime.bigint() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const n = Math.floor(CALLS / inFlight) * inFlight;
  return { cpu: (c.user + c.system) / n, wall: wall / n };
}

const dir = mkdtempSync(join(tmpdir(), 'spendguard-bench-store-'));
// BENCH_STORE_ONLY=sqlite: one subject only (for a profile); BENCH_STORE_IN_FLIGHT=1,16: the loads.
const only = process.env.BENCH_STORE_ONLY;
const subjects: Array<[string, Subject]> = [];
if (!only || only === 'memory') subjects.push(['memory', await setup({ storage: new MemoryStorage() })]);
if (!only || only === 'sqlite')
  subjects.push(['sqlite', await setup({ storage: sqliteStorage({ path: join(dir, 'a.db') }) })]);
const loads = (process.env.BENCH_STORE_IN_FLIGHT ?? '1,16').split(',').map(Number);
console.log('| in flight | store | CPU µs/call (median) | wall µs/call (median) |');
console.log('|---|---|---|---|');
for (const inFlight of loads) {
  for (const [, s] of subjects) for (let w = 0; w < 2; w++) await measure(s, inFlight);
  const cpu = new Map<string, number[]>();
  const wall = new Map<string, number[]>();
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, s] of subjects) {
      const m = await measure(s, inFlight);
      cpu.set(name, [...(cpu.get(name) ?? []), m.cpu]);
      wall.set(name, [...(wall.get(name) ?? []), m.wall]);
    }
  }
  for (const [name] of subjects) {
    console.log(
      `| ${inFlight} | ${name} | ${median(cpu.get(name)!).toFixed(1)} | ${median(wall.get(name)!).toFixed(1)} |`,
    );
  }
}
for (const [, s] of subjects) await s.guard.close();
