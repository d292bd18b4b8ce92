import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// LiteLLM's cost-tracking quick start, verbatim (for another port, only the port changes).
const QUICKSTART = [
  `curl -X POST http://localhost:4000/team/new -H "Authorization: Bearer sk-master" -d '{"team_alias": "frontend-team", "max_budget": 1000, "budget_duration": "30d"}'`,
  `curl -X POST http://localhost:4000/user/new -H "Authorization: Bearer sk-master" -d '{"user_id": "alice@acme.com", "team_id": "frontend-team", "max_budget": 50}'`,
  `curl -X POST http://localhost:4000/key/generate -H "Authorization: Bearer sk-master" -d '{"user_id": "alice@acme.com", "max_budget": 50}'`,
];

/**
 * The quick-start scenario against an example server started as its own process, as a newcomer
 * would: `name` is the example's folder under examples/, `port` where it listens.
 */
export function describeQuickstart(name: string, port: number): void {
  const exampleDir = join(import.meta.dirname, '..', '..', name);
  const BASE = `http://localhost:${port}`;
  const quickstart = QUICKSTART.map((cmd) => cmd.replaceAll('localhost:4000', `localhost:${port}`));
  async function get(path: string): Promise<any> {
    const res = await fetch(`${BASE}${path}`, { headers: { authorization: 'Bearer sk-master' } });
    expect(res.status).toBe(200);
    return res.json();
  }

  describe(`examples/${name}: the LiteLLM quick start against the running demo`, () => {
    let server: ChildProcess;
    let output = '';

    beforeAll(async () => {
      const dir = mkdtempSync(join(tmpdir(), `spendguard-example-${name}-`));
      server = spawn(
        process.execPath,
        ['--conditions=spendguard-source', '--import', 'tsx', 'src/server.ts'],
        {
          cwd: exampleDir,
          env: {
            ...process.env,
            PORT: String(port),
            SPENDGUARD_DB: join(dir, 'demo.db'),
            SPENDGUARD_MASTER_KEY: '',
            DATABASE_URL: '',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      server.stdout!.on('data', (d) => {
        output += d;
      });
      server.stderr!.on('data', (d) => {
        output += d;
      });
      const deadline = Date.now() + 30_000;
      while (!output.includes('spendguard demo on')) {
        if (server.exitCode !== null) throw new Error(`demo exited: ${output}`);
        if (Date.now() > deadline) throw new Error(`demo did not start: ${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    });

    afterAll(async () => {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    });

    it('warns that it runs with the demo master key', () => {
      expect(output).toContain('using the demo master key "sk-master"');
    });

    it('runs the curl snippets unchanged, then meters, attributes and caps calls', async () => {
      const [team, user, key] = quickstart.map((cmd) =>
        JSON.parse(execFileSync('bash', ['-c', cmd], { encoding: 'utf8' })),
      );
      expect(team).toMatchObject({ team_alias: 'frontend-team', max_budget: 1000, budget_duration: '30d' });
      expect(user).toMatchObject({ user_id: 'alice@acme.com', teams: [team.team_id], max_budget: 50 });
      expect(key).toMatchObject({ user_id: 'alice@acme.com', team_id: team.team_id, max_budget: 50 });

      const client = new OpenAI({ apiKey: key.key, baseURL: `${BASE}/v1`, maxRetries: 0 });
      const { data, response } = await client.chat.completions
        .create({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'Hello from the quick start' }],
          max_tokens: 30,
          // @ts-expect-error LiteLLM's tags field
          tags: ['feature:onboarding'],
        })
        .withResponse();
      const jsonCost =
        Math.round((data.usage!.prompt_tokens * 2.5e-6 + data.usage!.completion_tokens * 1e-5) * 1e9) / 1e9;
      expect(Number(response.headers.get('x-litellm-response-cost'))).toBe(jsonCost);

      const stream = await client.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'And a stream' }],
        max_tokens: 20,
        stream: true,
        stream_options: { include_usage: true },
        tags: ['feature:onboarding'], // LiteLLM's tags field, not in OpenAI's types
      } as OpenAI.ChatCompletionCreateParamsStreaming);
      let streamUsage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) if (chunk.usage) streamUsage = chunk.usage;
      const streamCost = Math.round((streamUsage!.prompt_tokens * 2.5e-6 + 20 * 1e-5) * 1e9) / 1e9;
      await new Promise((r) => setTimeout(r, 100));

      const logs = await get(`/spend/logs?api_key=${key.key}`);
      expect(logs.map((l: { spend: number }) => l.spend).sort()).toEqual([jsonCost, streamCost].sort());
      expect(
        logs.every(
          (l: { user: string; team_id: string }) => l.user === 'alice@acme.com' && l.team_id === team.team_id,
        ),
      ).toBe(true);
      const tags = await get('/spend/tags');
      const onboarding = tags.find(
        (t: { individual_request_tag: string }) => t.individual_request_tag === 'feature:onboarding',
      );
      expect(onboarding.log_count).toBe(2);
      expect(onboarding.total_spend).toBeCloseTo(jsonCost + streamCost, 9);

      // Spend the $50: o1 at 100k output tokens has a worst case of ~$6 a call: eight whole calls, then
      // one with its output cap lowered to what is left, then refusals.
      let served = 0;
      let lowered: string | null = null;
      let refusal: any = null;
      for (let i = 0; i < 20 && !refusal; i++) {
        const res = await fetch(`${BASE}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'o1',
            messages: [{ role: 'user', content: 'spend' }],
            max_tokens: 100_000,
          }),
        });
        if (res.status === 200) {
          await res.arrayBuffer();
          served++;
          lowered = res.headers.get('x-spendguard-output-tokens-lowered');
          await new Promise((r) => setTimeout(r, 20));
        } else {
          expect(res.status).toBe(429);
          refusal = await res.json();
        }
      }
      expect(served).toBe(9);
      expect(Number(lowered)).toBeGreaterThan(256);
      expect(Number(lowered)).toBeLessThan(100_000);
      expect(refusal).toMatchObject({ error: { type: 'budget_exceeded', param: null, code: '429' } });
      expect(refusal.error.message).toMatch(
        /^Budget has been exceeded! (Key=sk-\.\.\.[\w-]{4}|User=alice@acme\.com) Current cost: 49\.9\d+, Max budget: 50\.0\. In flight: /,
      );
      const again = await fetch(`${BASE}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}` },
        body: JSON.stringify({
          model: 'o1',
          messages: [{ role: 'user', content: 'more' }],
          max_tokens: 100_000,
        }),
      });
      expect(again.status).toBe(429);

      const info = await get(`/key/info?key=${key.key}`);
      expect(info.info.spend).toBeGreaterThan(49.9);
      expect(info.info.spend).toBeLessThanOrEqual(50);
      const userInfo = await get('/user/info?user_id=alice@acme.com');
      expect(userInfo.user_info.spend).toBeLessThanOrEqual(50);
      const allLogs = await get(`/spend/logs?api_key=${key.token}`);
      expect(allLogs).toHaveLength(11);
      expect(allLogs.reduce((s: number, l: { spend: number }) => s + l.spend, 0)).toBeCloseTo(
        info.info.spend,
        9,
      );
    });
  });
}
