import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const DAY_MS = 86_400_000;

/** Starts the demo with `args` on a fresh SQLite file; resolves once it listens. */
async function startDemo(args: string[], db: string) {
  const server = spawn(
    process.execPath,
    ['--conditions=spendguard-source', '--import', 'tsx', 'src/server.ts', ...args],
    {
      cwd: join(import.meta.dirname, '..'),
      env: { ...process.env, PORT: '0', SPENDGUARD_DB: db, SPENDGUARD_MASTER_KEY: '', DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const state = { server, output: '' };
  // Started once its banner, which names the port it took, is printed.
  const port = await new Promise<string>((resolve, reject) => {
    const read = (d: Buffer) => {
      state.output += d;
      const listening = /spendguard demo on http:\/\/\S+:(\d+)/.exec(state.output);
      if (listening) resolve(listening[1]!);
    };
    server.stdout!.on('data', read);
    server.stderr!.on('data', read);
    server.once('exit', () => reject(new Error(`demo exited: ${state.output}`)));
  });
  return { ...state, base: `http://127.0.0.1:${port}` };
}

async function stop(server: ChildProcess) {
  if (server.exitCode !== null) return;
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
}

describe('examples/express: pnpm demo --seed', () => {
  const db = join(mkdtempSync(join(tmpdir(), 'spendguard-demo-seed-')), 'demo.db');
  let demo: Awaited<ReturnType<typeof startDemo>>;
  beforeAll(async () => {
    demo = await startDemo(['--seed=3000'], db);
  });
  afterAll(() => stop(demo.server));

  it('seeds the SQLite file before it starts, and its spend shows in the spend report', async () => {
    expect(demo.output).toContain('[demo] seeded 3000 calls, 20 teams, 200 users');
    const today = new Date();
    const day = (d: Date) => d.toISOString().slice(0, 10);
    const res = await fetch(
      `${demo.base}/global/spend/report?start_date=${day(new Date(today.getTime() - 89 * DAY_MS))}&end_date=${day(today)}`,
      { headers: { authorization: 'Bearer sk-master' } },
    );
    expect(res.status).toBe(200);
    const days = (await res.json()) as Array<{ teams: Array<{ total_spend: number }> }>;
    expect(days.length).toBeGreaterThan(80);
    expect(days.flatMap((d) => d.teams).length).toBeGreaterThan(500);
  });

  it('prints a seeded key that the official client can call with', async () => {
    const key = /a seeded key to call with: (sk-\S+)/.exec(demo.output)?.[1];
    expect(key).toMatch(/^sk-[\w-]{20,}$/);
    const client = new OpenAI({ apiKey: key!, baseURL: `${demo.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }], max_tokens: 10 })
      .withResponse();
    expect(data.choices[0]!.message.content).toMatch(/^hello( hello)*$/); // the simulator's answer
    expect(data.usage?.completion_tokens).toBe(10);
    // The usage the simulator reported, at gpt-4o-mini's 1.5e-7 per input and 6e-7 per output token.
    const nano = Math.round(Number(response.headers.get('x-litellm-response-cost')) * 1e9);
    expect(nano).toBe(data.usage!.prompt_tokens * 150 + 10 * 600);
  });

  it('leaves a store that holds data as it is on the next start', async () => {
    // A second process on the same file (SQLite allows it), whatever the other tests did first.
    const second = await startDemo(['--seed'], db);
    try {
      expect(second.output).toContain('the store holds data already: not seeded');
    } finally {
      await stop(second.server);
    }
  });
});
