import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { AdapterOptions, SpendGuard } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import { spendGuard as expressSpendGuard } from '@spendguard/express';
import { spendGuard as honoSpendGuard, type SpendGuardEnv } from '@spendguard/hono';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import express from 'express';
import { Hono } from 'hono';

export const MASTER = 'sk-dashboard-master-key';

/**
 * A real app for the browser: the management router (and so the dashboard) mounted under `/admin`,
 * to prove the dashboard's URLs are relative, and a guarded chat route proxying the simulator.
 */
interface Framework {
  name: string;
  listen(options: AdapterOptions, providerUrl: string): { server: Server; guard: SpendGuard };
}

async function proxy(providerUrl: string, body: unknown): Promise<Response> {
  const upstream = await fetch(`${providerUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return new Response(upstream.body, {
    status: upstream.status,
    headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' },
  });
}

export const FRAMEWORKS: Framework[] = [
  {
    name: 'express',
    listen(options, providerUrl) {
      const mw = expressSpendGuard(options);
      const app = express();
      app.use('/admin', mw.admin);
      app.use('/v1', mw);
      app.post('/v1/chat/completions', express.json(), async (req, res) => {
        const upstream = await proxy(providerUrl, req.body);
        res
          .status(upstream.status)
          .type('application/json')
          .send(await upstream.text());
      });
      return { server: app.listen(0, '127.0.0.1'), guard: mw.guard };
    },
  },
  {
    name: 'hono',
    listen(options, providerUrl) {
      const mw = honoSpendGuard(options);
      const app = new Hono<SpendGuardEnv>();
      app.route('/admin', mw.admin);
      app.use('/v1/*', mw);
      app.post('/v1/chat/completions', async (c) => proxy(providerUrl, await c.req.json()));
      return {
        server: serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server,
        guard: mw.guard,
      };
    },
  },
];

export interface DashboardApp {
  baseUrl: string;
  guard: SpendGuard;
  /** The SQLite file: another instance (or a restart) opens it with `startDashboardApp(f, { dbPath })`. */
  dbPath: string;
  admin(method: string, path: string, body?: unknown): Promise<any>;
  /** Resolves once every response begun so far is closed and the guard has written their spend. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export async function startDashboardApp(
  framework: Framework,
  o: { dbPath?: string; guardOptions?: Partial<AdapterOptions> } = {},
): Promise<DashboardApp> {
  const simulator: Simulator = await startSimulator();
  const dbPath = o.dbPath ?? join(mkdtempSync(join(tmpdir(), 'spendguard-dashboard-')), 'spend.db');
  const { server, guard } = framework.listen(
    { storage: sqliteStorage({ path: dbPath }), masterKey: MASTER, ...o.guardOptions },
    simulator.url,
  );
  if (!server.listening) await new Promise((r) => server.once('listening', r));
  const open = new Set<Promise<void>>();
  server.on('request', (_req, res) => {
    const closed = new Promise<void>((resolve) => res.once('close', resolve));
    open.add(closed);
    void closed.then(() => open.delete(closed));
  });
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    baseUrl,
    guard,
    dbPath,
    async admin(method, path, body) {
      const res = await fetch(`${baseUrl}/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${MASTER}` },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const json = await res.json();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    },
    async settled() {
      // 'close' comes after the adapter's own 'finish' listener ran: the settlements are in flight.
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
