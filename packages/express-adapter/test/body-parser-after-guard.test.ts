// An app that mounts express.json() after the guard (the usual order: `app.use('/v1', spendGuard())`,
// then routes with their own parser) gets the body the guard read, on every request. body-parser 2
// skips a request only once its stream has ended (`complete && !readable`); a guard that took a body
// whole from the stream's buffer and handed on before the stream's 'end' made it read an empty stream
// and answer 400 "request size did not match content length". That happened when the key was looked up
// in storage after the body had arrived (a network store; here a store that answers on a later turn).
import type { AddressInfo } from 'node:net';
import { MemoryStorage } from '@spendguard/core';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spendGuard } from '../src/index.js';

const MASTER = 'sk-master-body-parser';
let server: ReturnType<express.Express['listen']>;
let base: string;

beforeAll(async () => {
  const storage = new MemoryStorage();
  // Every key lookup answers on a later turn of the event loop, as a store across a network does.
  const find = storage.findKeyBySecret.bind(storage);
  storage.findKeyBySecret = async (hash, now) => {
    await new Promise((r) => setImmediate(r));
    return find(hash, now);
  };
  const app = express();
  const guard = spendGuard({
    masterKey: MASTER,
    storage,
    dashboard: { password: 'a-test-dashboard-password' },
  });
  app.use(guard.admin);
  app.use('/v1', guard);
  app.post('/v1/chat/completions', express.json(), (req, res) => {
    res.json({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      model: req.body?.model ?? 'no body',
      choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11 },
    });
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
});

/** A new key with a budget (USD). */
async function newKey(maxBudget: number): Promise<string> {
  const made = await fetch(`${base}/key/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER}` },
    body: JSON.stringify({ max_budget: maxBudget }),
  });
  return ((await made.json()) as { key: string }).key;
}

/** One chat call: `200 <the model the route read from req.body>`, else the status and the answer's start. */
async function call(key: string): Promise<string> {
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 5,
    }),
  });
  const text = await res.text();
  return res.status === 200
    ? `200 ${(JSON.parse(text) as { model: string }).model}`
    : `${res.status} ${text.slice(0, 120)}`;
}

describe('express.json() mounted after the guard', () => {
  it('gets the body the guard read, also when the key is looked up after the body arrived', async () => {
    const statuses: string[] = [];
    // A new key each time: its lookup goes to storage, and answers after the body is in.
    for (let i = 0; i < 10; i++) statuses.push(await call(await newKey(10)));
    expect(statuses).toEqual(Array(10).fill('200 gpt-4o-mini'));
  });

  it('gets it too when one key calls again and again (its key cached, its calls admitted from a lease)', async () => {
    const key = await newKey(1000);
    const statuses: string[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await call(key));
    expect(statuses).toEqual(Array(30).fill('200 gpt-4o-mini'));
  });
});
