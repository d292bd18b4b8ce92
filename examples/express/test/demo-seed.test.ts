import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_DEMO_DB } from '../src/demo-environment.js';
import { type RunningDemo, startDemo, stopDemo } from './start-demo.js';

const DAY_MS = 86_400_000;
const KEY_LINE = /\[demo\] a seeded key to call with: (sk-\S+) \(([^)]*)\)\n {2}(curl .*)$/m;

describe('examples/express: pnpm demo --seed', () => {
  const db = join(mkdtempSync(join(tmpdir(), 'spendguard-demo-seed-')), 'demo.db');
  let demo: RunningDemo;
  beforeAll(async () => {
    demo = await startDemo('express', ['--seed=3000'], { SPENDGUARD_DB: db });
  });
  afterAll(() => stopDemo(demo.server));

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

  it('prints a seeded key with budget left and a curl line that works as printed', async () => {
    const [, key, room, curl] = KEY_LINE.exec(demo.output) ?? [];
    expect(key).toBeDefined();
    expect(room).toMatch(/^(\$\d+\.\d\d left on its tightest budget|no cap on its budgets)$/);
    const port = new URL(demo.base).port;
    expect(curl).toBe(
      `curl http://localhost:${port}/v1/chat/completions -H "Authorization: Bearer ${key}" -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'`,
    );
    const client = new OpenAI({ apiKey: key!, baseURL: `${demo.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }], max_tokens: 10 })
      .withResponse();
    expect(data.choices[0]!.message.content).toBeTruthy();
    expect(Number(response.headers.get('x-litellm-response-cost'))).toBeGreaterThan(0);
  });

  it('leaves a store that holds data as it is, says how to replace it, and still names a key', async () => {
    await stopDemo(demo.server);
    demo = await startDemo('express', ['--seed'], { SPENDGUARD_DB: db });
    expect(demo.output).toContain(
      'holds data already: not seeded. To replace what it holds with 100000 fresh calls: pnpm demo --seed --replace',
    );
    expect(demo.output).not.toContain('pnpm seed');
    expect(KEY_LINE.exec(demo.output)?.[1]).toMatch(/^sk-/);
  });

  it('--seed=N --replace replaces what the store holds with N calls', async () => {
    await stopDemo(demo.server);
    demo = await startDemo('express', ['--seed=2000', '--replace'], { SPENDGUARD_DB: db });
    expect(demo.output).toContain('replacing what the store held');
    expect(demo.output).toContain('[demo] seeded 2000 calls');
    expect(KEY_LINE.exec(demo.output)?.[1]).toMatch(/^sk-/);
  });
});

describe('examples: start-up', () => {
  it('a taken port ends the demo with a message that says what to do, not a stack trace', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spendguard-demo-port-'));
    const first = await startDemo('express', [], { SPENDGUARD_DB: join(dir, 'a.db') });
    try {
      const port = new URL(first.base).port;
      for (const name of ['express', 'hono'] as const) {
        const second = startDemo(name, [], { SPENDGUARD_DB: join(dir, `${name}.db`), PORT: port });
        await expect(second).rejects.toThrow(`[demo] port ${port} is taken`);
        await expect(second).rejects.not.toThrow(/EADDRINUSE|\n\s+at /);
      }
    } finally {
      await stopDemo(first.server);
    }
  });

  it('both demos default to one SQLite file, at the repository root', () => {
    expect(DEFAULT_DEMO_DB).toBe(join(import.meta.dirname, '..', '..', '..', 'spendguard.db'));
  });

  it('--replace without --seed is refused before anything is opened', async () => {
    const demo = startDemo('express', ['--replace'], {});
    await expect(demo).rejects.toThrow('--replace goes with --seed');
  });
});
