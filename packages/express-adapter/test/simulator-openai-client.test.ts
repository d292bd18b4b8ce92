// The simulator against the official `openai` client (a dev dependency of this package, not of core).
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let simulator: Simulator;
let openai: OpenAI;

beforeAll(async () => {
  simulator = await startSimulator();
  openai = new OpenAI({ baseURL: simulator.url, apiKey: 'sk-test', maxRetries: 0 });
});

afterAll(async () => {
  await simulator.close();
});

const messages = [
  { role: 'system' as const, content: 'You are a helpful assistant.' },
  { role: 'user' as const, content: 'Say hello.' },
];

describe('simulator with the official openai client', () => {
  it('answers chat.completions.create with usage', async () => {
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages, max_tokens: 5 });
    expect(completion.object).toBe('chat.completion');
    expect(completion.id).toMatch(/^chatcmpl-/);
    expect(completion.choices[0]?.message).toMatchObject({
      role: 'assistant',
      content: 'hello hello hello hello hello',
    });
    expect(completion.choices[0]?.finish_reason).toBe('length');
    expect(completion.usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 });
  });

  it('reports scripted cached and reasoning tokens where the client types say', async () => {
    simulator.scriptNextUsage({
      prompt_tokens: 2000,
      completion_tokens: 3000,
      cached_tokens: 600,
      reasoning_tokens: 2500,
    });
    const completion = await openai.chat.completions.create({ model: 'o4-mini', messages });
    expect(completion.usage?.prompt_tokens_details?.cached_tokens).toBe(600);
    expect(completion.usage?.completion_tokens_details?.reasoning_tokens).toBe(2500);
    expect(completion.usage?.total_tokens).toBe(5000);
  });

  it('streams with include_usage: deltas, then a choice-less usage chunk', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      max_completion_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let finishReason: string | null | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
      if (chunk.usage) {
        expect(chunk.choices).toEqual([]);
        usage = chunk.usage;
      }
    }
    expect(chunks).toBe(1 + 4 + 1 + 1);
    expect(text).toBe('hello hello hello hello');
    expect(finishReason).toBe('length');
    expect(usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 4, total_tokens: 24 });
  });

  it("accumulates a stream with the client's own helper", async () => {
    const runner = openai.chat.completions.stream({
      model: 'gpt-4o',
      messages,
      stream_options: { include_usage: true },
    });
    const completion = await runner.finalChatCompletion();
    expect(completion.choices[0]?.message.content).toBe(`hello${' hello'.repeat(15)}`);
    expect(completion.usage?.completion_tokens).toBe(16);
  });

  it("surfaces the simulator's 400 as the client's BadRequestError", async () => {
    const error = await openai.chat.completions
      .create({ model: 'gpt-4o', messages, max_tokens: -1 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).status).toBe(400);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).type).toBe('invalid_request_error');
  });
});
