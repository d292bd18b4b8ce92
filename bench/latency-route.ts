// Added latency at a fixed request rate: bench/route-server.ts (the fixed route by default) bare and
// guarded, each warmed up with 10,000 requests, then alternating rounds in which requests are sent on a
// schedule (`rate` a second, open loop: each at its time whether or not the ones before have answered,
// over up to 256 keep-alive connections), each request's latency measured from its send to its last byte.
// Prints each round's p50, p99 and max, and the medians with the guarded server's added p50 and p99.
//   node --import tsx bench/latency-route.ts <express|hono> [rate=1000] [seconds=6] [rounds=3]
// Why not `pnpm bench`'s p99: there 64 connections send as fast as the server answers (closed loop), so
// latency is the queue of 64 requests times the time each takes; a guard that doubles a request's CPU
// doubles that p99 whatever its own latency. Below saturation, at a rate both servers sustain, the
// difference is what a request waits for the guard. Environment as route-server.ts.
import { type ChildProcess, fork } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { mainThreadCpuUs, median } from './fixture.js';
import { BODY, benchKey, chatLoad } from './route-load.js';

const [framework = 'hono', rateArg = '1000', secondsArg = '6', roundsArg = '3'] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const rounds = Number(roundsArg);

type Server = {
  name: string;
  child: ChildProcess;
  port: number;
  key: string | null;
  p50: number[];
  p99: number[];
  /** The server main thread's CPU per request of each round, µs (Linux /proc; NaN elsewhere). */
  cpu: number[];
};

async function start(guarded: boolean): Promise<Server> {
  const child = fork(join(import.meta.dirname, 'route-server.ts'), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_FRAMEWORK: framework, ...(guarded ? {} : { BENCH_UNGUARDED: '1' }) },
    stdio: 'inherit',
  });
  const port: number = await new Promise((r) => child.once('message', (m: { port: number }) => r(m.port)));
  const url = `http://127.0.0.1:${port}`;
  const key = guarded ? await benchKey(url) : null;
  await chatLoad(url, key, 10_000);
  return { name: guarded ? 'guarded' : 'bare', child, port, key, p50: [], p99: [], cpu: [] };
}

/**
 * One round at `rate` a second: every request's latency from its send to its last byte, in ms, sorted;
 * and the server main thread's CPU per request over it, µs.
 */
async function round(s: Server): Promise<{ latencies: number[]; cpuUs: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(BODY)),
    ...(s.key ? { authorization: `Bearer ${s.key}` } : {}),
  };
  const post = () =>
    new Promise<number>((resolve, reject) => {
      const sent = performance.now();
      const req = http.request(
        { host: '127.0.0.1', port: s.port, path: '/v1/chat/completions', method: 'POST', agent, headers },
        (res) => {
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
          res.resume();
          res.on('end', () => resolve(performance.now() - sent));
        },
      );
      req.on('error', reject);
      req.end(BODY);
    });
  const cpu0 = mainThreadCpuUs(s.child.pid!);
  const t0 = performance.now();
  const answers: Promise<number>[] = [];
  for (let sent = 0; sent < rate * seconds; sent++) {
    const due = t0 + (sent * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    answers.push(post());
  }
  const latencies = (await Promise.all(answers)).sort((a, b) => a - b);
  const cpuUs = (mainThreadCpuUs(s.child.pid!) - cpu0) / latencies.length;
  agent.destroy();
  return { latencies, cpuUs };
}

const servers = [await start(false), await start(true)];
console.log(`\n${framework}, ${rate} requests a second for ${seconds} s a round, open loop:`);
for (let r = 0; r < rounds; r++) {
  for (const s of r % 2 ? [...servers].reverse() : servers) {
    const { latencies: l, cpuUs } = await round(s);
    s.cpu.push(cpuUs);
    const at = (q: number) => l[Math.min(l.length - 1, Math.floor(l.length * q))]!;
    s.p50.push(at(0.5));
    s.p99.push(at(0.99));
    console.log(
      `  round ${r + 1} ${s.name.padEnd(7)} p50 ${at(0.5).toFixed(2)} ms  p99 ${at(0.99).toFixed(2)} ms  max ${l[l.length - 1]!.toFixed(1)} ms  main thread ${cpuUs.toFixed(0)} µs/req`,
    );
  }
}
const [bare, guarded] = servers as [Server, Server];
console.log(
  `medians: bare p50 ${median(bare.p50).toFixed(2)} / p99 ${median(bare.p99).toFixed(2)} ms, guarded p50 ${median(guarded.p50).toFixed(2)} / p99 ${median(guarded.p99).toFixed(2)} ms; added p50 ${(median(guarded.p50) - median(bare.p50)).toFixed(2)} ms, added p99 ${(median(guarded.p99) - median(bare.p99)).toFixed(2)} ms`,
);
console.log(
  `main thread CPU a request: bare ${median(bare.cpu).toFixed(1)} µs, guarded ${median(guarded.cpu).toFixed(1)} µs, added ${(median(guarded.cpu) - median(bare.cpu)).toFixed(1)} µs (medians of the rounds)`,
);
for (const s of servers) s.child.kill();
