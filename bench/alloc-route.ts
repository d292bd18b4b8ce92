// Memory a request allocates on bench/route-server.ts (the fixed route by default), bare and guarded:
// V8's sampling heap profiler inside each server (objects already collected included: the garbage a
// request leaves is what the garbage collector pays for), over `requests` requests after a warm-up of
// 10,000, as bytes a request, total and by function (the functions whose allocations grew most).
//   node --import tsx bench/alloc-route.ts <express|hono> [requests=10000]
// Environment as route-server.ts (BENCH_ROUTE, BENCH_RESPONSE_IDS, DATABASE_URL, LLM_BASE_URL). Sampled
// every 512 bytes on average, so a function's figure is an estimate; the totals move by about 1 % from
// run to run.
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { benchKey, chatLoad } from './route-load.js';

const [framework = 'hono', requestsArg = '10000'] = process.argv.slice(2);
const requests = Number(requestsArg);

async function sample(guarded: boolean): Promise<Record<string, number>> {
  const child = fork(join(import.meta.dirname, 'route-server.ts'), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_FRAMEWORK: framework, ...(guarded ? {} : { BENCH_UNGUARDED: '1' }) },
    stdio: 'inherit',
  });
  const next = <T>(pick: (m: any) => T | undefined) =>
    new Promise<T>((resolve) => {
      const on = (m: unknown) => {
        const v = pick(m);
        if (v === undefined) return;
        child.off('message', on);
        resolve(v);
      };
      child.on('message', on);
    });
  try {
    const port = await next((m) => m?.port as number | undefined);
    const url = `http://127.0.0.1:${port}`;
    const key = guarded ? await benchKey(url) : null;
    const run = (amount: number) => chatLoad(url, key, amount);
    await run(10_000);
    const started = next((m) => m?.allocStarted as boolean | undefined);
    child.send('alloc-start');
    await started;
    await run(requests);
    const done = next((m) => m?.alloc as Record<string, number> | undefined);
    child.send('alloc-stop');
    return await done;
  } finally {
    child.kill();
  }
}

const bare = await sample(false);
const guarded = await sample(true);
const total = (a: Record<string, number>) => Object.values(a).reduce((x, y) => x + y, 0) / requests;
console.log(
  `\n${framework}, ${requests} requests after 10,000 of warm-up: allocated ${total(bare).toFixed(0)} B/request bare, ${total(guarded).toFixed(0)} guarded, +${(total(guarded) - total(bare)).toFixed(0)}\n`,
);
console.log('Functions whose allocations grew most (B/request):');
const names = new Set([...Object.keys(bare), ...Object.keys(guarded)]);
const grown = [...names]
  .map((k) => [k, ((guarded[k] ?? 0) - (bare[k] ?? 0)) / requests] as const)
  .sort((a, b) => b[1] - a[1])
  .slice(0, 25);
for (const [k, d] of grown)
  console.log(`  ${(d >= 0 ? '+' : '') + d.toFixed(0).padStart(5)}  ${k.slice(0, 140)}`);
