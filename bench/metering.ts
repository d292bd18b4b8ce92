/**
 * `node --conditions=spendguard-source --import tsx bench/metering.ts`: what metering adds, in the core
 * and in process (no HTTP, no storage):
 * 1. a 4 KB JSON chat completion: tap (hold, parse, read usage) + price, per response;
 * 2. SSE streams, per chunk: each wire format, chunks as the provider framed them, with and without
 *    the hidden include_usage chunk, and with events split across chunks.
 * Best and median of 15 rounds (BENCH_ROUNDS); a measurement, not a threshold.
 */
import { createSpendGuard, MemoryStorage } from '@spendguard/core';
import { ResponseTap } from '../packages/core/src/metering/response-meter.js';
import type { WireFormat } from '../packages/core/src/metering/wire-formats.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * µs per unit of `run(n)` over ROUNDS rounds of `n` units (after a warm-up round): the best round (the
 * cost itself) and the median (with whatever else the machine was doing).
 */
function measure(n: number, run: (n: number) => void): { min: number; median: number } {
  run(n);
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t = process.hrtime.bigint();
    run(n);
    rounds.push(Number(process.hrtime.bigint() - t) / 1e3 / n);
  }
  return { min: Math.min(...rounds), median: median(rounds) };
}

const fmt = (m: { min: number; median: number }, digits = 2) =>
  `${m.min.toFixed(digits)} µs (median ${m.median.toFixed(digits)})`;

// 1. A 4 KB JSON chat completion, in the 1-3 chunks a proxy writes it in.
const content = 'hello '.repeat(600);
const json = Buffer.from(
  JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-4o-2024-08-06',
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: 120,
      completion_tokens: 600,
      total_tokens: 720,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
    },
    service_tier: 'default',
    system_fingerprint: 'fp_bench',
  }),
);
const jsonChunks = [json.subarray(0, 1400), json.subarray(1400, 2800), json.subarray(2800)];
const guard = createSpendGuard({ storage: new MemoryStorage() });
guard.prices.resolve('gpt-4o-2024-08-06'); // the price table loads once per process, not per call

const tapOnlyRun = (n: number) => {
  for (let i = 0; i < n; i++) {
    const tap = new ResponseTap(8 << 20);
    tap.hint({ format: 'openai-chat' });
    tap.begin(200, 'application/json');
    for (const c of jsonChunks) tap.write(c);
    tap.drain();
  }
};
const tapAndPriceRun = (n: number) => {
  for (let i = 0; i < n; i++) {
    const tap = new ResponseTap(8 << 20);
    tap.hint({ format: 'openai-chat' });
    tap.begin(200, 'application/json');
    for (const c of jsonChunks) tap.write(c);
    const observed = tap.observe();
    guard.prices.cost(observed.model!, observed.usage!);
    tap.drain();
  }
};
// Both warmed up first, so that neither pays the other's JIT or first-use costs.
tapOnlyRun(50_000);
tapAndPriceRun(50_000);
const tapOnly = measure(20_000, tapOnlyRun);
const tapAndPrice = measure(20_000, tapAndPriceRun);
console.log(`4 KB JSON response (${json.length} bytes, 3 chunks)`);
console.log(`  tap: hold + parse + read usage   ${fmt(tapOnly)}`);
console.log(`  tap + price                      ${fmt(tapAndPrice)}`);

// 2. SSE streams of 500 content events each.
const N = 500;
const chatEvent = (fields: Record<string, unknown>, withUsageField: boolean) =>
  `data: ${JSON.stringify({
    id: 'chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012',
    object: 'chat.completion.chunk',
    created: 1732640000,
    model: 'gpt-4o-2024-08-06',
    service_tier: 'default',
    system_fingerprint: 'fp_5f1e2d3c4b',
    ...fields,
    ...(withUsageField ? { usage: null } : {}),
  })}\n\n`;
const chat = (includeUsage: boolean) => [
  ...Array.from({ length: N }, () =>
    chatEvent(
      { choices: [{ index: 0, delta: { content: ' hello' }, logprobs: null, finish_reason: null }] },
      includeUsage,
    ),
  ),
  ...(includeUsage
    ? [
        `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', model: 'gpt-4o', choices: [], usage: { prompt_tokens: 10, completion_tokens: N } })}\n\n`,
      ]
    : []),
  'data: [DONE]\n\n',
];
const anthropic = [
  `event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [], usage: { input_tokens: 10, output_tokens: 1 } } })}\n\n`,
  ...Array.from(
    { length: N },
    () =>
      `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: ' hello' } })}\n\n`,
  ),
  `event: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: N } })}\n\n`,
  'event: message_stop\ndata: {"type":"message_stop"}\n\n',
];
const responses = [
  `event: response.created\ndata: ${JSON.stringify({ type: 'response.created', sequence_number: 0, response: { id: 'resp_1', object: 'response', model: 'gpt-4.1', status: 'in_progress', usage: null } })}\n\n`,
  ...Array.from(
    { length: N },
    (_, i) =>
      `event: response.output_text.delta\ndata: ${JSON.stringify({ type: 'response.output_text.delta', sequence_number: i + 1, item_id: 'msg_0123456789', output_index: 0, content_index: 0, delta: ' hello', logprobs: [] })}\n\n`,
  ),
  `event: response.completed\ndata: ${JSON.stringify({ type: 'response.completed', response: { model: 'gpt-4.1', usage: { input_tokens: 10, output_tokens: N } } })}\n\n`,
];
const gemini = Array.from(
  { length: N },
  (_, i) =>
    `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: ' hello hello hello hello' }], role: 'model' }, index: 0, ...(i === N - 1 ? { finishReason: 'STOP' } : {}) }], usageMetadata: { promptTokenCount: 10, candidatesTokenCount: (i + 1) * 4, totalTokenCount: 10 + (i + 1) * 4 }, modelVersion: 'gemini-2.0-flash' })}\r\n\r\n`,
);

function sseCase(label: string, events: string[], format: WireFormat, hide: boolean, split = false) {
  let chunks = events.map((e) => Buffer.from(e));
  if (split) {
    // Every event straddles two chunks (a proxy re-chunking at arbitrary points).
    const all = Buffer.concat(chunks);
    const size = Math.max(2, Math.floor(all.length / events.length));
    chunks = [];
    for (let i = 0; i < all.length; i += size) chunks.push(all.subarray(i, i + size));
  }
  const us = measure(200, (n) => {
    for (let r = 0; r < n; r++) {
      const tap = new ResponseTap(8 << 20);
      tap.hint({ format, hideUsageChunk: hide });
      tap.begin(200, 'text/event-stream');
      for (const c of chunks) tap.write(c);
      tap.drain();
      tap.observe();
    }
  });
  const perChunk = { min: us.min / chunks.length, median: us.median / chunks.length };
  console.log(`  ${label.padEnd(50)} ${fmt(perChunk, 3)} per chunk (${chunks.length} chunks)`);
}

console.log(`SSE, per chunk (a stream of ${N} content events, read to its usage)`);
sseCase('OpenAI chat, client asked for usage', chat(true), 'openai-chat', false);
sseCase('OpenAI chat, usage asked by the guard and hidden', chat(true), 'openai-chat', true);
sseCase('OpenAI chat, hidden, events split across chunks', chat(true), 'openai-chat', true, true);
sseCase('OpenAI Responses', responses, 'openai-responses', false);
sseCase('Anthropic messages', anthropic, 'anthropic-messages', false);
sseCase('Gemini (alt=sse)', gemini, 'gemini', false);
await guard.close();
