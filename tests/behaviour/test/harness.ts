import { copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { serve } from '@hono/node-server';
import type { AdapterOptions, SpendGuard, SpendStorage } from '@spendguard/core';
import { type Simulator, type SimulatorOptions, startSimulator } from '@spendguard/core/testing';
import { spendGuard as expressSpendGuard } from '@spendguard/express';
import { spendGuard as honoSpendGuard, type SpendGuardEnv } from '@spendguard/hono';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import express5 from 'express';
import express4 from 'express4';
import { Hono } from 'hono';
import { validator } from 'hono/validator';
import OpenAI from 'openai';
import { vi } from 'vitest';
import { addExpressMeteringRoutes, addHonoMeteringRoutes, EXTRA_GUARDED } from './metering-routes.js';

export const MASTER = 'sk-master-test-key';

/** The same app written for one framework: the guard in front of a route that proxies the provider. */
interface Framework {
  name: string;
  /** `appParsesBody`: the app's own JSON body parser runs before the guard. */
  listen(
    guardOptions: AdapterOptions,
    providerUrl: string,
    appParsesBody: boolean,
  ): { server: Server; guard: SpendGuard };
}

const MODELS = { object: 'list', data: [{ id: 'gpt-4o', object: 'model' }] };

function expressApp(express: typeof express5): Framework['listen'] {
  return (guardOptions, providerUrl, appParsesBody) => {
    const middleware = expressSpendGuard(guardOptions);
    const app = express();
    if (appParsesBody) app.use(express.json());
    app.get('/metrics', middleware.metrics);
    app.use(middleware.admin);
    app.use('/v1', middleware);
    for (const path of EXTRA_GUARDED) app.use(path, middleware);
    app.post('/v1/chat/completions', express.json(), async (req, res) => {
      const upstream = await fetch(`${providerUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(req.body),
      });
      res
        .status(upstream.status)
        .setHeader('content-type', upstream.headers.get('content-type') ?? 'application/json');
      const body = Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream);
      res.on('close', () => body.destroy());
      body.on('error', () => res.destroy()); // the provider cut the stream: so does the proxy
      body.pipe(res);
    });
    app.get('/v1/models', (_req, res) => {
      res.json(MODELS);
    });
    addExpressMeteringRoutes(app, express, middleware.guard, providerUrl);
    return { server: app.listen(0, '127.0.0.1'), guard: middleware.guard };
  };
}

const honoApp: Framework['listen'] = (guardOptions, providerUrl, appParsesBody) => {
  const middleware = honoSpendGuard(guardOptions);
  const app = new Hono<SpendGuardEnv>();
  if (appParsesBody) app.use(validator('json', (value) => value)); // Hono's counterpart of express.json()
  app.get('/metrics', middleware.metrics);
  app.route('/', middleware.admin);
  app.use('/v1/*', middleware);
  for (const path of EXTRA_GUARDED) app.use(`${path}/*`, middleware);
  app.post('/v1/chat/completions', async (c) => {
    const upstream = await fetch(`${providerUrl}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(await c.req.json()),
    });
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' },
    });
  });
  // The same bytes and content type as Express's res.json(), so that transcripts compare exactly.
  app.get('/v1/models', (c) => c.json(MODELS, 200, { 'content-type': 'application/json; charset=utf-8' }));
  addHonoMeteringRoutes(app, middleware.guard, providerUrl);
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  return { server, guard: middleware.guard };
};

/** Every adapter the behaviour suite runs on: both Express majors, and Hono on @hono/node-server. */
export const ADAPTERS: Framework[] = [
  { name: 'express 5', listen: expressApp(express5) },
  { name: 'express 4', listen: expressApp(express4 as unknown as typeof express5) },
  { name: 'hono', listen: honoApp },
];

export interface TestApp {
  baseUrl: string;
  dbPath: string;
  simulator: Simulator;
  guard: SpendGuard;
  /**
   * Resolves once every response the server has begun so far is closed (finished, or cut by either
   * side) and the guard has written what those calls spent. The adapters settle a call when its
   * response ends (Express on the response's 'close', which can trail what the client received), so
   * this is what a test waits on after a call, never a sleep.
   */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  appParsesBody?: boolean;
  now?: () => Date;
  simulator?: SimulatorOptions;
  bodyLimitBytes?: number;
  /** More guard options (enforcement, onStorageError, storageTimeoutMs, ...). */
  guardOptions?: Partial<AdapterOptions>;
  /** SQLite's busy timeout: short in the storage-fault tests, so a held lock fails fast. */
  busyTimeoutMs?: number;
  /** Share another app's SQLite file (a second instance of the same service). */
  dbPath?: string;
  /** Another store instead of the SQLite file (e.g. Postgres); `dbPath` is then unused. */
  storage?: SpendStorage;
}

let migratedFile: Promise<string> | undefined;

/**
 * An empty SQLite file with every migration applied, made once per test process by the store itself:
 * each app's fresh file is a copy of it, so that each app does not migrate a file of its own (the
 * SQLite tests migrate new files; here the apps are what is tested).
 */
function migratedSqliteFile(): Promise<string> {
  migratedFile ??= (async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spendguard-behaviour-template-')), 'spend.db');
    const store = sqliteStorage({ path, checkpointIntervalMs: 0 });
    await store.init();
    await store.close();
    // Closed cleanly, the file holds everything: no write-ahead log is left to copy with it.
    if (existsSync(`${path}-wal`)) throw new Error(`${path}-wal is left after close: cannot copy ${path}`);
    return path;
  })();
  return migratedFile;
}

/** A real app on loopback, on a fresh SQLite file, proxying a fresh simulator. */
export async function startTestApp(framework: Framework, options: TestAppOptions = {}): Promise<TestApp> {
  const simulator = await startSimulator(options.simulator);
  let dbPath = options.dbPath;
  if (dbPath === undefined) {
    dbPath = join(mkdtempSync(join(tmpdir(), 'spendguard-behaviour-')), 'spend.db');
    if (options.storage === undefined) copyFileSync(await migratedSqliteFile(), dbPath);
  }
  const { server, guard } = framework.listen(
    {
      storage: options.storage ?? sqliteStorage({ path: dbPath, busyTimeoutMs: options.busyTimeoutMs }),
      masterKey: MASTER,
      now: options.now,
      bodyLimitBytes: options.bodyLimitBytes,
      ...options.guardOptions,
    },
    simulator.url,
    options.appParsesBody ?? false,
  );
  if (!server.listening) await new Promise((r) => server.once('listening', r));
  const open = new Set<Promise<void>>();
  server.on('request', (_req, res) => {
    const closed = new Promise<void>((resolve) => res.once('close', resolve));
    open.add(closed);
    void closed.then(() => open.delete(closed));
  });
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    dbPath,
    simulator,
    guard,
    async settled() {
      // Every 'close' listener (the adapter's too) has run before this goes on: the settlements are in flight.
      while (open.size > 0) await Promise.all([...open]);
      await guard.flush();
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await guard.close();
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

/** A new key with that budget (USD), and the official OpenAI client calling the app's /v1 with it. */
export async function keyWithClient(
  app: TestApp,
  maxBudget: number,
): Promise<{ key: string; client: OpenAI }> {
  const res = await admin(app, 'POST', '/key/generate', { max_budget: maxBudget });
  if (res.status !== 200)
    throw new Error(`/key/generate answered ${res.status}: ${JSON.stringify(res.body)}`);
  const key = res.body.key as string;
  return { key, client: new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 }) };
}

/** A key's spend (USD) as /key/info reports it, once every settlement so far is written. */
export async function keySpend(app: TestApp, key: string): Promise<number> {
  await app.settled();
  return (await admin(app, 'GET', `/key/info?key=${key}`)).body.info.spend as number;
}

/**
 * Asks again until the answer is no longer a 200: a change travelling to another instance through the
 * store's change feed (polled every 250 ms on SQLite). No time is asserted; the wait ends at 20 s.
 */
export async function untilRefused<T extends { status: number }>(attempt: () => Promise<T>): Promise<T> {
  return vi.waitFor(
    async () => {
      const answer = await attempt();
      if (answer.status === 200) throw new Error('still served');
      return answer;
    },
    { timeout: 20_000, interval: 25 },
  );
}
