// A/B of two builds of the guard on bench/route-server.ts (the fixed route), in one run: every variant
// in its own process, rounds rotating through them, main-thread CPU per request from /proc (Linux).
//   node --import tsx bench/ab-route.ts <express|hono> <rounds> <requests> <variant>...
// variant: `bare` (unguarded), or `<label>=<checkout>[,NAME:value...]`: the route server of that
// checkout (its packages as built) with those environment variables, e.g. a copy of main built in
// /tmp/base: `node --import tsx bench/ab-route.ts hono 10 3000 bare base=/tmp/base new=$PWD`.
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { BODY, benchKey } from './route-load.js';

const [framework, roundsS, reqS, ...specs] = process.argv.slice(2);
const rounds = Number(roundsS),
  amount = Number(reqS);
const conns = Number(process.env.AB_CONNECTIONS ?? 64);
const route = process.env.BENCH_ROUTE ?? 'fixed';
// CPU time in µs: the main thread's from /proc/<pid>/task/<pid>/schedstat (nanoseconds, where the
// stat file counts 10 ms ticks), all threads' from /proc/<pid>/stat.
const cpu = (pid: number, task = true) => {
  if (task) return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100;
};
type V = {
  label: string;
  child: ChildProcess;
  url: string;
  key: string | null;
  main: number[];
  all: number[];
  rps: number[];
};
const vs: V[] = [];
for (const spec of specs) {
  // Without `=<checkout>`: this checkout.
  const [label0, rest = join(import.meta.dirname, '..')] = spec.split('=');
  const [root, ...envs] = rest.split(',');
  const label = label0!;
  const extra = Object.fromEntries(envs.map((e) => e.split(':')));
  const script = extra.SCRIPT ?? 'bench/route-server.ts';
  const bare = label!.startsWith('bare');
  const child = fork(`${root}/${script}`, {
    execArgv: ['--import', 'tsx', ...(process.env.AB_SRC ? ['--conditions=spendguard-source'] : [])],
    cwd: root,
    env: {
      ...process.env,
      BENCH_FRAMEWORK: framework,
      BENCH_ROUTE: route,
      ...extra,
      ...(bare ? { BENCH_UNGUARDED: '1' } : {}),
    },
    stdio: 'inherit',
  });
  const port: number = await new Promise((r) => child.once('message', (m: any) => r(m.port)));
  const url = `http://127.0.0.1:${port}`;
  const key = bare ? null : await benchKey(url); // BENCH_TEAM_KEY=1: a team's key
  vs.push({ label: label!, child, url, key, main: [], all: [], rps: [] });
}
const run = async (v: V, n: number) => {
  const pid = v.child.pid!;
  const m0 = cpu(pid),
    a0 = cpu(pid, false);
  const r = await autocannon({
    url: `${v.url}/v1/chat/completions`,
    method: 'POST',
    connections: conns,
    amount: n,
    timeout: 30,
    headers: { 'content-type': 'application/json', ...(v.key ? { authorization: `Bearer ${v.key}` } : {}) },
    body: BODY,
  });
  if (r.non2xx || r.errors) throw new Error(`${v.label}: ${r.non2xx} non-2xx ${r.errors} errors`);
  return {
    main: (cpu(pid) - m0) / r.requests.total,
    all: (cpu(pid, false) - a0) / r.requests.total,
    rps: r.requests.total / r.duration,
  };
};
for (const v of vs) await run(v, Math.min(amount, 3000)); // warm-up
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
console.log(`${framework}, ${rounds} rounds x ${amount} requests, c=${conns}, load ${load()}`);
for (let i = 0; i < rounds; i++) {
  const order = vs.map((_, j) => vs[(i + j) % vs.length]!);
  const line: string[] = [];
  for (const v of order) {
    const r = await run(v, amount);
    v.main.push(r.main);
    v.all.push(r.all);
    v.rps.push(r.rps);
    line.push(`${v.label} ${r.main.toFixed(0)}/${r.all.toFixed(0)}`);
  }
  console.log(`  round ${i + 1}: ${line.join('  ')}  (load ${load()})`);
}
const minOf = (xs: number[]) => Math.min(...xs);
const med = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const bare = vs.find((v) => v.label.startsWith('bare'));
for (const v of vs)
  console.log(
    `${v.label.padEnd(10)} main ${med(v.main).toFixed(1)} µs/req  all threads ${med(v.all).toFixed(1)}  min ${minOf(v.main).toFixed(1)}  req/s ${med(v.rps).toFixed(0)}${bare && v !== bare ? `  added main ${(med(v.main) - med(bare.main)).toFixed(1)}  (paired median ${med(v.main.map((x, k) => x - bare.main[k]!)).toFixed(1)})` : ''}`,
  );
for (const v of vs) v.child.kill();
