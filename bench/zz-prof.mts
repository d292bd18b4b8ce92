// scratch: profile one example server under load
import { fork } from 'node:child_process';
import { join } from 'node:path';
import autocannon from 'autocannon';
const here = join(import.meta.dirname);
const execArgv = ['--conditions=spendguard-source', '--import', 'tsx', ...(process.env.PROFDIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFDIR}`, '--cpu-prof-interval=100'] : [])];
const start = (script: string, env: Record<string, string>, argv = ['--conditions=spendguard-source', '--import', 'tsx']) => {
  const child = fork(join(here, script), { execArgv: argv, env: { ...process.env, ...env }, stdio: 'inherit' });
  return new Promise<{ child: any; msg: any }>((resolve) => child.once('message', (msg) => resolve({ child, msg })));
};
const sim = await start('simulator-server.ts', {});
const srv = await start('example-server.ts', { LLM_BASE_URL: sim.msg.url, BENCH_FRAMEWORK: process.env.FW ?? 'express', ...(process.env.UNG ? { BENCH_UNGUARDED: '1' } : {}) }, execArgv);
const url = `http://127.0.0.1:${srv.msg.port}`;
let key = 'none';
if (!process.env.UNG) {
  const post = async (p: string, b: unknown) => (await fetch(url + p, { method: 'POST', headers: { authorization: 'Bearer sk-bench-master' }, body: JSON.stringify(b) })).json() as any;
  await post('/team/new', { team_id: 't', max_budget: 1e6 });
  await post('/user/new', { user_id: 'u', team_id: 't', max_budget: 1e6 });
  key = (await post('/key/generate', { user_id: 'u', max_budget: 1e6 })).key;
}
const BODY = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Write one short sentence about budgets.' }], max_tokens: 16 });
const run = (d: number) => autocannon({ url: `${url}/v1/chat/completions`, method: 'POST', connections: 64, duration: d, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: BODY });
await run(3);
const r = await run(Number(process.env.SECS ?? 8));
console.log('req/s', r.requests.average, 'non2xx', r.non2xx);
srv.child.kill('SIGINT'); sim.child.kill();
await new Promise((res) => srv.child.once('exit', res));
