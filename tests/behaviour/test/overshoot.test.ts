/**
 * Ordinary traffic against a small strict cap ends at or under the cap: image parts, 44 KB of tool
 * definitions, audio, PDFs, in the OpenAI chat, OpenAI Responses and Anthropic formats. The simulator
 * bills each part by the provider's published rules with its own code (docs/simulator.md), so what
 * the key spends is what a provider would have billed, not the guard's estimate. Before the worst case
 * counted those parts, 50 such calls on a $0.05 key spent up to 32 times the cap.
 *
 * Each case runs on one instance (SQLite) and on two instances sharing one Postgres schema, the 50
 * calls split between them.
 */
import { pgStorage } from '@spendguard/storage-pg';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EmptySchemas } from '../../multi-instance/test/empty-schemas.js';
import { sharedPostgres } from '../../multi-instance/test/postgres.js';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// DATABASE_URL or the local server, else a throwaway one; in CI a missing server fails, never skips.
const server = await sharedPostgres();
const url = server.url;
const pool = new pg.Pool({ connectionString: url, max: 2 });
// The Postgres cases each need an empty store, not a new schema: one migrated schema, emptied after each.
const empty = new EmptySchemas(pool, 'sg_over_');
const schemas: string[] = [];
afterAll(async () => {
  await empty.dropAll();
  await pool.end();
  await server.close();
});

const CAP = 0.05;
const CALLS = 50;

/** A PNG whose header says `width` x `height`. */
function png(width: number, height: number): string {
  const bytes = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(bytes, 0);
  bytes.writeUInt32BE(13, 8);
  bytes.write('IHDR', 12, 'latin1');
  bytes.writeUInt32BE(width, 16);
  bytes.writeUInt32BE(height, 20);
  bytes[24] = 8;
  bytes[25] = 2;
  return bytes.toString('base64');
}

/** A 16 kHz 16-bit mono WAV of `seconds`. */
function wav(seconds: number): string {
  const data = 32_000 * seconds;
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + data, 4);
  h.write('WAVEfmt ', 8, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(16_000, 24);
  h.writeUInt32LE(32_000, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(data, 40);
  return Buffer.concat([h, Buffer.alloc(data)]).toString('base64');
}

function pdf(pages: number): string {
  const objects = Array.from(
    { length: pages },
    (_, i) => `${i + 3} 0 obj << /Type /Page /Parent 2 0 R >> endobj`,
  );
  return Buffer.from(
    `%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Count ${pages} >> endobj\n${objects.join('\n')}\n%%EOF`,
  ).toString('base64');
}

/** About 44 KB of function definitions (40 tools with long descriptions and 8 parameters each). */
function tools(): Array<Record<string, unknown>> {
  return Array.from({ length: 40 }, (_, i) => ({
    type: 'function',
    function: {
      name: `lookup_record_${i}`,
      description: `Looks up record kind ${i} in the inventory system and returns its current state. `.repeat(
        4,
      ),
      parameters: {
        type: 'object',
        properties: Object.fromEntries(
          Array.from({ length: 8 }, (_, j) => [
            `field_${j}`,
            { type: 'string', description: `The value of field ${j} to match, exactly as stored.` },
          ]),
        ),
      },
    },
  }));
}

interface Case {
  name: string;
  path: string;
  body: Record<string, unknown>;
  /** The key's cap when a call's worst case is larger than {@link CAP} (a web search call). */
  cap?: number;
}

const image = (detail: 'high' | 'low') => ({
  type: 'image_url',
  image_url: { url: 'https://images.example.com/photo.png', detail },
});

const CASES: Case[] = [
  {
    // Each call: 10 high-detail images of 1024x1024 (the simulator's size for a URL) = 10 x 765 tokens.
    name: 'OpenAI chat with 10 high-detail images',
    path: '/v1/chat/completions',
    body: {
      model: 'gpt-4o',
      max_tokens: 100,
      messages: [
        {
          role: 'user',
          content: [{ type: 'text', text: 'compare' }, ...Array.from({ length: 10 }, () => image('high'))],
        },
      ],
    },
  },
  {
    name: 'OpenAI chat with 44 KB of tool definitions',
    path: '/v1/chat/completions',
    body: {
      model: 'gpt-4o',
      max_tokens: 100,
      tools: tools(),
      messages: [{ role: 'user', content: 'find it' }],
    },
  },
  {
    name: 'OpenAI chat with 20 s of audio and a 4-page PDF',
    path: '/v1/chat/completions',
    body: {
      model: 'gpt-4o-audio-preview',
      max_tokens: 100,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'input_audio', input_audio: { data: wav(20), format: 'wav' } },
            { type: 'file', file: { filename: 'r.pdf', file_data: `data:application/pdf;base64,${pdf(4)}` } },
          ],
        },
      ],
    },
  },
  {
    name: 'OpenAI Responses with images and tools',
    path: '/v1/responses',
    body: {
      model: 'gpt-4o',
      max_output_tokens: 100,
      tools: tools()
        .slice(0, 10)
        .map((t) => ({ type: 'function', ...(t.function as object) })),
      input: [
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'compare' },
            ...Array.from({ length: 6 }, () => ({
              type: 'input_image',
              image_url: `data:image/png;base64,${png(2048, 2048)}`,
            })),
          ],
        },
      ],
    },
  },
  {
    // Claude: 1000x1000 images at 1,334 tokens each, tools with the tool-use system prompt.
    name: 'Anthropic messages with images and tools',
    path: '/v1/messages',
    body: {
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      tools: [
        ...tools()
          .slice(0, 5)
          .map((t) => {
            const f = t.function as { name: string; description: string; parameters: unknown };
            return { name: f.name, description: f.description, input_schema: f.parameters };
          }),
      ],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'compare' },
            ...Array.from({ length: 4 }, () => ({
              type: 'image',
              source: { type: 'base64', media_type: 'image/png', data: png(1000, 1000) },
            })),
          ],
        },
      ],
    },
  },
  {
    // A search is $0.01 and its results are input: the bound takes 10,000 tokens of them per search.
    name: 'Anthropic messages with web search',
    path: '/v1/messages',
    body: {
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 1 }],
      messages: [{ role: 'user', content: 'what happened today?' }],
    },
  },
  {
    // OpenAI's Responses web search: the simulator runs max_tool_calls (3) searches, $0.01 each on
    // gpt-4.1 plus 2,000 input tokens of results; the bound takes $0.025 and 10,000 tokens each.
    name: 'OpenAI Responses with the web_search tool',
    path: '/v1/responses',
    cap: 0.5,
    body: {
      model: 'gpt-4.1',
      max_output_tokens: 100,
      max_tool_calls: 3,
      tools: [{ type: 'web_search' }],
      input: 'what happened today?',
    },
  },
  {
    // A chat search model searches once a call: $0.05 at the high context size.
    name: 'OpenAI chat with a search model',
    path: '/v1/chat/completions',
    cap: 0.5,
    body: {
      model: 'gpt-4o-search-preview',
      max_completion_tokens: 100,
      web_search_options: { search_context_size: 'high' },
      messages: [{ role: 'user', content: 'what happened today?' }],
    },
  },
];

interface Outcome {
  status: number;
  cost: number;
}

async function send(app: TestApp, key: string, c: Case): Promise<Outcome> {
  const res = await fetch(`${app.baseUrl}${c.path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(c.body),
  });
  const body = await res.json();
  if (res.status !== 200 && res.status !== 429) throw new Error(`${res.status}: ${JSON.stringify(body)}`);
  if (res.status === 429) expect(body.error.type).toBe('budget_exceeded');
  return { status: res.status, cost: Number(res.headers.get('x-litellm-response-cost') ?? 0) };
}

/** 50 calls at once over the apps, then what the key spent against what was answered. */
async function spend(apps: TestApp[], c: Case): Promise<void> {
  const cap = c.cap ?? CAP;
  const key = (await admin(apps[0]!, 'POST', '/key/generate', { max_budget: cap })).body.key as string;
  const outcomes = await Promise.all(
    Array.from({ length: CALLS }, (_, i) => send(apps[i % apps.length]!, key, c)),
  );
  const served = outcomes.filter((o) => o.status === 200);
  for (const app of apps) await app.guard.flush();
  const info = (await admin(apps[0]!, 'GET', `/key/info?key=${key}`)).body.info;
  expect(served.length, 'some calls fit').toBeGreaterThan(0);
  expect(served.length, 'not every call fits').toBeLessThan(CALLS);
  expect(info.spend).toBeCloseTo(
    served.reduce((s, o) => s + o.cost, 0),
    9,
  );
  expect(info.spend, 'spend <= cap').toBeLessThanOrEqual(cap);
}

describe.each(ADAPTERS)('no overshoot on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
    for (const name of schemas.splice(0)) await empty.giveBack(name);
  });

  it.each(CASES)(
    '$name: one instance on SQLite',
    async (c) => {
      apps.push(
        await startTestApp(framework, {
          simulator: { latencyMs: 20 },
          guardOptions: { storageTimeoutMs: 10_000 },
        }),
      );
      await spend(apps, c);
    },
    60_000,
  );

  it.each(CASES)(
    '$name: two instances on one Postgres',
    async (c) => {
      const schema = empty.take();
      schemas.push(schema);
      for (let i = 0; i < 2; i++) {
        apps.push(
          await startTestApp(framework, {
            simulator: { latencyMs: 20 },
            storage: pgStorage({ connectionString: url, schema }),
            // About budgets, not timeouts: a storage call slowed by a loaded machine must not be a 503.
            guardOptions: { storageTimeoutMs: 10_000 },
          }),
        );
      }
      await spend(apps, c);
    },
    60_000,
  );
});
