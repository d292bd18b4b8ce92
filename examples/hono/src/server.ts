/**
 * The Hono demo server: the same demo as examples/express, with the same environment variables
 * (listed in examples/express/src/demo-environment.ts).
 */
import { serve } from '@hono/node-server';
import { demoEnvironment } from '../../express/src/demo-environment.js';
import { createExampleApp } from './app.js';

const env = await demoEnvironment();
const { app, guard } = createExampleApp({
  providerBaseUrl: env.providerBaseUrl,
  masterKey: env.masterKey,
  storage: env.storage,
  guardOptions: env.guardOptions,
});
await env.connect(guard);

const server = serve({ fetch: app.fetch, port: env.port, hostname: env.host }, (info) =>
  env.announce(info.port),
);
server.once('error', (error: NodeJS.ErrnoException) => env.listenFailed(error));

// Stop taking requests, write the settlements still pending (guard.close() flushes them), then exit.
async function shutdown() {
  server.close();
  await guard?.close();
  await env.simulator?.close();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
