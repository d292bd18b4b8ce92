// A guarded app in a process of its own, for the memory test (unauthenticated-bodies.test.ts): the
// test runner's heap must not blur the server's resident memory. Started with `fork()`; talks over IPC.
import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { spendGuard as expressSpendGuard } from '@spendguard/express';
import { spendGuard as honoSpendGuard } from '@spendguard/hono';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import express from 'express';
import { Hono } from 'hono';

const framework = process.argv[2];
const options = {
  storage: sqliteStorage({ path: join(mkdtempSync(join(tmpdir(), 'spendguard-memory-')), 'spend.db') }),
  masterKey: 'sk-memory-test-master',
  dashboard: { password: 'memory-test-dashboard' },
};

let server: Server;
if (framework === 'express') {
  const mw = expressSpendGuard(options);
  const app = express();
  app.use(mw.admin);
  app.use('/v1', mw);
  app.post('/v1/chat/completions', (_req, res) => {
    res.json({ never: 'reached without a key' });
  });
  server = app.listen(0, '127.0.0.1');
} else {
  const mw = honoSpendGuard(options);
  const app = new Hono();
  app.route('/', mw.admin);
  app.use('/v1/*', mw);
  app.post('/v1/chat/completions', (c) => c.json({ never: 'reached without a key' }));
  server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
}

// What the server answered, counted as each response finishes (a client may lose an answer it was
// sent: Hono closes a connection whose unread body it cannot drain quickly, and the client's write
// then fails before it has read the answer).
let answered: Record<number, number> = {};
server.on('request', (_req, res) => {
  res.once('finish', () => {
    answered[res.statusCode] = (answered[res.statusCode] ?? 0) + 1;
  });
});

let peak = 0;
let sampler: NodeJS.Timeout | undefined;
const rss = () => process.memoryUsage.rss();
const settle = () => {
  for (let i = 0; i < 3; i++) globalThis.gc?.();
  return rss();
};

process.on('message', (message: string) => {
  if (message === 'start') {
    // Baseline after start-up and a full collection; the peak is sampled every 2 ms from here on,
    // and checked against the kernel's own high-water mark (maxRSS) at the end.
    const baseline = settle();
    answered = {};
    const maxRssBefore = process.resourceUsage().maxRSS * 1024;
    peak = baseline;
    sampler = setInterval(() => {
      peak = Math.max(peak, rss());
    }, 2);
    process.send!({ baseline, maxRssBefore });
  } else if (message === 'stop') {
    clearInterval(sampler);
    peak = Math.max(peak, rss());
    const maxRssAfter = process.resourceUsage().maxRSS * 1024;
    process.send!({ peak, maxRssAfter, after: settle(), answered });
  } else if (message === 'exit') {
    server.close();
    process.exit(0);
  }
});

const listening = () => process.send!({ port: (server.address() as AddressInfo).port });
if (server.listening) listening();
else server.once('listening', listening);
