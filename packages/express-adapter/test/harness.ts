import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type Simulator, type SimulatorOptions, startSimulator } from '@spendguard/core/testing';
import { spendGuard } from '@spendguard/express';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import express5 from 'express';
import express4 from 'express4';

export const MASTER = 'sk-master-test-key';

/** Both Express majors the adapter supports; every behaviour test runs on each. */
export const EXPRESS_VERSIONS = [
  { name: 'express 5', express: express5 as unknown as typeof express5 },
  { name: 'express 4', express: express4 as unknown as typeof express5 },
];

export interface TestApp {
  baseUrl: string;
  dbPath: string;
  simulator: Simulator;
  middleware: ReturnType<typeof spendGuard>;
  close(): Promise<void>;
}

/**
 * A real app on loopback: the guard in front of an OpenAI-compatible route that proxies the
 * simulator, on a fresh SQLite file. `appParsesBody` mounts express.json() before the guard.
 */
export async function startTestApp(
  express: typeof express5,
  options: { appParsesBody?: boolean; now?: () => Date; simulator?: SimulatorOptions } = {},
): Promise<TestApp> {
  const simulator = await startSimulator(options.simulator);
  const dbPath = join(mkdtempSync(join(tmpdir(), 'spendguard-express-')), 'spend.db');
  const middleware = spendGuard({
    storage: sqliteStorage({ path: dbPath }),
    masterKey: MASTER,
    now: options.now,
  });
  const app = express();
  if (options.appParsesBody) app.use(express.json());
  app.use(middleware.admin);
  app.use('/v1', middleware);
  app.post('/v1/chat/completions', express.json(), async (req, res) => {
    const upstream = await fetch(`${simulator.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(req.body),
    });
    res
      .status(upstream.status)
      .setHeader('content-type', upstream.headers.get('content-type') ?? 'application/json');
    const body = Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream);
    res.on('close', () => body.destroy());
    body.pipe(res);
  });
  app.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: [{ id: 'gpt-4o', object: 'model' }] });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    dbPath,
    simulator,
    middleware,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await middleware.guard.close();
      await simulator.close();
    },
  };
}

/** Calls the management API with the master key (or another credential). */
export async function admin(
  app: TestApp,
  method: string,
  path: string,
  body?: unknown,
  auth: string | null = MASTER,
): Promise<{ status: number; body: any }> {
  const res = await fetch(`${app.baseUrl}${path}`, {
    method,
    headers: auth ? { authorization: `Bearer ${auth}` } : {},
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}
