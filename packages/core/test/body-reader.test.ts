// The body reader on real Node requests (an HTTP server on loopback): a body that has arrived whole
// is taken from the request's buffer at once, one still arriving is read as it comes, and both
// answer the same text and hold the same limits.
import { createServer, type IncomingMessage, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BodyReader } from '../src/body-reader.js';
import { SpendGuardError } from '../src/errors.js';

type Outcome = { text: string; bytes: number; complete: boolean } | { error: string };

let read: (req: IncomingMessage) => Promise<Outcome>;
let port = 0;
const server = createServer((req, res) => {
  void read(req).then((out) => res.end(JSON.stringify(out)));
});

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends `parts` (written one after another, the second only once the server holds the first). */
function send(parts: string[], headers: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve(JSON.parse(text) as Outcome));
    });
    req.on('error', reject);
    const [first, ...rest] = parts;
    if (rest.length === 0) return void req.end(first);
    req.write(first);
    heldFirst = () => req.end(rest.join(''));
  });
}
let heldFirst: (() => void) | null = null;

/** Reads the request once its body arrived whole (`complete`), as the guard does after its own awaits. */
function readWhenComplete(limit: number, inFlight = 1 << 20) {
  const reader = new BodyReader(limit, inFlight);
  return async (req: IncomingMessage): Promise<Outcome> => {
    while (!req.complete) await new Promise((r) => setImmediate(r));
    return attempt(reader, req);
  };
}

/** Reads the request while its body is still arriving (its second part sent once reading started). */
function readWhileArriving(limit: number) {
  const reader = new BodyReader(limit, 1 << 20);
  return async (req: IncomingMessage): Promise<Outcome> => {
    const out = attempt(reader, req);
    heldFirst?.();
    heldFirst = null;
    return out;
  };
}

async function attempt(reader: BodyReader, req: IncomingMessage): Promise<Outcome> {
  const complete = req.complete;
  try {
    const { text, bytes } = await reader.read(req, req.headers['content-length']);
    return { text, bytes, complete };
  } catch (error) {
    return { error: error instanceof SpendGuardError ? error.code : String(error) };
  }
}

describe('BodyReader on a Node request', () => {
  const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"héllo"}]}`;

  it('takes a body that arrived whole from the buffer: the same text and byte count', async () => {
    read = readWhenComplete(1024);
    // 71 bytes: 70 characters, "é" takes two.
    expect(await send([body])).toEqual({ text: body, bytes: 71, complete: true });
  });

  it('refuses a body that arrived whole past the limit with 413, without a declared length', async () => {
    read = readWhenComplete(70);
    // Chunked (no Content-Length): only the bytes themselves can show it is too large.
    expect(await send([body], { 'transfer-encoding': 'chunked' })).toEqual({ error: 'PAYLOAD_TOO_LARGE' });
    read = readWhenComplete(71);
    expect(await send([body], { 'transfer-encoding': 'chunked' })).toEqual({
      text: body,
      bytes: 71,
      complete: true,
    });
  });

  it('counts a body that arrived whole against the bytes in flight (503)', async () => {
    read = readWhenComplete(1024, 70);
    expect(await send([body], { 'transfer-encoding': 'chunked' })).toEqual({ error: 'OVERLOADED' });
  });

  it('reads a body still arriving as it comes, to the same text and limits', async () => {
    read = readWhileArriving(1024);
    expect(await send([body.slice(0, 20), body.slice(20)], { 'transfer-encoding': 'chunked' })).toEqual({
      text: body,
      bytes: 71,
      complete: false,
    });
    read = readWhileArriving(70);
    expect(await send([body.slice(0, 20), body.slice(20)], { 'transfer-encoding': 'chunked' })).toEqual({
      error: 'PAYLOAD_TOO_LARGE',
    });
  });
});
