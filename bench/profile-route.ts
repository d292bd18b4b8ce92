// Where the guard's added CPU goes, by on-CPU samples of the route server's main thread (Linux `perf`):
// bench/route-server.ts bare and guarded, one after the other, each warmed up with 10,000 requests and
// then sampled over `requests` more; prints the CPU per request by category (JS of the core, adapter
// and store; SQLite's native code; V8's garbage collector, inline caches and builtins; the kernel) and
// the symbols whose time grew most.
//   node --import tsx bench/profile-route.ts <express|hono> [requests=30000]
// Environment as route-server.ts (BENCH_ROUTE, BENCH_RESPONSE_IDS, DATABASE_URL, LLM_BASE_URL);
// PROFILE_CALLERS=1 records call stacks too and adds the guarded time by spendguard function.
// Needs `perf` (Debian: apt-get install linux-perf) and perf_event_paranoid <= 1 (or root).
//
// Why not `node --cpu-prof`: V8's profiler samples the thread at wall-clock intervals, whether or not
// it is running, so a thread preempted by the load generator or a store's own threads has that time
// charged to whatever function it was in (the socket write above all); on these 2 vCPUs that made the
// guarded server's profile up to twice its CPU. `perf -e cpu-clock` counts only time on a CPU.
// Optimised JavaScript shows by name (`--perf-basic-prof`); code still interpreted shows as V8 builtins.
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchKey, chatLoad } from './route-load.js';

const [framework = 'hono', requestsArg = '30000'] = process.argv.slice(2);
const requests = Number(requestsArg);
const HZ = 2999;
/** PROFILE_CALLERS=1: call stacks too, and the guarded server's time by the guard's innermost function. */
const callers = process.env.PROFILE_CALLERS === '1';
const byCaller: { guarded: Map<string, number> | null } = { guarded: null };

try {
  execFileSync('perf', ['--version'], { stdio: 'ignore' });
} catch {
  console.error('bench/profile-route.ts needs Linux perf (Debian: apt-get install linux-perf).');
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), 'spendguard-profile-'));

async function profile(guarded: boolean): Promise<Map<string, number>> {
  const child = fork(join(import.meta.dirname, 'route-server.ts'), {
    execArgv: ['--import', 'tsx', '--perf-basic-prof'],
    env: { ...process.env, BENCH_FRAMEWORK: framework, ...(guarded ? {} : { BENCH_UNGUARDED: '1' }) },
    stdio: 'inherit',
  });
  try {
    const port: number = await new Promise((r) => child.once('message', (m: { port: number }) => r(m.port)));
    const url = `http://127.0.0.1:${port}`;
    const key = guarded ? await benchKey(url) : null;
    const run = (amount: number) => chatLoad(url, key, amount);
    await run(10_000); // warm-up: V8 optimises the hot code over the first ~10,000 requests
    const data = join(dir, guarded ? 'guarded.data' : 'bare.data');
    const perf = spawn(
      'perf',
      [
        'record',
        ...(callers ? ['-g'] : []),
        '-F',
        String(HZ),
        '-e',
        'cpu-clock',
        '-t',
        String(child.pid),
        '-o',
        data,
      ],
      {
        stdio: 'ignore',
      },
    );
    await new Promise((r) => setTimeout(r, 300)); // perf attached
    await run(requests);
    perf.kill('SIGINT');
    await new Promise((r) => perf.once('exit', r));
    const report = execFileSync(
      'perf',
      [
        'report',
        '-i',
        data,
        '--no-children',
        '--sort',
        'sym',
        '-n',
        '-q',
        ...(callers ? ['-g', 'none'] : []),
      ],
      {
        encoding: 'utf8',
        maxBuffer: 256 * 1024 * 1024,
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    if (callers && guarded) byCaller.guarded = byGuardFunction(data);
    const bySymbol = new Map<string, number>();
    for (const line of report.split('\n')) {
      const m = /^\s*[\d.]+%\s+(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const name = m[2]!
        .replace(/0x[0-9a-f]+/g, '')
        .replace(/\s+/g, ' ')
        .trim();
      bySymbol.set(name, (bySymbol.get(name) ?? 0) + Number(m[1]));
    }
    return bySymbol;
  } finally {
    child.kill();
  }
}

/**
 * Samples by the innermost function of spendguard's packages on their stack (what that function and the
 * code it calls outside spendguard cost: Node, V8, SQLite, the kernel), or outside any of them.
 */
function byGuardFunction(data: string): Map<string, number> {
  const script = execFileSync('perf', ['script', '-i', data, '-F', 'ip,sym'], {
    encoding: 'utf8',
    maxBuffer: 1024 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const out = new Map<string, number>();
  for (const sample of script.split(/\n\s*\n/)) {
    if (!sample.trim()) continue;
    const frame = /JS:\S* \S*\/packages\/[^\n]*/.exec(sample)?.[0];
    const name = frame
      ? frame
          .replace(/\+0x[0-9a-f]+$/, '')
          .replace(/file:\/\/\S*?\/packages\//, '')
          .trim()
      : '(no spendguard function on the stack)';
    out.set(name, (out.get(name) ?? 0) + 1);
  }
  return out;
}

function category(name: string): string {
  if (name.includes('JS:')) {
    if (name.includes('packages/core')) return 'JS: spendguard core';
    if (/express-adapter|hono-adapter/.test(name)) return 'JS: spendguard adapter';
    if (/storage-sqlite|storage-pg|better-sqlite3|node_modules\/.*\/pg/.test(name))
      return 'JS: store and driver';
    if (name.includes('node:')) return 'JS: node internals';
    return 'JS: framework and app';
  }
  if (/sqlite3|wal[A-Z]|[Bb]tree|Vdbe|[Pp]ager|pcache|better_sqlite/.test(name)) return 'SQLite native';
  if (/Scaveng|Heap::|Mark|Sweep|GC|Evacuat|Minor/.test(name)) return 'V8 garbage collector';
  if (name.startsWith('[k]')) return 'kernel';
  if (/IC\b|IC_|Lookup|StubCache|Transition|Map::|Runtime_|CallOptimization|Handler/.test(name))
    return 'V8 inline caches and runtime';
  if (name.includes('Builtins_')) return 'V8 builtins and interpreter';
  if (/memmove|memcpy|malloc|free|libc/.test(name)) return 'libc';
  return 'other native (V8, Node)';
}

const bare = await profile(false);
const guarded = await profile(true);
rmSync(dir, { recursive: true, force: true });
const usPerSample = 1e6 / HZ / requests;
const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0) * usPerSample;
console.log(
  `\n${framework}, ${requests} requests sampled after 10,000 of warm-up: main thread on-CPU ${sum(bare).toFixed(1)} µs/req bare, ${sum(guarded).toFixed(1)} guarded, +${(sum(guarded) - sum(bare)).toFixed(1)}\n`,
);
const byCategory = (m: Map<string, number>) => {
  const out = new Map<string, number>();
  for (const [name, n] of m) out.set(category(name), (out.get(category(name)) ?? 0) + n * usPerSample);
  return out;
};
const cb = byCategory(bare);
const cg = byCategory(guarded);
console.log('| category | bare µs/req | guarded µs/req | added |');
console.log('|---|---|---|---|');
for (const c of [...new Set([...cb.keys(), ...cg.keys()])].sort(
  (a, b) => (cg.get(b) ?? 0) - (cb.get(b) ?? 0) - ((cg.get(a) ?? 0) - (cb.get(a) ?? 0)),
)) {
  const x = cb.get(c) ?? 0;
  const y = cg.get(c) ?? 0;
  console.log(
    `| ${c} | ${x.toFixed(1)} | ${y.toFixed(1)} | ${(y - x >= 0 ? '+' : '') + (y - x).toFixed(1)} |`,
  );
}
console.log('\nSymbols whose time grew most (µs/req):');
const grown = [...new Set([...bare.keys(), ...guarded.keys()])]
  .map((k) => [k, ((guarded.get(k) ?? 0) - (bare.get(k) ?? 0)) * usPerSample] as const)
  .sort((a, b) => b[1] - a[1])
  .slice(0, 25);
for (const [k, d] of grown) console.log(`  +${d.toFixed(2)}  ${k.slice(0, 140)}`);
if (byCaller.guarded) {
  console.log(
    `\nThe guarded server's ${sum(guarded).toFixed(1)} µs/req by the innermost spendguard function on the stack (with what it calls in Node, V8, SQLite and the kernel); the bare server's whole ${sum(bare).toFixed(1)} µs/req compare with the first line:`,
  );
  for (const [k, n] of [...byCaller.guarded].sort((a, b) => b[1] - a[1]).slice(0, 25))
    console.log(`  ${(n * usPerSample).toFixed(2).padStart(6)}  ${k.slice(0, 140)}`);
}
