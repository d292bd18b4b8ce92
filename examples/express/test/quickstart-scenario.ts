import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

// LiteLLM's cost-tracking quick start, verbatim (for another port, only the port changes).
const QUICKSTART = [
  `curl -X POST http://localhost:4000/team/new -H "Authorization: Bearer sk-master" -d '{"team_alias": "frontend-team", "max_budget": 1000, "budget_duration": "30d"}'`,
  `curl -X POST http://localhost:4000/user/new -H "Authorization: Bearer sk-master" -d '{"user_id": "alice@acme.com", "team_id": "frontend-team", "max_budget": 50}'`,
  `curl -X POST http://localhost:4000/key/generate -H "Authorization: Bearer sk-master" -d '{"user_id": "alice@acme.com", "team_id": "frontend-team", "max_budget": 50}'`,
];

/**
 * The quick-start scenario against an example server started as its own process, as a newcomer
 * would: `name` is the example's folder under examples/. It listens on a free port (`PORT=0`), which
 * its banner names; the snippets are run against that port.
 */
export function describeQuickstart(name: string): void {
  const exampleDir = join(import.meta.dirname, '..', '..', name);
  let BASE = '';
  let quickstart: string[] = [];
  /** The key's spend logs, once `n` of them are written (each call settles after its response). */
  async function logsOnce(key: string, n: number): Promise<any[]> {
    return vi.waitFor(
      async () => {
        const logs = await get(`/spend/logs?api_key=${key}`);
        expect(logs).toHaveLength(n);
        return logs;
      },
      { timeout: 20_000, interval: 20 },
    );
  }
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
            PORT: '0',
            SPENDGUARD_DB: join(dir, 'demo.db'),
            SPENDGUARD_MASTER_KEY: '',
            DATABASE_URL: '',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      // Started once its banner, which names the port it took, is printed.
      const port = await new Promise<string>((resolve, reject) => {
        const read = (d: Buffer) => {
          output += d;
          const listening = /spendguard demo on http:\/\/[^\s:]+:(\d+)/.exec(output);
          if (listening) resolve(listening[1]!);
        };
        server.stdout!.on('data', read);
        server.stderr!.on('data', read);
        server.once('exit', () => reject(new Error(`demo exited: ${output}`)));
      });
      BASE = `http://localhost:${port}`;
      quickstart = QUICKSTART.map((cmd) => cmd.replaceAll('localhost:4000', `localhost:${port}`));
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

      const logs = await logsOnce(key.key, 2);
      expect(logs.map((l: { spend: number }) => l.spend).sort()).toEqual([jsonCost, streamCost].sort());
      expect(logs.map((l: { user: string; team_id: string }) => [l.user, l.team_id])).toEqual([
        ['alice@acme.com', team.team_id],
        ['alice@acme.com', team.team_id],
      ]);
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
          await logsOnce(key.key, 2 + served); // settled before the next call is judged
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
